"""The latency harness, written once over the Runner interface: settings, statistics, the round-robin loop.

How one batch size is timed (after trtexec and benchmark_app), for one runner or several round-robin
(A B C A B C ...), so drift on a shared machine (thermal, other jobs) hits all of them alike:

1. ``load_time_s``: activation (session creation / compilation), timed by the Runner itself.
2. ``first_inference_ms``: one call per runner, reported on its own; it carries lazy allocation and
   kernel selection.
3. Warm-up rounds until every runner has ``warmup_iters`` calls AND the warm-up calls add up to
   ``warmup_s`` seconds.
4. Measured rounds until every runner has ``min_iters`` samples AND the measured calls add up to
   ``min_time_s`` seconds (the sums run over all runners: for one runner it is its own time).
5. ``max_time_s`` bounds steps 3 and 4 together in wall-clock time, pauses included. When it stops
   the run early, each result says which minimum was not reached (and ``capped`` is true).

Before each timed call of an interleaved run the harness waits, untimed, until the previous call's
runtime stops spinning its worker threads (see ``wait_idle``): on a 2-core machine a runtime that
keeps spinning after its call makes the next runner look up to 30% slower than it is.

Latency mode: each sample is the wall time of one ``infer(batch)`` call. Throughput mode: each
sample is the wall time of ``infer_async_batch`` over ``async_batches`` copies of the batch divided
by ``async_batches`` (the effective time per batch while the runtime overlaps requests).
In both modes ``throughput_ips = batch * 1000 / p50_ms``: images per second at the median
per-batch time, so one slow outlier does not move it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.errors import UserError
from coatnet_deploy.fields import Field, check_fields

#: above this coefficient of variation a result is flagged noisy (trtexec warns likewise)
NOISY_CV = 0.1
MODES = ("latency", "throughput")

#: progress(runner_name, phase, iterations_done); phase is "first", "warmup" or "measure"
Progress = Callable[[str, str, int], None]
Clock = Callable[[], float]

#: the harness settings, validated by the one config validator (BenchConfig, the matrix's ``bench:``)
BENCH_FIELDS: dict[str, Field] = {
    "warmup_iters": Field((int,), "warm-up calls per runner, at least", minimum=0),
    "warmup_s": Field((float, int), "warm-up seconds (all runners' calls together), at least", minimum=0),
    "min_iters": Field((int,), "measured calls per runner, at least", minimum=1),
    "min_time_s": Field((float, int), "measured seconds (all runners' calls together), at least", minimum=0),
    "max_time_s": Field((float, int), "wall-clock limit for warm-up + measurement at one batch size", minimum=0),
    "mode": Field((str,), "latency | throughput", choices=MODES),
    "async_batches": Field((int,), "throughput mode: batches in flight per sample", minimum=1),
    "settle_s": Field((float, int), "longest untimed wait for the previous runtime's threads to go idle", minimum=0),
}


@dataclass
class BenchConfig:
    """How long to warm up and measure (see the module docstring). Counts and times must both be met."""

    warmup_iters: int = 5
    warmup_s: float = 0.2
    min_iters: int = 20
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    mode: str = "latency"
    async_batches: int = 8
    settle_s: float = 0.05

    def __post_init__(self) -> None:
        check_fields(asdict(self), BENCH_FIELDS, "benchmark settings")
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
    return result


# -- settling between runners ----------------------------------------------------------------------

#: how often the settle wait looks again
IDLE_PROBE_S = 0.0005
#: without /proc: below this many busy cores (all threads of this process) the process counts as idle
IDLE_CORES = 0.25


def runnable_threads() -> int | None:
    """How many of this process's threads, the caller's aside, are running or waiting for a core (Linux
    /proc state R) -> count; None where /proc cannot say."""
    me = threading.get_native_id()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    n = 0
    for t in tids:
        if t == str(me):
            continue
        try:
            with open(f"/proc/self/task/{t}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        end = stat.rfind(b")")  # the state follows the command name, which may hold spaces
        n += stat[end + 2:end + 3] == b"R"
    return n


def wait_idle(cap_s: float, clock: Clock = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
              runnable: Callable[[], int | None] = runnable_threads, cpu_clock: Clock = time.process_time) -> float:
    """Wait until no other thread of this process is running or runnable, at most ``cap_s`` -> seconds waited.

    What still runs while the caller waits is a runtime's worker pool spinning for work after its call
    returned: ONNX Runtime's for tens of ms, OpenMP's (torch) and TBB's (OpenVINO) for a few. The thread
    state counts a spinning thread that another process has pushed off its core, which the CPU time it
    burns does not; where /proc cannot say, under ``IDLE_CORES`` busy cores over one probe counts as idle.
    """
    start = clock()
    while clock() - start < cap_s:
        busy = runnable()
        if busy == 0:
            break
        c0, w0 = cpu_clock(), clock()
        sleep(min(IDLE_PROBE_S, max(cap_s - (w0 - start), 0.0)))
        elapsed = clock() - w0
        if busy is None and elapsed > 0 and (cpu_clock() - c0) / elapsed < IDLE_CORES:
            break
    return clock() - start


# -- the round-robin loop ----------------------------------------------------------------------------

class _Timed:
    """One runner's state inside a measurement."""

    def __init__(self, name: str, runner: Runner, batch: np.ndarray, cfg: BenchConfig, clock: Clock):
        self.name, self.runner, self.batch, self.cfg, self.clock = name, runner, batch, cfg, clock
        self.batches = [batch] * cfg.async_batches if cfg.mode == "throughput" else None
        self.first_ms: float | None = None
        self.warmup = 0
        self.warm_s = 0.0
        self.samples: list[float] = []
        self.measured_s = 0.0
        self.capped = False
        self.warnings: list[str] = []

    def step(self, phase: str) -> float:
        """One timed call -> its seconds; the sample is ms per batch."""
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
        return spent

    def result(self) -> LatencyResult:
        settings = self.runner.settings()
        result = summarize(
            self.samples,
            batch=int(self.batch.shape[0]),
            warmup=self.warmup,
            first_inference_ms=self.first_ms,
            load_time_s=self.runner.load_time_s,
            mode=self.cfg.mode,
            capped=self.capped,
            settings=settings,
        )
        result.warnings.extend(self.warnings)
        # a runner's own caveats (e.g. OpenVINO ran f32 although f16 was asked) belong next to its numbers
        result.warnings.extend(settings.get("warnings", []))
        return result


def _missing(states: list[_Timed], phase: str, cfg: BenchConfig) -> list[str]:
    """The minimums of a phase not reached yet, in words ([] = the phase is done)."""
    if phase == "warmup":
        n, t = min(s.warmup for s in states), sum(s.warm_s for s in states)
        (n_key, min_n), (t_key, min_t) = ("warmup_iters", cfg.warmup_iters), ("warmup_s", cfg.warmup_s)
    else:
        n, t = min(len(s.samples) for s in states), sum(s.measured_s for s in states)
        (n_key, min_n), (t_key, min_t) = ("min_iters", cfg.min_iters), ("min_time_s", cfg.min_time_s)
    out = []
    if n < min_n:
        out.append(f"{n_key} {min_n} not reached ({n} done)")
    if t < min_t:
        out.append(f"{t_key} {min_t:g} s not reached ({t:.2f} s timed)")
    return out


@dataclass
class RunStats:
    """What one batch size cost: wall seconds from the first inference on, seconds spent settling, rounds."""

    wall_s: float = 0.0
    settle_s: float = 0.0
    rounds: int = 0


def run_interleaved(
    runners: dict[str, Runner],
    batch: np.ndarray,
    cfg: BenchConfig,
    progress: Progress | None = None,
    clock: Clock = time.perf_counter,
    settle: Callable[[float], float] | None = None,
) -> tuple[dict[str, LatencyResult], RunStats]:
    """Time ACTIVE runners round-robin on one batch -> ({name: LatencyResult}, RunStats).

    ``settle(previous_call_s)`` runs (untimed) before each call when there are several runners and
    returns the seconds it waited; the default is ``wait_idle(cfg.settle_s)`` on the real clocks. ``clock``
    returns seconds and decides the stopping rules; tests pass fake ones for both.
    """
    if not runners:
        raise UserError("nothing to benchmark", "no runners were given")
    if settle is None:
        def settle(previous_call_s: float) -> float:
            return wait_idle(cfg.settle_s)
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    states = [_Timed(name, r, batch, cfg, clock) for name, r in runners.items()]
    stats = RunStats()
    last_call_s = [0.0]

    def one_round(phase: str) -> None:
        for st in states:
            if len(states) > 1:
                stats.settle_s += settle(last_call_s[0])
            last_call_s[0] = st.step(phase)
            if progress is not None:
                progress(st.name, phase, {"first": 1, "warmup": st.warmup}.get(phase, len(st.samples)))
        stats.rounds += phase != "first"

    one_round("first")
    start = clock()
    for phase in ("warmup", "measure"):
        while _missing(states, phase, cfg) and clock() - start < cfg.max_time_s:
            one_round(phase)
        if phase == "measure" and not states[0].samples:  # out of time before measuring: still one sample each
            one_round(phase)
        missing = _missing(states, phase, cfg)
        if missing:
            done = min(st.warmup for st in states) if phase == "warmup" else min(len(st.samples) for st in states)
            what = "warm-up" if phase == "warmup" else "measurement"
            warning = (f"{what} stopped at max_time_s ({cfg.max_time_s:g} s of wall clock for {len(states)} runner(s), "
                       f"warm-up included) after {done} iterations each: {'; '.join(missing)}")
            for st in states:
                st.capped = True
                st.warnings.append(warning)
    stats.wall_s = clock() - start
    return {st.name: st.result() for st in states}, stats
