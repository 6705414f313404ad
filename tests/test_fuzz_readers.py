"""Property tests over the readers of files that come from outside: a bundle's manifest.json and
manifest.sha256, its golden.npz, a calibration .npz, labels files and a timm save_for_hf config.json.
Whatever the bytes, each reader either succeeds or raises one UserError whose message is one non-empty
line; never another exception, never a traceback (through the CLI: exit 1, one stderr line).

Mutated manifests get a matching manifest.sha256 (and mutated golden files a matching manifest entry),
so the fuzzing reaches the code behind the checksums instead of stopping at them: that is what a
damaged file whose checksum was regenerated, or a hand-edited bundle, looks like.

Default run: 40 examples per property (derandomized, so CI is reproducible). For a long hunt:
  FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q tests/test_fuzz_readers.py   (random seeds)
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bundle_helpers import PY, REPO, tiny_bundle
from coatnet_deploy.bundle import MANIFEST, MANIFEST_SUM, sha256_file, verify_bundle, write_manifest_sum
from coatnet_deploy.errors import UserError

_LONG = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 40, deadline=None, derandomize=not _LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SHORT = settings(FUZZ, max_examples=_LONG or 15)


def _one_line(e: UserError) -> None:
    msg = str(e)
    assert msg.strip() and "\n" not in msg and "\r" not in msg, repr(msg)


def _ok_or_user_error(fn, *args, **kwargs):
    """Run a reader: its result, or None after a one-line UserError; anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        _one_line(e)
        return None


# -- JSON values, as hostile as JSON gets -----------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "onnxruntime", "openvino", "tensorrt", "int8", "fp32", "model.onnx", "../x", "/etc/passwd",
                     "golden.npz", "all", "gated", "cosine_min", "bicubic", "center", "\x00", "\n", "é", "0" * 64]),
    st.sampled_from([0, 1, -1, 2, 3, 10, 64, 2**31, 2**63, 1e308, -0.0, 0.5]),
)
json_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=10)


def _paths(obj, prefix=()):
    """Every (path to a value) in a JSON document, the root included."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


_OPS = ["replace", "delete", "add", "neighbour"]
_NEIGHBOURS_NUM = [lambda v: 0, lambda v: -1, lambda v: -v, lambda v: v + 1, lambda v: v * 1000, float, lambda v: float("nan"),
                   lambda v: float("inf"), str, lambda v: [v], lambda v: 2**64]
_NEIGHBOURS_STR = [lambda v: "", str.upper, lambda v: v[:-1], lambda v: v + "x", lambda v: v * 3, lambda v: "../" + v,
                   lambda v: 0, lambda v: None]

#: 1-4 edits of a JSON document: (where: an index into its paths, or a path of keys; what; a value; a choice)
edits = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_OPS), json_values, st.integers(0, 10**6)),
                 min_size=1, max_size=4)


def apply_edits(doc, changes):
    """``doc`` (copied) after the edits: a value replaced by any JSON value or by a same-kind neighbour
    (0, -v, v*1000, NaN, "", "../v", ...), a key deleted, or a key added."""
    doc = copy.deepcopy(doc)
    for where, op, value, choice in changes:
        if isinstance(where, int):
            paths = list(_paths(doc))
            path = paths[where % len(paths)]
        else:
            path = tuple(where)
        if not path:
            if op == "replace":
                doc = value
            continue
        parent = doc
        try:
            for k in path[:-1]:
                parent = parent[k]
            old = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "add" and isinstance(old, dict):
            old[str(value)[:8]] = value
        elif op == "neighbour" and isinstance(old, (int, float)) and not isinstance(old, bool):
            parent[key] = _NEIGHBOURS_NUM[choice % len(_NEIGHBOURS_NUM)](old)
        elif op == "neighbour" and isinstance(old, str):
            parent[key] = _NEIGHBOURS_STR[choice % len(_NEIGHBOURS_STR)](old)
        else:
            parent[key] = value
    return doc


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# -- a scratch copy of the shared tiny ORT bundle, restored before every example --------------------

_scratch: dict[str, Path] = {}


def _scratch_bundle() -> Path:
    if "root" not in _scratch:
        root = Path(tempfile.mkdtemp(prefix="fuzz-readers-"))
        shutil.copytree(tiny_bundle(), root / "orig")
        _scratch["root"], _scratch["orig"] = root, root / "orig"
    work = _scratch["root"] / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(_scratch["orig"], work)
    return work


def _manifest(b: Path) -> dict:
    return json.loads((b / MANIFEST).read_text(encoding="utf-8"))


def _write_manifest(b: Path, data: bytes, fix_sum: bool = True) -> None:
    (b / MANIFEST).write_bytes(data)
    if fix_sum:
        write_manifest_sum(b)


def _replace_artifact(b: Path, name: str, data: bytes) -> None:
    """Write a bundle file and make the manifest (and its checksum) agree with it."""
    (b / name).write_bytes(data)
    m = _manifest(b)
    for e in m["artifacts"]:
        if e["path"] == name:
            e["sha256"], e["bytes"] = sha256_file(b / name), len(data)
    _write_manifest(b, json.dumps(m, indent=2).encode())


def _load_and_run(b: Path) -> None:
    """What the device runtime does with a bundle: verify, load, classify one input, self-test."""
    from coatnet_deploy.parity import check_bundle
    from coatnet_deploy.runtime import Classifier

    def run():
        with Classifier.load(b, threads=1) as c:
            x = np.zeros((1, 3, c.input_size, c.input_size), np.float32)
            preds = c.classify_batch(x, topk=3)
            assert len(preds) == 1 and preds[0]

    _ok_or_user_error(run)
    _ok_or_user_error(check_bundle, b, threads=1)


# -- manifest.json ----------------------------------------------------------------------------------

@SHORT
@given(st.binary(max_size=512), st.booleans())
def test_manifest_random_bytes(data, fix_sum):
    b = _scratch_bundle()
    _write_manifest(b, data, fix_sum)
    _ok_or_user_error(verify_bundle, b)


# Regressions, each a failure this test found (AttributeError / TypeError / unhashable list before the fix):
@example([(("artifacts", 0), "replace", None, 0)])  # an artifact entry that is not an object
@example([(("artifacts", 0, "path"), "replace", None, 0)])  # an artifact without a path
@example([(("engine", "saved_optimization"), "replace", [], 0)])  # a list where a name belongs
@example([(("input", "batch"), "replace", [], 0)])
@example([(("preprocess", "crop"), "replace", "", 0)])  # parity read it before any check
@example([(("preprocess", "crop"), "delete", None, 0)])
# crop / crop_pct overflowed math.floor (OverflowError), found by fuzz_manifest in the C++ app's twin
@example([(("preprocess", "resize"), "delete", None, 0), (("preprocess", "crop_pct"), "replace", 5e-324, 0)])
@example([(("preprocess", "resize"), "replace", 2 ** 40, 0)])
@FUZZ
@given(edits)
def test_manifest_mutated(changes):
    b = _scratch_bundle()
    m = apply_edits(_manifest(b), changes)
    _write_manifest(b, json.dumps(m, indent=2, allow_nan=True).encode())
    _load_and_run(b)


@example([(("engine", "inference_precision_hint"), "replace", ["f32"], 0)])
@example([(("engine", "static_batch"), "replace", "no", 0)])
@SHORT
@given(edits)
def test_openvino_manifest_mutated(changes):
    """The same on an OpenVINO bundle: its runner reads other engine keys."""
    from bundle_helpers import has_openvino, openvino_bundle_from

    if not has_openvino():
        pytest.skip("openvino is not installed")
    work = Path(tempfile.gettempdir()) / f"fuzz-readers-ov-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(openvino_bundle_from(), work)
    m = apply_edits(_manifest(work), changes)
    _write_manifest(work, json.dumps(m, indent=2, allow_nan=True).encode())
    try:
        _load_and_run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@example("deep", 0, 0)  # RecursionError from json's decoder before the fix
@SHORT
@given(st.sampled_from(["truncate", "flip", "latin1", "deep", "bom"]), st.integers(0, 10**6), st.integers(0, 7))
def test_manifest_damaged_text(how, pos, bit):
    b = _scratch_bundle()
    raw = bytearray((b / MANIFEST).read_bytes())
    if how == "truncate":
        raw = raw[: pos % len(raw)]
    elif how == "flip":
        raw[pos % len(raw)] ^= 1 << bit
    elif how == "latin1":
        raw[pos % len(raw)] = 0xE9  # a lone latin-1 byte: not UTF-8
    elif how == "deep":
        raw = bytearray(('{"schema_version": 2, "model": ' + _deep(10**5) + "}").encode())
    else:
        raw = bytearray(b"\xef\xbb\xbf") + raw
    _write_manifest(b, bytes(raw))
    _load_and_run(b)


# -- manifest.sha256 --------------------------------------------------------------------------------

@st.composite
def sum_files(draw):
    good = hashlib.sha256((_scratch["orig"] / MANIFEST).read_bytes()).hexdigest()
    kind = draw(st.sampled_from(["bytes", "good", "variant"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "good":
        return f"{good}  {MANIFEST}\n".encode()
    hexpart = draw(st.sampled_from([good, good.upper(), good[:-1], good + "0", good[::-1], "z" * 64, ""]))
    sep = draw(st.sampled_from(["  ", " ", " *", "\t", "", "\n"]))
    name = draw(st.sampled_from([MANIFEST, MANIFEST.upper(), "", "other", MANIFEST + " extra", "é"]))
    end = draw(st.sampled_from(["\n", "", "\r\n", "\n\n", "\x00"]))
    return (hexpart + sep + name + end).encode("utf-8")


@SHORT
@given(st.data())
def test_manifest_sum_any_bytes(data):
    b = _scratch_bundle()
    content = data.draw(sum_files())
    (b / MANIFEST_SUM).write_bytes(content)
    _ok_or_user_error(verify_bundle, b)


# -- .npz files: golden.npz in a bundle, calibration sets -------------------------------------------

_DTYPES = ["<f4", "<f8", "<f2", ">f4", "|i1", "<i8", "|u1", "|b1", "<c8", "<U3", "|S2", "<m8[s]", "<M8[D]", "|V4"]


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
    n = int(np.prod(shape))
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    a = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if dtype.kind == "f" and a.size and draw(st.booleans()):
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    return a


def _npz_bytes(named: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **named)
    return buf.getvalue()


def _huge_npy(shape: tuple, descr: str = "<f4") -> bytes:
    """An .npy whose header declares ``shape`` but that holds 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\x00" * 16


def _zip_of(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


#: How to make an .npz reader's input (see npz_bytes): random bytes, a damaged copy of a valid file, a
#: valid zip of wrong arrays, arrays whose header declares a huge shape, or members that are not .npy.
npz_recipes = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=600)),
    st.tuples(st.just("truncated"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flipped"), st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=6)),
    st.tuples(st.just("arrays"), st.dictionaries(st.sampled_from(["inputs", "reference_logits", "names", "images", "arr_0", "x"]),
                                                 arrays(), max_size=4)),
    st.tuples(st.just("huge"), st.sampled_from([(2**40,), (2**20, 3, 64, 64), (2**62, 2), (-1, 3), (10**6, 3, 64, 64)]),
              st.sampled_from(["<f4", "<f8", "|u1", "|O"])),
    st.tuples(st.just("not-npy"), st.binary(max_size=100)),
)


def npz_bytes(recipe, valid: bytes, keys: list) -> bytes:
    kind, arg = recipe[0], recipe[1]
    if kind == "bytes":
        return arg
    if kind == "truncated":
        return valid[: int(len(valid) * arg)]
    if kind == "flipped":
        buf = bytearray(valid)
        for pos, val in arg:
            buf[pos % len(buf)] = val
        return bytes(buf)
    if kind == "arrays":
        return _npz_bytes(arg)
    if kind == "huge":
        return _zip_of({f"{k}.npy": _huge_npy(arg, recipe[2]) for k in keys})
    return _zip_of({f"{k}.npy": arg for k in keys})


def _golden_bytes() -> bytes:
    return (_scratch["orig"] / "golden.npz").read_bytes()


# Regressions: each reached the runtime (ORT InvalidArgument, ValueError) or NumPy (AttributeError on the
# bytes NpzFile returns for a member that is not .npy) before golden.npz was checked against the manifest.
@example(("arrays", {"inputs": np.array([""], dtype="<U3")}))
@example(("arrays", {"inputs": np.array([0], dtype=np.int8)}))
@example(("arrays", {"inputs": np.zeros(0, np.float32)}))
@example(("arrays", {"inputs": np.zeros((1, 3, 64, 64), np.float32)}))  # no reference_logits
@example(("not-npy", b""))
@example(("huge", (2**40,), "<f4"))
@example(("truncated", 0.5))  # zipfile.BadZipFile, which load_golden did not catch
@FUZZ
@given(npz_recipes)
def test_golden_npz_any_bytes(recipe):
    b = _scratch_bundle()
    content = npz_bytes(recipe, _golden_bytes(), ["inputs", "reference_logits", "names"])
    _replace_artifact(b, "golden.npz", content)
    from coatnet_deploy.parity import check_bundle

    _ok_or_user_error(check_bundle, b, threads=1)


def _calib_cfg():
    from coatnet_deploy.preprocess import PreprocessConfig

    return PreprocessConfig(resize=18, crop=16, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                            crop_pct=16 / 18)


def _calib_valid() -> bytes:
    return _npz_bytes({"images": np.random.default_rng(0).standard_normal((9, 3, 16, 16)).astype(np.float32)})


@example(("not-npy", b""))  # AttributeError: 'bytes' object has no attribute 'dtype', before the fix
@example(("huge", (2**62, 2), "<f4"))
@FUZZ
@given(npz_recipes)
def test_calibration_npz_any_bytes(recipe):
    from coatnet_deploy.calibration import CalibrationSet

    content = npz_bytes(recipe, _calib_valid(), ["images"])
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "calib.npz"
        p.write_bytes(content)

        def read():
            cs = CalibrationSet(p, _calib_cfg()).select(None)
            for batch in cs.batches(4):
                assert batch.dtype == np.float32 and batch.shape[1:] == (3, 16, 16) and np.isfinite(batch).all()
            cs.sha256()

        _ok_or_user_error(read)


# -- labels files -----------------------------------------------------------------------------------

_label_text = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(["cat", "dog", "cat", " ", "\t", "\u3000", "\u2028", "\x85", "\r", "\x00", "é", "\x1c",
                              "\ufeff", "a,b", "'", '"', "{}", "\\"]), max_size=12)
    .map(lambda xs: "\n".join(xs).encode("utf-8")),
    st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


@SHORT
@given(_label_text, st.integers(1, 4))
@example(b"\xff\xfe", 2)
def test_labels_files_any_bytes(data, n):
    from coatnet_deploy.calibration import read_labels as eval_labels
    from coatnet_deploy.models.source import read_labels as export_labels

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "labels.txt"
        p.write_bytes(data)
        names = _ok_or_user_error(export_labels, p, n)
        assert names is None or (len(names) == n and all(x and x == x.strip() and "\n" not in x for x in names))
        names = _ok_or_user_error(eval_labels, p)
        assert names is None or (names and len(set(names)) == len(names))


# -- timm save_for_hf config.json -------------------------------------------------------------------

def _hf_folder() -> tuple[Path, dict]:
    """A copy of the save_for_hf folder that timm itself wrote (tests/fixtures/timm_models; weights
    linked) and its config.json, parsed: each example edits the copy."""
    from timm_fixtures import unpacked

    src = unpacked()["folder"]
    work = src.parent / "fuzz-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "model.safetensors").symlink_to(src / "model.safetensors")
    return work, json.loads((src / "config.json").read_text(encoding="utf-8"))


def _resolve(folder: Path):
    from coatnet_deploy.models.source import resolve_model_source

    src = resolve_model_source(weights=str(folder))
    assert src.num_classes >= 1 and src.image_size >= 64 and (src.labels is None or len(src.labels) == src.num_classes)
    return src


@example([(("pretrained_cfg", "interpolation"), "replace", [None], 0)])  # unhashable list, before the fix
@example([(("pretrained_cfg", "crop_mode"), "replace", {}, 0)])
@FUZZ
@given(edits)
def test_hf_config_json_mutated(changes):
    folder, cfg = _hf_folder()
    m = apply_edits(cfg, changes)
    (folder / "config.json").write_text(json.dumps(m, allow_nan=True), encoding="utf-8")
    _ok_or_user_error(_resolve, folder)


@example(_deep(10**5).encode())  # RecursionError from json's decoder, before the fix
@SHORT
@given(st.one_of(st.binary(max_size=300), st.just(_deep(10**5).encode()), st.just(b'{"a": ' + _deep(3000).encode() + b"}")))
def test_hf_config_json_any_bytes(data):
    folder, _ = _hf_folder()
    (folder / "config.json").write_bytes(data)
    _ok_or_user_error(_resolve, folder)


# -- through the CLI --------------------------------------------------------------------------------

@example(changes=[(("preprocess", "crop"), "replace", "", 0)])  # ValueError from parity, before the fix
@SHORT
@given(changes=edits)
def test_cli_on_mutated_manifests(capsys, changes):
    """inspect / predict / parity on a hand-edited bundle: exit 0 or 1 (2: a gate failed), one stderr line."""
    from bundle_helpers import cli_in_process

    b = _scratch_bundle()
    m = apply_edits(_manifest(b), changes)
    _write_manifest(b, json.dumps(m, allow_nan=True).encode())
    photo = sorted((REPO / "calibration").glob("*.jpg"))[0]
    for args in (["inspect", b], ["predict", b, photo, "--threads", "1"], ["parity", b, "--threads", "1"]):
        try:
            code, _, err = cli_in_process(capsys, *args)
        except UserError as e:  # pragma: no cover - main() catches these; reaching here is a bug
            pytest.fail(f"{args[0]}: UserError escaped main(): {e}")
        assert code in (0, 1, 2, 3), (args[0], code, err)
        ours = [ln for ln in err if "[W:onnxruntime" not in ln and not ln.startswith("warning:")]
        if code == 1:
            assert len(ours) == 1 and ours[0].startswith("error: "), (args[0], err)


def test_cli_damaged_golden_one_line(tmp_path):
    """A real `coatnet-deploy parity` process on a bundle whose golden.npz (checksums fixed) is garbage."""
    shutil.copytree(tiny_bundle(), tmp_path / "b")
    b = tmp_path / "b"
    _replace_artifact(b, "golden.npz", _zip_of({"inputs.npy": _huge_npy((2**40,))}))
    proc = subprocess.run([PY, "-m", "coatnet_deploy", "parity", str(b)], capture_output=True, text=True, timeout=300,
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "[W:onnxruntime" not in ln]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: bundle") and "golden.npz" in lines[0]


def test_cli_damaged_manifest_one_line(tmp_path):
    shutil.copytree(tiny_bundle(), tmp_path / "b")
    b = tmp_path / "b"
    m = _manifest(b)
    m["artifacts"] = {"path": "model.onnx"}
    _write_manifest(b, json.dumps(m).encode())
    proc = subprocess.run([PY, "-m", "coatnet_deploy", "predict", str(b), str(sorted((REPO / "calibration").glob("*.jpg"))[0])],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "[W:onnxruntime" not in ln]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "manifest.json" in lines[0]
