"""The C++ app's fuzzing (examples/cpp/fuzz, docs/RELIABILITY.md): every input that ever crashed a fuzz
target is kept under examples/cpp/fuzz/regressions/<target>/ and must now end, in the app itself (release
and sanitizer builds), in one error line and exit 1; the fuzz targets build with clang's libFuzzer and
replay their seed corpora and regressions without a finding.

`make fuzz` (and CI) fuzzes for FUZZ_SECONDS per target; these tests only replay (seconds).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_helpers import REPO
from test_cpp_app import app, one_error_line  # noqa: F401  (the app fixture: both builds)

FUZZ = REPO / "examples" / "cpp" / "fuzz"
REGRESSIONS = FUZZ / "regressions"
sys.path.insert(0, str(FUZZ))
from make_corpus import HARNESS_ARTIFACTS  # noqa: E402

PREPROCESS = {"crop": 16, "resize": 18, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _inputs(target: str) -> list[Path]:
    return sorted(p for p in (REGRESSIONS / target).glob("*") if p.is_file() and p.name != "README.md")


def test_every_fuzz_target_has_regression_inputs_or_none_yet():
    """A regression folder holds inputs, not stray files: each one is named after what it broke."""
    for d in REGRESSIONS.iterdir():
        assert d.name in {"image", "npy", "manifest", "resample"}, d
        for p in _inputs(d.name):
            assert len(p.stem) > 12 and not p.name.startswith(("crash-", "oom-", "timeout-")), \
                f"{p}: name the regression input after what it broke"


@pytest.mark.parametrize("image", _inputs("image"), ids=lambda p: p.name)
def test_image_regressions_end_in_one_error_line(app, image, tmp_path):  # noqa: F811
    spec = tmp_path / "preprocess.json"
    spec.write_text(json.dumps(PREPROCESS))
    proc = app.run("preprocess", spec, image, "--dump-tensor", tmp_path / "t.npy")
    one_error_line(proc, str(image))
    assert not (tmp_path / "t.npy").exists()


def _bundle_from_manifest_input(data: bytes, folder: Path) -> Path:
    """The bundle folder fuzz_manifest.cpp makes of an input: byte 0 chooses manifest.sha256."""
    for rel, content in HARNESS_ARTIFACTS.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    mode, rest = data[0] % 4, data[1:]
    if mode in (1, 2):
        (folder / "manifest.sha256").write_text(hashlib.sha256(rest).hexdigest() + "  manifest.json\n")
    elif mode == 3:
        sha, _, rest = rest.partition(b"\n")
        (folder / "manifest.sha256").write_bytes(sha + b"\n")
    (folder / "manifest.json").write_bytes(rest)
    return folder


@pytest.mark.parametrize("manifest", _inputs("manifest"), ids=lambda p: p.name)
def test_manifest_regressions_end_in_one_error_line(app, manifest, tmp_path):  # noqa: F811
    bundle = _bundle_from_manifest_input(manifest.read_bytes(), tmp_path / "bundle")
    image = REPO / "examples" / "cpp" / "fuzz" / "corpus" / "image" / "rgb.png"
    one_error_line(app.run("preprocess", bundle, image, "--dump-tensor", tmp_path / "t.npy"), "bundle")


def test_fuzz_targets_replay_their_corpora_and_regressions(tmp_path):
    """The fuzz build (clang, -fsanitize=fuzzer,address,undefined) and one pass over every seed and
    regression input: no sanitizer report, no finding."""
    if not shutil.which("clang++"):
        pytest.skip("clang is not installed (README, 'Set up': apt-get install clang libclang-rt-14-dev)")
    build = REPO / "build" / "fuzz"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "fuzz" / "run.py"), "--replay", "--build-dir", str(build)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    for t in ("image", "npy", "manifest", "resample"):
        assert f"replay {t}:" in proc.stdout, proc.stdout
