"""Runners against PyTorch on a tiny generated ONNX (and CoAtNet-tiny when the model family exists)."""

from __future__ import annotations


import numpy as np
import pytest

from coatnet_deploy.errors import TargetUnavailable, UserError

torch = pytest.importorskip("torch")


def make_tiny_model():
    """Conv + BN + GELU + pooling + Linear: the ops a CoAtNet stem and head use, 10 classes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.GELU(),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    )
    # non-trivial BN statistics, so a dropped or mis-folded BN shows in the logits
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def export_tiny_onnx(model, path, size: int = 16):
    # batch 2 example: a batch-1 trace can bake the batch into the graph
    torch.onnx.export(
        model,
        torch.randn(2, 3, size, size),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = make_tiny_model()
    path = export_tiny_onnx(model, tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    return model, path


def reference(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def batches():
    rng = np.random.default_rng(1)
    return [rng.standard_normal((n, 3, 16, 16)).astype(np.float32) for n in (1, 3)]


# -- ONNX Runtime ------------------------------------------------------------------------------


def test_onnxruntime_matches_torch_at_batch_1_and_3(tiny):
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

    model, path = tiny
    with OnnxRuntimeRunner(path, threads=1) as r:
        for x in batches():
            out = r.infer(x)
            assert out.shape == (x.shape[0], 10) and out.dtype == np.float32
            assert np.abs(out - reference(model, x)).max() <= 1e-5
        s = r.settings()
    assert r.load_time_s is not None and r.load_time_s > 0
    assert s["providers"] == ["CPUExecutionProvider"]
    assert s["threads"] == 1 and s["intra_op_num_threads"] == 1 and s["inter_op_num_threads"] == 1
    assert s["optimization"] == "all"
    assert s["version"] == __import__("onnxruntime").__version__
    assert (s["input_name"], s["output_name"]) == ("input", "logits")


@pytest.mark.parametrize("level", ["disable", "basic", "extended"])
def test_onnxruntime_levels_agree(tiny, level):
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

    model, path = tiny
    x = batches()[1]
    with OnnxRuntimeRunner(path, threads=1, optimization=level) as r:
        assert np.abs(r.infer(x) - reference(model, x)).max() <= 1e-5
        assert r.settings()["optimization"] == level


def test_optimized_model_is_written_and_runs(tiny, tmp_path):
    from coatnet_deploy.backends.onnxrt import OPTIMIZED_MODEL_NAME, OnnxRuntimeRunner, save_optimized_model

    model, path = tiny
    out = save_optimized_model(path, tmp_path)
    assert out == tmp_path / OPTIMIZED_MODEL_NAME and out.stat().st_size > 0
    x = batches()[1]
    with OnnxRuntimeRunner(out, threads=1) as r:
        assert np.abs(r.infer(x) - reference(model, x)).max() <= 1e-5

    side = tmp_path / "side" / "runner.ort.onnx"
    side.parent.mkdir()
    with OnnxRuntimeRunner(path, threads=1, optimized_model_out=side) as r:
        s = r.settings()
    assert side.is_file()
    assert s["optimized_model"] == str(side) and s["optimized_model_portable"] is False


def test_onnxruntime_user_errors(tiny, tmp_path):
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

    with pytest.raises(UserError, match="disable"):
        OnnxRuntimeRunner(tiny[1], optimization="max")
    with pytest.raises(UserError, match="not found"):
        OnnxRuntimeRunner(tmp_path / "missing.onnx").activate()
    with pytest.raises(TargetUnavailable, match="NoSuchExecutionProvider"):
        OnnxRuntimeRunner(tiny[1], providers=["NoSuchExecutionProvider"]).activate()
    with pytest.raises(RuntimeError, match="activate"):
        OnnxRuntimeRunner(tiny[1]).infer(batches()[0])


# -- OpenVINO ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ir_f32(tiny, tmp_path_factory):
    from coatnet_deploy.backends.openvino import ir_from_onnx

    return ir_from_onnx(tiny[1], tmp_path_factory.mktemp("ir32"), compress_to_fp16=False)


def test_openvino_ir_written_and_reloaded_matches_torch(tiny, ir_f32):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    model, _ = tiny
    xml, bin_ = ir_f32
    assert xml.name == "model.xml" and xml.is_file() and bin_.is_file() and bin_.stat().st_size > 0
    with OpenVINORunner(xml, threads=1) as r:
        for x in batches():
            out = r.infer(x)
            assert out.shape == (x.shape[0], 10) and out.dtype == np.float32
            assert np.abs(out - reference(model, x)).max() <= 1e-4
        s = r.settings()
    assert s["inference_precision_requested"] == "f32"
    assert s["inference_precision_effective"] == "f32"
    assert s["performance_hint"] == "LATENCY" and s["inference_num_threads"] == 1
    assert s["version"] and s["device_name"]
    assert "warnings" not in s


def test_openvino_runs_onnx_directly_and_static_batch(tiny):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    model, path = tiny
    for static in (False, True):
        with OpenVINORunner(path, threads=1, static_batch=static) as r:
            for x in batches():
                assert np.abs(r.infer(x) - reference(model, x)).max() <= 1e-4
            if static:
                assert sorted(r._compiled_by_batch) == [1, 3]


def test_fp16_compressed_ir_runs(tiny, ir_f32, tmp_path):
    from coatnet_deploy.backends.openvino import OpenVINORunner, ir_from_onnx

    model, _ = tiny
    xml16, bin16 = ir_from_onnx(tiny[1], tmp_path, compress_to_fp16=True)
    # weights stored as fp16: about half the bytes
    assert bin16.stat().st_size < 0.75 * ir_f32[1].stat().st_size
    x = batches()[1]
    ref = reference(model, x)
    with OpenVINORunner(xml16, threads=1) as r:
        out = r.infer(x)
        assert r.settings()["inference_precision_effective"] == "f32"
    # fp16 weights: small but non-zero error, and not garbage
    assert np.abs(out - ref).max() <= 1e-2
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.9999


def f16_hint_runs_here() -> str:
    """What OpenVINO's CPU plugin runs for an f16 hint, from what the CPU has (host.py asks the CPU):
    f16 with AVX512-FP16 or AMX-FP16 (Sapphire/Granite Rapids), else bf16 with AVX512-BF16 or AMX-BF16
    (Zen 4/5, Cooper Lake), else f32 (AVX2 CPUs)."""
    from coatnet_deploy import host

    feats = host.features()
    if feats & {"AVX512FP16", "AMX_FP16"}:
        return "f16"
    if feats & {"AVX512BF16", "AMX_BF16"}:
        return "bf16"
    return "f32"


def test_effective_precision_is_recorded_when_f16_requested(tiny):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    with OpenVINORunner(tiny[1], threads=1, inference_precision="f16") as r:
        s = r.settings()
    runs = f16_hint_runs_here()
    assert s["inference_precision_requested"] == "f16"
    assert s["inference_precision_effective"] == runs
    if runs != "f16":
        # OpenVINO accepts the hint and silently runs another precision: the settings must say so
        assert any("f16" in w and runs in w for w in s["warnings"])


def test_effective_precision_is_known_for_static_batch_after_a_run(tiny):
    # A static-batch engine compiles on its first inference: the export reads the settings after the
    # parity run, so a bundle's manifest never says null.
    from coatnet_deploy.backends.openvino import OpenVINORunner

    with OpenVINORunner(tiny[1], threads=1, inference_precision="f16", static_batch=True) as r:
        r.infer(batches()[0])
        assert r.settings()["inference_precision_effective"] == f16_hint_runs_here()


def test_execution_precisions_count_compute_layers(tiny):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    with OpenVINORunner(tiny[1], threads=1) as r:
        prec = r.execution_precisions()
        s = r.settings()
    assert "Convolution" in prec and sum(prec["Convolution"].values()) >= 2
    assert not {"Parameter", "Result", "Input", "Output", "Const"} & set(prec)
    # pinned f32 with float weights: every compute layer runs in f32
    assert set(s["execution_precision_totals"]) == {"f32"}
    assert sum(s["execution_precision_totals"].values()) == sum(sum(c.values()) for c in prec.values())


def test_openvino_throughput_async_queue_keeps_order(tiny):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    model, path = tiny
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for _ in range(6)]
    with OpenVINORunner(path, mode="throughput", num_streams=2, threads=2) as r:
        outs = r.infer_async_batch(xs)
        s = r.settings()
    assert len(outs) == len(xs)
    for x, out in zip(xs, outs):
        assert np.abs(out - reference(model, x)).max() <= 1e-4
    assert s["performance_hint"] == "THROUGHPUT" and s["num_streams"] == "2"


def test_openvino_requests_in_flight_run_a_static_model_warmed_one_at_a_time(tiny):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    model, path = tiny
    x = np.random.default_rng(3).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with OpenVINORunner(path, mode="throughput", num_streams=2, threads=2) as r:
        first = r.infer_async_batch([x] * 5)
        again = r.infer_async_batch([x] * 5)
        pool = r._queues[3]
        static = r._compiled_by_batch[3].inputs[0].get_partial_shape()
        with pytest.raises(ValueError, match="one shape"):
            r.infer_async_batch([x, x[:2]])
    assert len(pool) >= 2 and static.is_static and static[0].get_length() == 3
    for out in first + again:
        assert np.abs(out - reference(model, x)).max() <= 1e-4


def test_openvino_request_that_never_finishes_fails_instead_of_hanging(tiny):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    class Stalled:
        cancelled = False

        def wait_for(self, ms):
            return False

        def cancel(self):
            self.cancelled = True

    r = OpenVINORunner(tiny[1], mode="throughput", async_timeout_s=0.5)
    pool = [Stalled(), Stalled()]
    with pytest.raises(UserError, match="did not finish within 0.5 s.*latency mode"):
        r._collect(pool, 1)
    assert all(p.cancelled for p in pool)


def test_openvino_user_errors(tiny):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    with pytest.raises(UserError, match="latency"):
        OpenVINORunner(tiny[1], mode="fast")
    with pytest.raises(UserError, match="f32"):
        OpenVINORunner(tiny[1], inference_precision="int4")
    with pytest.raises(TargetUnavailable, match="NPU"):
        OpenVINORunner(tiny[1], device="NPU").activate()


# -- PyTorch reference -------------------------------------------------------------------------


def test_resolve_reference_device():
    from coatnet_deploy.backends.torch_ref import resolve_reference_device

    assert resolve_reference_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_reference_device("cpu") == "cpu"
    with pytest.raises(UserError, match="auto, cpu, cuda"):
        resolve_reference_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TargetUnavailable, match="CUDA"):
            resolve_reference_device("cuda")


def test_torch_runner_cpu(tiny):
    from coatnet_deploy.backends.torch_ref import TorchRunner

    model, _ = tiny
    before = torch.get_num_threads()
    r = TorchRunner(model, device="cpu", threads=1)
    with r:
        assert torch.get_num_threads() == 1
        for x in batches():
            np.testing.assert_array_equal(r.infer(x), reference(model, x))
        s = r.settings()
    assert torch.get_num_threads() == before
    assert s == {**s, "device": "cpu", "dtype": "fp32", "threads": 1, "version": torch.__version__}
    assert "cuda_device_name" not in s
    with pytest.raises(UserError, match="CUDA"):
        TorchRunner(model, device="cpu", dtype="fp16")
    with pytest.raises(RuntimeError, match="cuda"):
        r.time_cuda(batches()[0])


@pytest.mark.gpu
def test_torch_runner_cuda_fp16_and_events(tiny):
    from coatnet_deploy.backends.torch_ref import TorchRunner

    model, _ = tiny
    x = batches()[1]
    ref = reference(make_tiny_model(), x)
    with TorchRunner(make_tiny_model(), device="cuda", dtype="fp16") as r:
        out = r.infer(x)
        times = r.time_cuda(x, iters=5)
        s = r.settings()
    assert np.abs(out - ref).max() < 5e-2
    assert len(times) == 5 and all(t > 0 for t in times)
    assert s["device"] == "cuda" and s["cuda_device_name"] and s["autocast"] is True


# -- the real model family ----------------------------------------------------------------------


def test_runners_match_torch_on_coatnet_tiny(tmp_path):
    from coatnet_deploy.models import build_model

    model = build_model("coatnet_tiny", image_size=64)
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner
    from coatnet_deploy.backends.openvino import OpenVINORunner

    path = export_tiny_onnx(model, tmp_path / "coatnet_tiny.onnx", size=64)
    x = np.random.default_rng(3).standard_normal((3, 3, 64, 64)).astype(np.float32)
    ref = reference(model, x)
    with OnnxRuntimeRunner(path, threads=1) as r:
        assert np.abs(r.infer(x) - ref).max() <= 1e-5
    with OpenVINORunner(path, threads=1) as r:
        assert np.abs(r.infer(x) - ref).max() <= 1e-4
        prec = r.execution_precisions()
    # the transformer stages' attention runs as OpenVINO MatMul/Softmax, all in f32 when pinned
    assert {"Convolution", "MatMul", "Softmax"} <= set(prec)
    assert {p for counts in prec.values() for p in counts} == {"f32"}
