"""The latency harness and the one timing session: statistics on scripted times, the stopping rules and the
settle wait on fake clocks (no timing assertions), interleaving order, and real ONNX Runtime / OpenVINO
runners end to end."""

from __future__ import annotations

import time

import numpy as np
import pytest

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.bench import NOISY_CV, BenchConfig, LatencyResult, export_latency, summarize, time_interleaved
from coatnet_deploy.bench.harness import IDLE_CORES, run_interleaved, wait_idle
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


# -- one runner on scripted times -------------------------------------------------------------------


def measure(runner, batch, cfg, progress=None, clock=time.perf_counter):
    """One runner through the session (as export's latency step and `bench` run it) -> its result."""
    b = int(batch.shape[0])
    if progress is not None:  # the harness's callback, without a progress line around it
        return run_interleaved({runner.name: runner.activate()}, batch, cfg, progress=progress, clock=clock)[0][runner.name]
    return time_interleaved({runner.name: runner}, batch, [b], cfg, clock=clock)[b].results[runner.name]


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
    # activated by the session, so deactivated after
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


def test_measure_capped_by_max_time_says_which_minimum_was_missed():
    clock = FakeClock()
    r = ScriptedRunner("fake", clock, [100.0])
    cfg = BenchConfig(warmup_iters=0, warmup_s=0, min_iters=1000, min_time_s=0, max_time_s=0.45)
    res = measure(r, BATCH, cfg, clock=clock)
    # rounds start while under 0.45 s after the first inference: 0, 0.1, ..., 0.4 -> 5 runs
    assert res.iterations == 5 and res.capped
    assert res.warnings == ["measurement stopped at max_time_s (0.45 s of wall clock for 1 runner(s), warm-up included) "
                            "after 5 iterations each: min_iters 1000 not reached (5 done)"]


def test_capped_by_time_names_min_time_not_the_count():
    """The old message said 'before the minimum count or time' after 562 iterations with min_iters 10:
    now it names the minimum that was not reached, with what was done. Here pauses eat the wall clock."""
    clock = FakeClock()

    def settle(previous_call_s):
        clock.now += 0.010
        return 0.010

    runners = {n: ScriptedRunner(n, clock, [1.0]) for n in "ab"}
    cfg = BenchConfig(warmup_iters=0, warmup_s=0, min_iters=10, min_time_s=0.5, max_time_s=1.0)
    res = time_interleaved(runners, BATCH, [2], cfg, clock=clock, settle=settle)[2].results["a"]
    assert res.capped and res.iterations >= 10
    (w,) = res.warnings
    assert "min_time_s 0.5 s not reached" in w and "min_iters" not in w
    assert f"after {res.iterations} iterations each" in w and "for 2 runner(s)" in w


def test_warmup_that_runs_out_of_time_still_measures_once():
    clock = FakeClock()
    r = ScriptedRunner("fake", clock, [100.0])
    cfg = BenchConfig(warmup_iters=50, warmup_s=0, min_iters=3, min_time_s=0, max_time_s=0.25)
    res = measure(r, BATCH, cfg, clock=clock)
    assert res.warmup == 3 and res.iterations == 1 and res.capped
    assert res.warnings[0].startswith("warm-up stopped at max_time_s") and "warmup_iters 50 not reached (3 done)" in res.warnings[0]
    assert res.warnings[1].startswith("measurement stopped") and "min_iters 3 not reached (1 done)" in res.warnings[1]


def test_max_time_zero_still_gives_one_sample():
    clock = FakeClock()
    res = measure(ScriptedRunner("fake", clock, [1.0]), BATCH,
                  BenchConfig(warmup_iters=0, warmup_s=0, min_iters=1, min_time_s=0, max_time_s=0), clock=clock)
    assert res.iterations == 1 and not res.capped and res.warnings == []


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


def no_settle(previous_call_s: float) -> float:
    return 0.0


def test_interleaved_is_round_robin_with_equal_counts():
    clock = FakeClock()
    log: list[str] = []
    runners = {
        "a": ScriptedRunner("a", clock, [10.0], log),
        "b": ScriptedRunner("b", clock, [20.0], log),
        "c": ScriptedRunner("c", clock, [5.0], log),
    }
    cfg = BenchConfig(warmup_iters=2, warmup_s=0, min_iters=4, min_time_s=0.05, max_time_s=10)
    res = time_interleaved(runners, BATCH, [2], cfg, clock=clock, settle=no_settle)[2]
    # 4 rounds of 35 ms: min_iters is met, and 140 ms >= the 50 ms all runners must measure together
    assert log == ["a", "b", "c"] * (1 + 2 + 4)
    assert {n: (r.warmup, r.iterations) for n, r in res.results.items()} == {n: (2, 4) for n in "abc"}
    assert res.results["b"].p50_ms == pytest.approx(20.0)
    sp = res.speedups("a")
    assert sp["a"] == 1.0 and sp["b"] == pytest.approx(0.5) and sp["c"] == pytest.approx(2.0)
    with pytest.raises(KeyError):
        res.speedups("nope")
    assert all(isinstance(r, LatencyResult) for r in res.results.values())
    assert not any(r.is_active for r in runners.values())
    assert res.stats.rounds == 2 + 4 and res.stats.wall_s == pytest.approx(6 * 0.035)


def test_min_time_is_the_measured_time_of_all_runners_together():
    """A fast runner no longer drags every runner through thousands of rounds: 3 runners at 10/20/5 ms
    reach 100 ms of measured time together in 3 rounds (the old per-runner rule needed 20)."""
    clock = FakeClock()
    runners = {n: ScriptedRunner(n, clock, [ms]) for n, ms in (("a", 10.0), ("b", 20.0), ("c", 5.0))}
    cfg = BenchConfig(warmup_iters=0, warmup_s=0.07, min_iters=1, min_time_s=0.1, max_time_s=10)
    res = time_interleaved(runners, BATCH, [2], cfg, clock=clock, settle=no_settle)[2].results
    assert {n: (r.warmup, r.iterations) for n, r in res.items()} == {n: (2, 3) for n in "abc"}


def test_interleaved_runners_settle_before_each_step_untimed():
    """The wait for one runtime's spinning threads is outside the timed region, but inside the wall-clock budget."""
    clock = FakeClock()
    log: list[str] = []
    waits: list[float] = []

    def settle(previous_call_s):  # a 50 ms pause on the fake clock
        waits.append(previous_call_s)
        clock.now += 0.05
        return 0.05

    runners = {"a": ScriptedRunner("a", clock, [10.0], log), "b": ScriptedRunner("b", clock, [20.0], log)}
    cfg = BenchConfig(warmup_iters=1, warmup_s=0, min_iters=3, min_time_s=0, max_time_s=10)
    t = time_interleaved(runners, BATCH, [2], cfg, clock=clock, settle=settle)[2]
    assert len(waits) == 2 * (1 + 1 + 3)  # first, warm-up and measured calls, each runner
    assert waits[1:4] == pytest.approx([0.010, 0.020, 0.010])  # each wait is told how long the call before it took
    assert t.results["a"].samples_ms == pytest.approx([10.0] * 3) and t.results["b"].p50_ms == pytest.approx(20.0)
    assert t.stats.settle_s == pytest.approx(0.05 * 10)
    one = time_interleaved({"a": ScriptedRunner("a", clock, [10.0], log)}, BATCH, [2], cfg, clock=clock, settle=settle)[2]
    assert len(waits) == 10 and one.results["a"].iterations == 3  # a single runner needs no pause
    # the pauses count against max_time_s: rounds of (50 + 10 + 50 + 20) ms start at 0, 0.13 and 0.26 s, under 0.3 s
    capped = time_interleaved(runners, BATCH, [2], BenchConfig(warmup_iters=0, warmup_s=0, min_iters=100, min_time_s=0, max_time_s=0.3),
                              clock=clock, settle=settle)[2]
    assert capped.results["a"].iterations == 3 and capped.results["a"].capped


def test_session_tiles_the_inputs_to_each_batch_and_keeps_real_data():
    clock = FakeClock()
    seen = []

    class Recording(ScriptedRunner):
        def _infer(self, batch):
            seen.append(batch.copy())
            return super()._infer(batch)

    inputs = np.arange(3 * 3 * 4 * 4, dtype=np.float32).reshape(3, 3, 4, 4)
    cfg = BenchConfig(warmup_iters=0, warmup_s=0, min_iters=1, min_time_s=0)
    out = time_interleaved({"r": Recording("r", clock, [1.0])}, inputs, [1, 5], cfg, clock=clock)
    assert sorted(out) == [1, 5] and out[5].results["r"].batch == 5 and out[1].mode == "latency"
    five = next(b for b in seen if b.shape[0] == 5)
    assert np.array_equal(five[:3], inputs) and np.array_equal(five[3:], inputs[:2])


def test_export_latency_writes_the_report_keys():
    clock_e, clock_r = FakeClock(), FakeClock()
    # both runners on real time here: export's step uses the session's defaults
    out = export_latency(ScriptedRunner("engine", clock_e, [0.0]), ScriptedRunner("reference", clock_r, [0.0]), BATCH, 2, iterations=4)
    assert set(out) == {"latency", "reference_latency", "speedup_vs_reference"}
    assert REPORT_KEYS <= set(out["latency"]) and out["latency"]["iterations"] >= 4 and out["latency"]["batch"] == 2
    assert out["reference_latency"]["iterations"] == out["latency"]["iterations"]  # interleaved: equal counts
    assert out["speedup_vs_reference"] == pytest.approx(out["reference_latency"]["p50_ms"] / out["latency"]["p50_ms"], abs=1e-3)


def test_interleaved_needs_runners():
    with pytest.raises(UserError):
        time_interleaved({}, BATCH, [2], BenchConfig())


# -- the settle wait -------------------------------------------------------------------------------


class BusyProcess:
    """Fake clocks for the settle wait: sleeping advances the wall clock; 'worker threads' stay runnable
    until ``until_s`` and burn ``cores`` of CPU meanwhile."""

    def __init__(self, until_s: float, cores: float = 1.0, threads: int = 1) -> None:
        self.wall, self.cpu, self.until, self.cores, self.threads = 0.0, 0.0, until_s, cores, threads

    def sleep(self, s: float) -> None:
        self.cpu += max(0.0, min(self.wall + s, self.until) - self.wall) * self.cores
        self.wall += s

    def runnable(self) -> int:
        return self.threads if self.wall < self.until else 0

    def wait(self, cap_s: float, use_proc: bool = True) -> float:
        return wait_idle(cap_s, clock=lambda: self.wall, sleep=self.sleep, cpu_clock=lambda: self.cpu,
                         runnable=self.runnable if use_proc else (lambda: None))


def test_wait_idle_returns_once_the_threads_stop_spinning():
    assert 0.020 <= BusyProcess(until_s=0.020).wait(0.05) <= 0.0205  # one thread spinning for 20 ms after the call
    # a spinning thread pushed off its core by another process burns little CPU, but is still runnable
    assert 0.020 <= BusyProcess(until_s=0.020, cores=0.05).wait(0.05) <= 0.0205


def test_wait_idle_costs_nothing_when_nothing_spins_and_stops_at_its_cap():
    assert BusyProcess(until_s=0.0).wait(0.05) == 0.0
    assert BusyProcess(until_s=10.0, threads=3).wait(0.05) == pytest.approx(0.05)
    assert BusyProcess(until_s=10.0).wait(0.0) == 0.0


def test_wait_idle_without_proc_reads_the_cpu_time():
    assert 0.020 <= BusyProcess(until_s=0.020).wait(0.05, use_proc=False) <= 0.021  # one probe more to see it idle
    assert BusyProcess(until_s=1.0, cores=IDLE_CORES * 0.9).wait(0.05, use_proc=False) == pytest.approx(0.0005)
    assert BusyProcess(until_s=10.0, cores=2.0).wait(0.05, use_proc=False) == pytest.approx(0.05)


def test_runnable_threads_sees_a_busy_thread():
    import threading

    from coatnet_deploy.bench.harness import runnable_threads

    if runnable_threads() is None:
        pytest.skip("no /proc/self/task here")
    stop = threading.Event()
    worker = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])  # spins until stopped
    worker.start()
    try:
        assert any(runnable_threads() >= 1 for _ in range(50))
    finally:
        stop.set()
        worker.join()


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
    timing = time_interleaved(runners, x, [2], cfg)[2]
    res = timing.results
    for name, r in res.items():
        d = r.to_dict()
        assert REPORT_KEYS <= set(d)
        assert d["batch"] == 2 and d["iterations"] >= 5 and d["warmup"] >= 2
        assert d["load_time_s"] > 0 and d["first_inference_ms"] > 0
        assert d["min_ms"] <= d["p50_ms"] <= d["p90_ms"] <= d["p99_ms"] <= d["max_ms"]
        assert d["settings"]["threads"] == 1
    assert res["ov"].settings["inference_precision_effective"] == "f32"
    assert set(timing.speedups("torch")) == {"torch", "ort", "ov"}
    assert timing.stats.wall_s > 0 and timing.stats.settle_s >= 0


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


# -- what the output decides and shows -----------------------------------------------------------------


def test_fastest_passing_only_among_engines_that_passed():
    from coatnet_deploy.bench.ranking import fastest_line, fastest_passing

    rows = [{"name": "ort-fp32", "batch": 1, "status": "PASSED", "p50_ms": 3.0},
            {"name": "ov-int8", "batch": 1, "status": "PASSED", "p50_ms": 2.0},
            {"name": "ort-int8", "batch": 1, "status": "FAILED", "p50_ms": 1.0},
            {"name": "pytorch", "batch": 1, "status": None, "p50_ms": 0.5},
            {"name": "trt-fp32", "batch": 1, "status": "PASSED", "p50_ms": None},
            {"name": "ort-fp32", "batch": 8, "status": "PASSED", "p50_ms": 9.0},
            {"name": "ov-fp32", "batch": 8, "status": "PASSED", "p50_ms": 9.0},  # a tie keeps the first
            {"name": "ov-int8", "batch": 8, "status": "ERROR", "p50_ms": 4.0}]
    best = fastest_passing(rows, [1, 8, 16])
    assert best == {"1": "ov-int8", "8": "ort-fp32", "16": None}
    assert fastest_line(best) == "fastest passing engine: b1 ov-int8, b8 ort-fp32, b16 none"


def test_one_table_formatter_text_and_markdown():
    from coatnet_deploy.bench.tables import Table

    t = Table(["name", "kind", "ms"], [["a", "x|y", "1.5"], ["long-name", "z", "12.25"]], left=2)
    assert t.text().splitlines() == ["name       kind     ms",
                                     "---------  ----  -----",
                                     "a          x|y     1.5",
                                     "long-name  z     12.25"]
    assert t.markdown().splitlines() == ["| name | kind | ms |", "|---|---|---:|", "| a | x\\|y | 1.5 |", "| long-name | z | 12.25 |"]


def test_export_latency_step_through_the_session(tmp_path):
    """`export --bench-iterations N` times the engine and the reference through the one session."""
    import json

    from bundle_helpers import export_tiny

    bundle = export_tiny(tmp_path / "b", bench_iterations=3, golden_images=1, golden_random=1)
    report = json.loads((bundle / "report.json").read_text())
    lat, ref = report["latency"], report["reference_latency"]
    assert REPORT_KEYS <= set(lat) and REPORT_KEYS <= set(ref)
    assert lat["batch"] == ref["batch"] == 1 and lat["iterations"] == ref["iterations"] >= 3  # interleaved: equal counts
    assert report["speedup_vs_reference"] == pytest.approx(ref["p50_ms"] / lat["p50_ms"], abs=1e-3)
    assert lat["settings"]["framework"] == "onnxruntime" and ref["settings"]
