"""coatnet_deploy.runtime: torch-free loading, preprocessing, top-k, batching and threads."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from bundle_helpers import LABELS, REPO, has_openvino, openvino_bundle_from
from coatnet_deploy.bundle import write_manifest_sum
from coatnet_deploy.errors import UserError
from coatnet_deploy.runtime import Classifier, Prediction, softmax

PHOTOS = sorted((REPO / "calibration").glob("*.jpg"))[:6]
FORBIDDEN = ("torch", "onnx", "onnxsim", "nncf", "matplotlib", "tensorrt", "torchvision", "timm")


@pytest.fixture(scope="module")
def clf(bundle):
    with Classifier.load(bundle) as c:
        yield c


def _heavy_modules_after(code: str) -> list[str]:
    prog = code + (
        "\nimport sys, json\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_runtime_pulls_in_no_torch_or_onnx():
    assert _heavy_modules_after("import coatnet_deploy.runtime") == []


def test_runtime_side_modules_import_without_torch_or_onnx():
    mods = ["coatnet_deploy", "coatnet_deploy.bundle", "coatnet_deploy.preprocess", "coatnet_deploy.parity",
            "coatnet_deploy.runtime.engines", "coatnet_deploy.backends.onnxrt", "coatnet_deploy.backends.openvino"]
    assert _heavy_modules_after("\n".join(f"import {m}" for m in mods)) == []


def test_classifying_with_ort_bundle_pulls_in_no_torch_or_onnx(bundle):
    code = (f"from coatnet_deploy.runtime import Classifier\n"
            f"with Classifier.load({str(bundle)!r}) as c:\n"
            f"    r = c.classify([{str(PHOTOS[0])!r}], topk=3)\n"
            f"    assert len(r[0]) == 3\n"
            f"import onnxruntime\n")  # the runtime itself must be loaded, or this test proves nothing
    assert _heavy_modules_after(code) == []


@pytest.mark.skipif(not has_openvino(), reason="openvino not installed")
def test_classifying_with_openvino_bundle_pulls_in_no_torch():
    ov = openvino_bundle_from()
    code = (f"from coatnet_deploy.runtime import Classifier\n"
            f"with Classifier.load({str(ov)!r}) as c:\n"
            f"    c.classify([{str(PHOTOS[0])!r}])\n")
    assert _heavy_modules_after(code) == []


def test_matches_reference_logits_stored_in_bundle(bundle, clf):
    # golden.npz holds PyTorch's logits for the golden inputs: an independent reference.
    with np.load(bundle / "golden.npz") as z:
        x, ref = z["inputs"], z["reference_logits"]
    preds = clf.classify_batch(x, topk=10)
    ref_p = softmax(ref)
    for row, p in zip(preds, ref_p):
        assert row[0].index == int(np.argmax(p))
        assert [q.index for q in row] == list(np.argsort(-p, kind="stable"))
        for q in row:
            assert q.prob == pytest.approx(p[q.index], abs=1e-5)
            assert q.label == LABELS[q.index]


def test_softmax_is_float64_and_stable():
    p = softmax(np.array([[1000.0, 1000.0, -1000.0]], dtype=np.float32))
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]], atol=1e-12)


def test_probabilities_sorted_and_sum_to_one(clf):
    row = clf.classify([PHOTOS[0]], topk=100)[0]
    assert len(row) == 10  # topk is clamped to the number of classes
    probs = [p.prob for p in row]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-9)
    assert isinstance(row[0], Prediction)


def test_all_input_kinds_agree(clf):
    path = PHOTOS[1]
    data = path.read_bytes()
    pil = Image.open(io.BytesIO(data))
    chw = clf.preprocess(path)
    results = clf.classify([path, str(path), data, pil, chw], topk=3)
    assert all(r == results[0] for r in results)
    assert clf.classify(str(path), topk=3) == [results[0]]  # one path alone is one image


def test_odd_image_modes_work(clf, tmp_path):
    rgb = Image.open(PHOTOS[2]).convert("RGB").resize((80, 60))
    gray = tmp_path / "g.png"
    rgb.convert("L").save(gray)
    rgba = tmp_path / "a.png"
    rgb.convert("RGBA").save(rgba)
    deep = tmp_path / "d16.png"
    Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)).save(deep)
    res = clf.classify([gray, rgba, deep], topk=2)
    assert [len(r) for r in res] == [2, 2, 2]
    # 16-bit gray scaled to 8 bit is the same picture as the 8-bit gray.
    assert res[2][0].index == res[0][0].index


def test_max_batch_chunks_give_the_same_answers(bundle, clf):
    x = np.stack([clf.preprocess(p) for p in PHOTOS[:5]])
    full = clf.logits(x)
    with Classifier.load(bundle, max_batch=2, threads=1) as small:
        assert small.max_batch == 2
        np.testing.assert_allclose(small.logits(x), full, rtol=1e-5, atol=1e-5)


def test_batch_smaller_than_engine_minimum_is_padded(bundle, clf, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    m["input"]["batch"]["min"] = 3  # a deliberate edit, resealed; the ORT graph is dynamic anyway
    (b / "manifest.json").write_text(json.dumps(m))
    write_manifest_sum(b)
    x = clf.preprocess(PHOTOS[0])[None]
    with Classifier.load(b) as padded:
        np.testing.assert_allclose(padded.logits(x), clf.logits(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_batch": 9}, {"threads": 0}, {"threads": "2"}])
def test_bad_load_settings_are_user_errors(bundle, kwargs):
    with pytest.raises(UserError):
        Classifier.load(bundle, **kwargs)


def test_bad_inputs_are_user_errors(clf, tmp_path):
    with pytest.raises(UserError, match="topk"):
        clf.classify([PHOTOS[0]], topk=0)
    with pytest.raises(UserError, match="shape"):
        clf.classify([np.zeros((3, 32, 32), np.float32)])
    with pytest.raises(UserError, match="shape"):
        clf.classify_batch(np.zeros((2, 64, 64, 3), np.float32))
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(UserError, match="notes.jpg"):
        clf.classify([bad])
    assert clf.classify([]) == []


def test_close_is_idempotent_and_final(bundle):
    c = Classifier.load(bundle)
    c.close()
    c.close()
    with pytest.raises(UserError, match="closed"):
        c.classify([PHOTOS[0]])


def _concurrent_equals_sequential(c: Classifier) -> None:
    inputs = [c.preprocess(p) for p in PHOTOS]
    sequential = [c.classify([x], topk=5)[0] for x in inputs]
    results: dict[tuple[int, int], list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(t: int) -> None:
        try:
            start.wait()
            for rep in range(3):
                for i in range(len(inputs)):
                    j = (i + t) % len(inputs)  # threads hit different images at the same time
                    results[(t, rep * 100 + j)] = (j, c.classify([inputs[j]], topk=5)[0])
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert len(results) == 4 * 3 * len(inputs)
    for j, preds in results.values():
        assert [p.index for p in preds] == [p.index for p in sequential[j]]
        for p, s in zip(preds, sequential[j]):
            assert p.prob == pytest.approx(s.prob, rel=1e-5, abs=1e-7)


def test_concurrent_classify_equals_sequential_onnxruntime(clf):
    _concurrent_equals_sequential(clf)


@pytest.mark.skipif(not has_openvino(), reason="openvino not installed")
def test_concurrent_classify_equals_sequential_openvino():
    with Classifier.load(openvino_bundle_from(), threads=1) as c:
        assert c.runs.startswith("openvino")
        _concurrent_equals_sequential(c)


@pytest.mark.skipif(not has_openvino(), reason="openvino not installed")
def test_openvino_bundle_agrees_with_onnxruntime_bundle(clf):
    x = np.stack([clf.preprocess(p) for p in PHOTOS[:3]])
    with Classifier.load(openvino_bundle_from()) as ov:
        np.testing.assert_allclose(ov.logits(x), clf.logits(x), rtol=1e-3, atol=1e-4)
