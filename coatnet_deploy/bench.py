"""The latency harness, written once over the Runner interface.

How a measurement goes (after trtexec and benchmark_app):

1. ``load_time_s``: activation (session creation / compilation), timed by the Runner itself.
2. ``first_inference_ms``: one untimed-for-statistics inference, reported on its own; it carries
   lazy allocation and kernel selection.
3. Warm-up, until BOTH ``warmup_iters`` runs and ``warmup_s`` seconds are done.
4. Steady state, until BOTH ``min_iters`` runs and ``min_time_s`` seconds are done, but never
   longer than ``max_time_s`` (then the result says it was capped).

Latency mode: each sample is the wall time of one ``infer(batch)`` call. Throughput mode: each
sample is the wall time of ``infer_async_batch`` over ``async_batches`` copies of the batch divided
by ``async_batches`` (the effective time per batch while the runtime overlaps requests).
In both modes ``throughput_ips = batch * 1000 / p50_ms``: images per second at the median
per-batch time, so one slow outlier does not move it.

``compare_interleaved`` measures several runners in one run, round-robin (A B C A B C ...), so
drift on a shared machine (thermal, other jobs) hits all of them alike; the baseline is always
measured in the same run as what it is compared with.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.errors import UserError

#: above this coefficient of variation a result is flagged noisy (trtexec warns likewise)
NOISY_CV = 0.1
MODES = ("latency", "throughput")

#: progress(runner_name, phase, iterations_done); phase is "first", "warmup" or "measure"
Progress = Callable[[str, str, int], None]


@dataclass
class BenchConfig:
    """How long to warm up and measure. Both the count and the time must be met."""

    warmup_iters: int = 5
    warmup_s: float = 0.2
    min_iters: int = 20
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    mode: str = "latency"
    async_batches: int = 8
    # Pause between two different runners in an interleaved run. Runtimes keep their worker threads
    # spinning for a while after a call (ONNX Runtime's intra-op pool does); on a 2-core machine the
    # next runner then shares the cores with that spin and looks up to 30% slower than it is.
    settle_s: float = 0.05

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown benchmark mode '{self.mode}'", None, f"use one of: {', '.join(MODES)}")
        for key in ("warmup_iters", "min_iters", "async_batches"):
            if int(getattr(self, key)) < (1 if key != "warmup_iters" else 0):
                raise UserError(f"benchmark {key} must be positive, got {getattr(self, key)}")
        for key in ("warmup_s", "min_time_s", "max_time_s", "settle_s"):
            if float(getattr(self, key)) < 0:
                raise UserError(f"benchmark {key} must be >= 0, got {getattr(self, key)}")
        if self.max_time_s < self.min_time_s:
            raise UserError(
                f"benchmark max_time_s ({self.max_time_s}) is below min_time_s ({self.min_time_s})",
                None,
                "raise max_time_s",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LatencyResult:
    """Statistics of one runner at one batch size (times in ms unless the name says otherwise)."""

    batch: int
    warmup: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv: float
    throughput_ips: float
    first_inference_ms: float | None = None
    load_time_s: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    mode: str = "latency"
    capped: bool = False
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def noisy(self) -> bool:
        return self.cv > NOISY_CV

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["noisy"] = self.noisy
        d["samples_ms"] = [round(x, 4) for x in self.samples_ms]
        d["threads"] = self.settings.get("threads")
        return d

    def __str__(self) -> str:
        return (
            f"batch {self.batch}: p50 {self.p50_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, "
            f"{self.throughput_ips:.1f} img/s ({self.iterations} iterations, cv {self.cv:.3f})"
        )


def summarize(samples_ms: list[float] | np.ndarray, batch: int, warmup: int = 0, **extra: Any) -> LatencyResult:
    """Per-batch times in ms -> LatencyResult.

    Percentiles interpolate linearly (numpy's default); std is the population std (ddof=0);
    cv = std / mean; throughput_ips = batch * 1000 / p50_ms. A cv above ``NOISY_CV`` adds a warning.
    """
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no samples to summarize")
    p50, p90, p99 = (float(v) for v in np.percentile(s, [50, 90, 99]))
    mean = float(s.mean())
    std = float(s.std())
    cv = std / mean if mean > 0 else math.inf
    result = LatencyResult(
        batch=int(batch),
        warmup=int(warmup),
        iterations=int(s.size),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=mean,
        min_ms=float(s.min()),
        max_ms=float(s.max()),
        std_ms=std,
        cv=cv,
        throughput_ips=batch * 1000.0 / p50 if p50 > 0 else math.inf,
        samples_ms=[float(x) for x in s],
        **extra,
    )
    if result.noisy:
        result.warnings.append(
            f"noisy measurement: coefficient of variation {cv:.2f} > {NOISY_CV} "
            "(other load on the machine?); compare medians from an interleaved run, or measure longer"
        )
    if result.capped:
        result.warnings.append(
            f"stopped at max_time_s after {result.iterations} iterations, before the minimum count or time"
        )
    return result


class _Timed:
    """One runner's state inside a measurement."""

    def __init__(self, name: str, runner: Runner, batch: np.ndarray, cfg: BenchConfig, clock: Callable[[], float]):
        self.name, self.runner, self.batch, self.cfg, self.clock = name, runner, batch, cfg, clock
        self.batches = [batch] * cfg.async_batches if cfg.mode == "throughput" else None
        self.first_ms: float | None = None
        self.warmup = 0
        self.warm_s = 0.0
        self.samples: list[float] = []
        self.measured_s = 0.0

    def step(self, phase: str) -> None:
        """One timed call; the sample is ms per batch."""
        t0 = self.clock()
        if self.batches is not None:
            self.runner.infer_async_batch(self.batches)
        else:
            self.runner.infer(self.batch)
        spent = self.clock() - t0
        ms = spent * 1000.0 / (len(self.batches) if self.batches is not None else 1)
        if phase == "first":
            self.first_ms = ms
        elif phase == "warmup":
            self.warmup += 1
            self.warm_s += spent
        else:
            self.samples.append(ms)
            self.measured_s += spent

    def warm_done(self) -> bool:
        return self.warmup >= self.cfg.warmup_iters and self.warm_s >= self.cfg.warmup_s

    def measure_done(self) -> bool:
        return len(self.samples) >= self.cfg.min_iters and self.measured_s >= self.cfg.min_time_s

    def result(self, capped: bool) -> LatencyResult:
        settings = self.runner.settings()
        result = summarize(
            self.samples,
            batch=int(self.batch.shape[0]),
            warmup=self.warmup,
            first_inference_ms=self.first_ms,
            load_time_s=self.runner.load_time_s,
            mode=self.cfg.mode,
            capped=capped,
            settings=settings,
        )
        # a runner's own caveats (e.g. OpenVINO ran f32 although f16 was asked) belong next to its numbers
        result.warnings.extend(settings.get("warnings", []))
        return result


def _run(
    runners: dict[str, Runner],
    batch: np.ndarray,
    cfg: BenchConfig,
    progress: Progress | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, LatencyResult]:
    if not runners:
        raise UserError("nothing to benchmark", "no runners were given")
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    states = [_Timed(name, r, batch, cfg, clock) for name, r in runners.items()]
    activated = []
    try:
        for st in states:
            if not st.runner.is_active:
                st.runner.activate()
                activated.append(st.runner)

        def round_robin(phase: str, done: Callable[[_Timed], bool], budget_s: float) -> bool:
            """Rounds of one step per runner until every runner is done; True if capped."""
            start = clock()
            while not all(done(st) for st in states):
                if clock() - start >= budget_s:
                    return True
                for st in states:
                    if len(states) > 1 and cfg.settle_s > 0:
                        sleep(cfg.settle_s)
                    st.step(phase)
                    if progress is not None:
                        progress(st.name, phase, st.warmup if phase == "warmup" else len(st.samples))
            return False

        for st in states:
            st.step("first")
            if progress is not None:
                progress(st.name, "first", 1)
        # the warm-up's own cap is the same as the measurement's: a runner that never warms up
        # in max_time_s is measured anyway, and says so through its cv
        round_robin("warmup", _Timed.warm_done, cfg.max_time_s * len(states))
        # max_time_s is per runner, so n interleaved runners may take n times as long
        capped = round_robin("measure", _Timed.measure_done, cfg.max_time_s * len(states))
        if not all(st.samples for st in states):  # max_time_s == 0: still one sample each
            for st in states:
                st.step("measure")
        return {st.name: st.result(capped) for st in states}
    finally:
        for r in activated:
            r.deactivate()


def measure(
    runner: Runner,
    batch: np.ndarray,
    cfg: BenchConfig | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyResult:
    """Time one runner on one batch -> LatencyResult (see the module docstring for the phases).

    A runner that is not active is activated here (its load time reported) and deactivated after.
    ``clock`` returns seconds; tests pass a fake one.
    """
    cfg = cfg or BenchConfig()
    return _run({runner.name: runner}, batch, cfg, progress, clock)[runner.name]


def compare_interleaved(
    runners: dict[str, Runner],
    batch: np.ndarray,
    cfg: BenchConfig | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, LatencyResult]:
    """Time several runners round-robin (A B C A B C ...) on one batch -> {name: LatencyResult}.

    Every runner gets the same number of warm-up and measured iterations; measurement goes on
    until every runner has met min_iters and min_time_s (or max_time_s per runner runs out).
    ``cfg.settle_s`` passes (untimed) before each step, so one runtime's idle spinning threads do
    not slow the next runner down.
    """
    cfg = cfg or BenchConfig()
    return _run(dict(runners), batch, cfg, progress, clock, sleep)


def ratios(results: dict[str, LatencyResult], baseline_name: str) -> dict[str, dict[str, float]]:
    """{name: {p50_ratio, mean_ratio, speedup}} against ``baseline_name``.

    ``p50_ratio`` = p50 / baseline p50 (0.76 means 0.76x the baseline's time);
    ``speedup`` = baseline p50 / p50 (1.3 means 1.3x faster).
    """
    if baseline_name not in results:
        raise UserError(
            f"baseline '{baseline_name}' was not measured",
            None,
            f"use one of: {', '.join(results)}",
        )
    base = results[baseline_name]
    return {
        name: {
            "p50_ratio": r.p50_ms / base.p50_ms,
            "mean_ratio": r.mean_ms / base.mean_ms,
            "speedup": base.p50_ms / r.p50_ms,
        }
        for name, r in results.items()
    }
