"""calibration.py: folder / npz calibration sets, selection, skipping, hashing; ImageFolder eval sets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coatnet_deploy.calibration import (
    MIN_CALIBRATION_IMAGES,
    CalibrationSet,
    EvalSet,
    default_calibration_dir,
    read_labels,
)
from coatnet_deploy.errors import UserError
from coatnet_deploy.preprocess import PreprocessConfig, preprocess_image

ROOT = Path(__file__).resolve().parents[1]
CFG = PreprocessConfig.for_size(16, crop_pct=0.9)


def _write_images(folder: Path, n: int, start: int = 0, ext: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        p = folder / f"img_{i:03d}.{ext}"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


# ------------------------------------------------------------------ folders


def test_select_is_seeded_capped_and_streams(tmp_path):
    _write_images(tmp_path, 10)
    a = CalibrationSet(tmp_path, CFG).select(8, seed=3)
    b = CalibrationSet(tmp_path, CFG).select(8, seed=3)
    c = CalibrationSet(tmp_path, CFG).select(8, seed=4)
    assert a.files == b.files and a.sha256() == b.sha256()
    assert a.files != c.files
    assert len(CalibrationSet(tmp_path, CFG).select(500)) == 10          # capped by what is there

    batches = list(a.batches(3))
    assert [x.shape[0] for x in batches] == [3, 3, 2]
    assert all(x.dtype == np.float32 and x.shape[1:] == (3, 16, 16) for x in batches)
    np.testing.assert_array_equal(batches[0][1], preprocess_image(a.files[1], CFG))
    assert all(x.shape == (1, 3, 16, 16) for x in a.iter_arrays())


def test_recursive_sorted_and_non_images_ignored(tmp_path):
    _write_images(tmp_path / "b", 3, 0)
    _write_images(tmp_path / "a", 3, 3, ext="jpg")
    _write_images(tmp_path, 3, 6)
    (tmp_path / "README.md").write_text("not an image, not an error")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    s = CalibrationSet(tmp_path, CFG)
    assert s.available == 9
    rel = [p.relative_to(tmp_path).as_posix() for p in s._files]
    assert rel == sorted(rel) and rel[0].startswith("a/")
    s.select(None)
    assert len(s) == 9 and s.skipped == []


def test_unreadable_files_are_listed_and_skipped(tmp_path):
    _write_images(tmp_path, 9)
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    good = (tmp_path / "img_000.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    s = CalibrationSet(tmp_path, CFG).select(None, seed=0)
    assert len(s) == 9
    skipped = {Path(p).name: why for p, why in s.skipped}
    assert set(skipped) == {"zero.jpg", "text.png", "cut.png"}
    assert "empty" in skipped["zero.jpg"]
    assert all(Path(p).name.startswith("img_") for p in s.files)
    assert [d["path"] for d in s.describe()["skipped"]] == [p for p, _ in s.skipped]


def test_too_few_readable_images(tmp_path):
    _write_images(tmp_path, 5)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(UserError) as e:
        CalibrationSet(tmp_path, CFG).select(None)
    msg = str(e.value)
    assert f"has only 5 readable images, need at least {MIN_CALIBRATION_IMAGES}" in msg
    assert "--calibration" in msg and "1 unreadable skipped" in msg
    # The minimum is adjustable for callers that know better (tiny smoke tests).
    assert len(CalibrationSet(tmp_path, CFG).select(None, min_images=4)) == 5
    with pytest.raises(UserError, match="at least"):
        CalibrationSet(tmp_path, CFG).select(2)


def test_no_readable_or_no_images_or_missing(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="only 0 readable"):
        CalibrationSet(tmp_path, CFG).select(None)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no image files"):
        CalibrationSet(empty, CFG)
    with pytest.raises(UserError, match="not found"):
        CalibrationSet(tmp_path / "nope", CFG)
    with pytest.raises(UserError, match="neither a folder nor an .npz"):
        CalibrationSet(tmp_path / "a.jpg", CFG)


def test_hash_tracks_names_and_bytes(tmp_path):
    _write_images(tmp_path, 8)
    h1 = CalibrationSet(tmp_path, CFG).select(None).sha256()
    assert re.fullmatch(r"[0-9a-f]{64}", h1)
    assert CalibrationSet(tmp_path, CFG).select(None).sha256() == h1
    p = tmp_path / "img_003.png"
    Image.new("RGB", (20, 24), (9, 9, 9)).save(p)
    h2 = CalibrationSet(tmp_path, CFG).select(None).sha256()
    assert h2 != h1
    p.rename(tmp_path / "img_003b.png")
    assert CalibrationSet(tmp_path, CFG).select(None).sha256() not in (h1, h2)


def test_data_reader_rewinds(tmp_path):
    _write_images(tmp_path, 8)
    r = CalibrationSet(tmp_path, CFG).select(8).data_reader("input", batch_size=4)
    first = [r.get_next() for _ in range(3)]
    assert first[2] is None and first[0]["input"].shape == (4, 3, 16, 16)
    r.rewind()
    np.testing.assert_array_equal(r.get_next()["input"], first[0]["input"])
    assert len(r) == 2


# ------------------------------------------------------------------ npz


def test_npz_images_key_select_and_hash(tmp_path):
    arr = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
    p = tmp_path / "calib.npz"
    np.savez(p, other=np.zeros(3), images=arr)
    s = CalibrationSet(p, CFG).select(10, seed=1)
    assert s.kind == "npz" and len(s) == 10
    got = np.concatenate(list(s.batches(4)))
    assert got.shape == (10, 3, 16, 16)
    idx = np.random.default_rng(1).permutation(12)[:10]
    np.testing.assert_array_equal(got, arr[idx])
    assert CalibrationSet(p, CFG).select(10, seed=1).sha256() == s.sha256()
    assert CalibrationSet(p, CFG).select(10, seed=2).sha256() != s.sha256()
    # Without an 'images' key the first array is used.
    q = tmp_path / "first.npz"
    np.savez(q, batch=arr)
    assert len(CalibrationSet(q, CFG).select(None)) == 12


@pytest.mark.parametrize("arr,match", [
    (np.zeros((12, 3, 32, 32), np.float32), "has shape"),
    (np.zeros((12, 16, 16, 3), np.float32), "has shape"),
    (np.zeros((12, 3, 16, 16), np.uint8), "dtype"),
    (np.full((12, 3, 16, 16), np.nan, np.float32), "NaN"),
    (np.zeros((4, 3, 16, 16), np.float32), "has only 4 samples"),
])
def test_npz_validation(tmp_path, arr, match):
    p = tmp_path / "bad.npz"
    np.savez(p, images=arr)
    with pytest.raises(UserError, match=match):
        CalibrationSet(p, CFG).select(None)


def test_npz_not_a_zip(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UserError, match="not a valid .npz"):
        CalibrationSet(p, CFG)


# ------------------------------------------------------------------ the shipped folder


def test_default_calibration_dir(tmp_path, monkeypatch):
    # The shipped photos (here: the checkout's folder; tests/test_packaging.py checks the wheel's),
    # whatever folder the command runs in: a ./calibration there is not picked up by accident.
    (tmp_path / "calibration").mkdir()
    monkeypatch.chdir(tmp_path)
    assert default_calibration_dir() == ROOT / "calibration"


def test_shipped_calibration_folder_is_complete_and_documented():
    folder = ROOT / "calibration"
    s = CalibrationSet(folder, CFG).select(None)
    assert len(s) >= 24 and s.skipped == []
    sources = (folder / "SOURCES.md").read_text()
    for p in s.files:
        assert p.name in sources, f"{p.name} missing from calibration/SOURCES.md"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1.5e6


# ------------------------------------------------------------------ eval sets


def _eval_tree(root: Path) -> None:
    _write_images(root / "dog", 3, 0)
    _write_images(root / "cat", 2, 10)


def test_eval_set_sorted_classes_and_labels(tmp_path):
    _eval_tree(tmp_path)
    ev = EvalSet(tmp_path, CFG)
    assert ev.classes == ["cat", "dog"] and len(ev) == 5
    xs, ys = zip(*ev.batches(2))
    assert [x.shape[0] for x in xs] == [2, 2, 1]
    assert np.concatenate(ys).tolist() == [0, 0, 1, 1, 1]

    labels = tmp_path.parent / f"{tmp_path.name}_labels.txt"
    labels.write_text("bird\ndog\n\ncat\n")
    ev = EvalSet(tmp_path, CFG, labels=labels)
    assert ev.classes == ["bird", "dog", "cat"] and ev.num_classes == 3
    assert np.concatenate([y for _, y in ev.batches(8)]).tolist() == [2, 2, 1, 1, 1]
    assert EvalSet(tmp_path, CFG, labels=["dog", "cat"]).classes == ["dog", "cat"]


def test_eval_set_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="is empty"):
        EvalSet(empty, CFG)
    flat = tmp_path / "flat"
    _write_images(flat, 2)
    with pytest.raises(UserError, match="no class subfolders"):
        EvalSet(flat, CFG)
    tree = tmp_path / "tree"
    _eval_tree(tree)
    labels = tmp_path / "labels.txt"
    labels.write_text("n01440764\nn01443537\n")
    with pytest.raises(UserError, match="not in the labels"):
        EvalSet(tree, CFG, labels=labels)
    labels.write_text("cat\ncat\ndog\n")
    with pytest.raises(UserError, match="repeats"):
        read_labels(labels)
    with pytest.raises(UserError, match="not found"):
        EvalSet(tmp_path / "missing", CFG)
    (tmp_path / "nothing" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        EvalSet(tmp_path / "nothing", CFG)


def test_eval_set_skips_unreadable(tmp_path):
    _eval_tree(tmp_path)
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ev = EvalSet(tmp_path, CFG)
    ys = np.concatenate([y for _, y in ev.batches(4)])
    assert len(ys) == 5 and [Path(p).name for p, _ in ev.skipped] == ["broken.jpg"]
