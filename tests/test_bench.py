"""The latency harness: statistics on scripted times (a fake clock, no timing assertions),
interleaving order, and real ONNX Runtime / OpenVINO runners end to end."""

from __future__ import annotations

import numpy as np
import pytest

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.bench import (
    NOISY_CV,
    BenchConfig,
    LatencyResult,
    compare_interleaved,
    measure,
    ratios,
    summarize,
)
from coatnet_deploy.errors import UserError

REPORT_KEYS = {
    "batch", "warmup", "iterations", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms",
    "std_ms", "cv", "throughput_ips", "first_inference_ms", "load_time_s", "samples_ms", "noisy",
    "warnings", "settings", "threads", "mode",
}


class FakeClock:
    """Seconds that only move when a runner says it worked."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedRunner(Runner):
    """A real Runner computing a numpy matmul; each call advances the fake clock by the next
    scripted duration (ms), the last one repeating."""

    def __init__(self, name: str, clock: FakeClock, durations_ms: list[float], log: list | None = None):
        super().__init__()
        self.name, self.clock, self.durations, self.log = name, clock, list(durations_ms), log
        self.calls = 0
        self.async_calls = 0
        self.weight = np.linspace(-1, 1, 3 * 4 * 4 * 5, dtype=np.float32).reshape(48, 5)

    def _activate(self) -> None:
        pass

    def _tick(self) -> None:
        d = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        self.clock.now += d / 1000.0
        if self.log is not None:
            self.log.append(self.name)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self._tick()
        return batch.reshape(batch.shape[0], -1) @ self.weight

    def infer_async_batch(self, batches):
        # the whole queue takes one scripted duration: the overlap a real async queue gives
        self.async_calls += 1
        self._tick()
        return [b.reshape(b.shape[0], -1) @ self.weight for b in batches]

    def settings(self):
        return {"threads": 1, "kind": "scripted"}


BATCH = np.ones((2, 3, 4, 4), dtype=np.float32)


# -- statistics --------------------------------------------------------------------------------


def test_summarize_known_values():
    r = summarize([float(v) for v in range(1, 11)], batch=4, warmup=3)
    assert (r.batch, r.warmup, r.iterations) == (4, 3, 10)
    assert r.p50_ms == pytest.approx(5.5)
    assert r.p90_ms == pytest.approx(9.1)
    assert r.p99_ms == pytest.approx(9.91)
    assert r.mean_ms == pytest.approx(5.5)
    assert (r.min_ms, r.max_ms) == (1.0, 10.0)
    assert r.std_ms == pytest.approx(np.sqrt(8.25))
    assert r.cv == pytest.approx(np.sqrt(8.25) / 5.5)
    assert r.throughput_ips == pytest.approx(4 * 1000 / 5.5)


def test_cv_warning_logic():
    steady = summarize([10.0] * 20, batch=1)
    assert steady.cv == 0 and not steady.noisy and steady.warnings == []
    # cv just under and just over the threshold: mean 10, std = 10 * cv
    under = summarize([10 - 0.99, 10 + 0.99], batch=1)
    over = summarize([10 - 1.01, 10 + 1.01], batch=1)
    assert under.cv < NOISY_CV and not under.noisy and under.warnings == []
    assert over.cv > NOISY_CV and over.noisy and over.to_dict()["noisy"] is True
    assert len(over.warnings) == 1 and "noisy" in over.warnings[0]


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        summarize([], batch=1)


def test_bench_config_validation():
    with pytest.raises(UserError, match="latency, throughput"):
        BenchConfig(mode="fast")
    with pytest.raises(UserError, match="min_iters"):
        BenchConfig(min_iters=0)
    with pytest.raises(UserError, match="max_time_s"):
        BenchConfig(min_time_s=5, max_time_s=1)


# -- measure on scripted times -----------------------------------------------------------------


def test_measure_phases_count_and_time():
    clock = FakeClock()
    # first call 50 ms (lazy init), then 2 ms steady
    r = ScriptedRunner("fake", clock, [50.0, 2.0])
    cfg = BenchConfig(warmup_iters=3, warmup_s=0.010, min_iters=5, min_time_s=0.030, max_time_s=10)
    res = measure(r, BATCH, cfg, clock=clock)
    assert res.first_inference_ms == pytest.approx(50.0)
    # warm-up needs 3 runs AND 10 ms: 5 runs of 2 ms
    assert res.warmup == 5
    # measurement needs 5 runs AND 30 ms: 15 runs of 2 ms; the first inference is not a sample
    assert res.iterations == 15
    assert res.samples_ms == pytest.approx([2.0] * 15)
    assert res.max_ms == pytest.approx(2.0) and res.p50_ms == pytest.approx(2.0)
    assert res.throughput_ips == pytest.approx(2 * 1000 / 2.0)
    assert r.calls == 1 + 5 + 15
    assert res.load_time_s is not None and res.load_time_s >= 0
    assert not res.capped and res.warnings == []
    # activated by measure, so deactivated after
    assert not r.is_active
    d = res.to_dict()
    assert REPORT_KEYS <= set(d)
    assert d["settings"] == {"threads": 1, "kind": "scripted"} and d["threads"] == 1


def test_measure_count_dominates_when_runs_are_slow():
    clock = FakeClock()
    r = ScriptedRunner("fake", clock, [100.0])
    cfg = BenchConfig(warmup_iters=2, warmup_s=0.0, min_iters=7, min_time_s=0.05, max_time_s=10)
    res = measure(r, BATCH, cfg, clock=clock)
    assert (res.warmup, res.iterations) == (2, 7)


def test_measure_capped_by_max_time():
    clock = FakeClock()
    r = ScriptedRunner("fake", clock, [100.0])
    cfg = BenchConfig(warmup_iters=0, warmup_s=0, min_iters=1000, min_time_s=0, max_time_s=0.45)
    res = measure(r, BATCH, cfg, clock=clock)
    # rounds start while under 0.45 s: 0, 0.1, ..., 0.4 -> 5 runs
    assert res.iterations == 5 and res.capped
    assert any("max_time_s" in w for w in res.warnings)


def test_measure_leaves_an_active_runner_active():
    clock = FakeClock()
    r = ScriptedRunner("fake", clock, [1.0]).activate()
    measure(r, BATCH, BenchConfig(warmup_iters=0, warmup_s=0, min_iters=2, min_time_s=0), clock=clock)
    assert r.is_active


def test_throughput_mode_uses_async_queue_and_divides_wall_time():
    clock = FakeClock()
    r = ScriptedRunner("fake", clock, [40.0])  # 8 batches overlapped in 40 ms -> 5 ms per batch
    cfg = BenchConfig(warmup_iters=1, warmup_s=0, min_iters=3, min_time_s=0, mode="throughput", async_batches=8)
    res = measure(r, BATCH, cfg, clock=clock)
    assert r.async_calls == 1 + 1 + 3 and r.calls == r.async_calls
    assert res.p50_ms == pytest.approx(5.0) and res.mode == "throughput"
    assert res.throughput_ips == pytest.approx(2 * 1000 / 5.0)


def test_progress_hook_and_quiet_default(capsys):
    clock = FakeClock()
    seen = []
    cfg = BenchConfig(warmup_iters=2, warmup_s=0, min_iters=3, min_time_s=0)
    measure(ScriptedRunner("fake", clock, [1.0]), BATCH, cfg, progress=lambda *a: seen.append(a), clock=clock)
    assert seen[0] == ("fake", "first", 1)
    assert [s for s in seen if s[1] == "warmup"] == [("fake", "warmup", 1), ("fake", "warmup", 2)]
    assert seen[-1] == ("fake", "measure", 3)
    measure(ScriptedRunner("fake", clock, [1.0]), BATCH, cfg, clock=clock)
    assert capsys.readouterr() == ("", "")


# -- interleaving ------------------------------------------------------------------------------


def test_compare_interleaved_is_round_robin_with_equal_counts():
    clock = FakeClock()
    log: list[str] = []
    runners = {
        "a": ScriptedRunner("a", clock, [10.0], log),
        "b": ScriptedRunner("b", clock, [20.0], log),
        "c": ScriptedRunner("c", clock, [5.0], log),
    }
    cfg = BenchConfig(warmup_iters=2, warmup_s=0, min_iters=4, min_time_s=0.05, max_time_s=10)
    res = compare_interleaved(runners, BATCH, cfg, clock=clock)
    # every runner must have 50 ms measured: c (5 ms) needs 10 rounds, and so all get 10
    assert log == ["a", "b", "c"] * (1 + 2 + 10)
    assert {n: (r.warmup, r.iterations) for n, r in res.items()} == {n: (2, 10) for n in "abc"}
    assert res["b"].p50_ms == pytest.approx(20.0)
    rt = ratios(res, "a")
    assert rt["a"] == {"p50_ratio": 1.0, "mean_ratio": 1.0, "speedup": 1.0}
    assert rt["b"]["p50_ratio"] == pytest.approx(2.0) and rt["c"]["speedup"] == pytest.approx(2.0)
    with pytest.raises(UserError, match="a, b, c"):
        ratios(res, "nope")
    assert all(isinstance(r, LatencyResult) for r in res.values())
    assert not any(r.is_active for r in runners.values())


def test_interleaved_runners_settle_before_each_step_untimed():
    """The pause that lets one runtime's spinning threads die down is outside the timed region."""
    clock = FakeClock()
    log: list[str] = []
    pauses: list[float] = []
    runners = {"a": ScriptedRunner("a", clock, [10.0], log), "b": ScriptedRunner("b", clock, [20.0], log)}
    cfg = BenchConfig(warmup_iters=1, warmup_s=0, min_iters=3, min_time_s=0, max_time_s=10, settle_s=0.05)
    res = compare_interleaved(runners, BATCH, cfg, clock=clock, sleep=pauses.append)
    assert len(pauses) == 2 * (1 + 3) and set(pauses) == {0.05}  # warm-up + measured steps, each runner
    assert res["a"].p50_ms == pytest.approx(10.0) and res["b"].p50_ms == pytest.approx(20.0)
    one = compare_interleaved({"a": ScriptedRunner("a", clock, [10.0], log)}, BATCH, cfg, clock=clock, sleep=pauses.append)
    assert len(pauses) == 8 and one["a"].iterations == 3  # a single runner needs no pause


def test_compare_interleaved_needs_runners():
    with pytest.raises(UserError):
        compare_interleaved({}, BATCH)


# -- real runtimes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 10),
    ).eval()
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    torch.onnx.export(
        model, torch.randn(2, 3, 16, 16), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return model, path


def test_real_runners_interleaved(tiny_onnx):
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner
    from coatnet_deploy.backends.openvino import OpenVINORunner
    from coatnet_deploy.backends.torch_ref import TorchRunner

    model, path = tiny_onnx
    runners = {
        "torch": TorchRunner(model, threads=1),
        "ort": OnnxRuntimeRunner(path, threads=1),
        "ov": OpenVINORunner(path, threads=1),
    }
    cfg = BenchConfig(warmup_iters=2, warmup_s=0, min_iters=5, min_time_s=0, max_time_s=5)
    x = np.zeros((2, 3, 16, 16), dtype=np.float32)
    res = compare_interleaved(runners, x, cfg)
    for name, r in res.items():
        d = r.to_dict()
        assert REPORT_KEYS <= set(d)
        assert d["batch"] == 2 and d["iterations"] >= 5 and d["warmup"] >= 2
        assert d["load_time_s"] > 0 and d["first_inference_ms"] > 0
        assert d["min_ms"] <= d["p50_ms"] <= d["p90_ms"] <= d["p99_ms"] <= d["max_ms"]
        assert d["settings"]["threads"] == 1
    assert res["ov"].settings["inference_precision_effective"] == "f32"
    assert set(ratios(res, "torch")) == {"torch", "ort", "ov"}


def test_openvino_throughput_mode_measured(tiny_onnx):
    from coatnet_deploy.backends.openvino import OpenVINORunner

    cfg = BenchConfig(warmup_iters=1, warmup_s=0, min_iters=3, min_time_s=0, mode="throughput", async_batches=4)
    res = measure(OpenVINORunner(tiny_onnx[1], mode="throughput"), np.zeros((2, 3, 16, 16), np.float32), cfg)
    assert res.mode == "throughput" and res.iterations == 3
    assert res.settings["performance_hint"] == "THROUGHPUT"


def test_runner_warnings_are_carried_into_the_result():
    class Caveated(ScriptedRunner):
        def settings(self):
            return {"threads": 1, "warnings": ["requested f16, runs f32"]}

    clock = FakeClock()
    cfg = BenchConfig(warmup_iters=0, warmup_s=0, min_iters=2, min_time_s=0)
    res = measure(Caveated("fake", clock, [1.0]), BATCH, cfg, clock=clock)
    assert res.warnings == ["requested f16, runs f32"] and not res.noisy
