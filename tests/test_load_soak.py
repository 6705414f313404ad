"""The short versions of tools/reliability/load.py and soak.py: 200 generated images through 8 threads on
one Classifier and 4 processes, bit-identical to a serial run; a hang is a failure, not a wait; the RSS
readings of the Python and C++ soaks. The full runs (2,000 images, 20,000 inferences, six bundles) are
the scripts themselves (docs/RELIABILITY.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bundle_helpers import REPO, has_openvino, openvino_bundle_from, tiny_bundle

sys.path.insert(0, str(REPO / "tools" / "reliability"))
import load  # noqa: E402
import soak  # noqa: E402
from common import make_images  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(200, tmp_path_factory.mktemp("load-images"), seed=0)


def test_generated_images_vary_and_decode(images, tmp_path):
    from PIL import Image

    kinds = set()
    for p in images:
        with Image.open(p) as im:
            kinds.add((im.format, im.mode))
            assert 8 <= min(im.size) and max(im.size) <= 300
    assert {f for f, _ in kinds} == {"JPEG", "PNG"} and len({m for _, m in kinds}) >= 5, kinds
    assert [p.read_bytes() for p in make_images(3, tmp_path, seed=0)] == [p.read_bytes() for p in images[:3]]


@pytest.mark.parametrize("which", ["onnxruntime-fp32", "openvino-fp32"])
def test_threads_and_processes_are_bit_identical_to_serial(images, which):
    if which.startswith("openvino") and not has_openvino():
        pytest.skip("openvino is not installed")
    bundle = tiny_bundle() if which.startswith("onnxruntime") else openvino_bundle_from()
    row = load.check_bundle(which, bundle, images, runtime_threads=1, timeout=300)
    assert row["threads"] == "identical" and row["processes"] == "identical", row
    assert row["passed"]


def test_a_hang_is_a_failure_not_a_wait(images):
    # A deadline far shorter than the work: both passes must give up with a message, not block.
    with pytest.raises(load.Hang, match=r"threads still running after 0.01 s"):
        load.shared_threads(tiny_bundle(), images, 1, timeout=0.01)
    with pytest.raises(load.Hang, match=r"4 processes had not all finished after 0.01 s"):
        load.processes(tiny_bundle(), images, 1, timeout=0.01)


def test_growth_is_measured_from_the_end_of_the_warmup():
    samples = [(0, 100), (1000, 900), (2000, 1000), (3000, 1010), (4000, 1049), (5000, 1020)]
    assert soak.growth(samples, 2000) == (1000, 1049, pytest.approx(4.9))
    with pytest.raises(RuntimeError, match="no RSS sample at 2500"):
        soak.growth(samples, 2500)


def test_python_soak_reads_rss(images):
    samples = soak.run_python(tiny_bundle(), 300, 100, images[0].parent, timeout=300)
    assert [i for i, _ in samples] == [0, 100, 200, 300]
    assert all(kb > 10_000 for _, kb in samples)  # a process with a runtime loaded: tens of MB at least


@pytest.fixture(scope="module")
def app():
    proc = subprocess.run(["make", "cpp-app", f"VENV={sys.prefix}"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"`make cpp-app` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return REPO / "build" / "cpp" / "coatnet-classify"


def test_cpp_bench_rss_every(app):
    if not has_openvino():
        pytest.skip("openvino is not installed")
    samples = soak.run_cpp(app, openvino_bundle_from(), 30, 10, timeout=300)
    assert [i for i, _ in samples] == [10, 20, 30]
    assert all(kb > 10_000 for _, kb in samples)
    bad = subprocess.run([str(app), "bench", str(openvino_bundle_from()), "--rss-every", "0"], capture_output=True, text=True,
                         timeout=120)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and "rss-every" in lines[0], bad.stderr
