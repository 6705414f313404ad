"""The one interleaved timing session: export's latency step, `bench` and `matrix` all time through it.

``time_interleaved(runners, inputs, batches, config)`` activates what is not active yet, then for each
batch size tiles the same real inputs to that batch and times every runner round-robin with the
harness (``harness.run_interleaved``). Ratios are only taken between results of one session:
a baseline from an old file saw another machine state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.bench.harness import BenchConfig, Clock, LatencyResult, RunStats, run_interleaved


def tile(inputs: np.ndarray, batch: int) -> np.ndarray:
    """Inputs repeated (or cut) to exactly ``batch`` samples: real data, any batch size."""
    return np.ascontiguousarray(np.resize(inputs, (batch,) + inputs.shape[1:]), dtype=np.float32)


@dataclass
class BatchTiming:
    """One batch size of a session: every runner's result, and what the timing cost."""

    batch: int
    mode: str
    results: dict[str, LatencyResult]
    stats: RunStats

    def speedups(self, baseline: str) -> dict[str, float | None]:
        """{runner: baseline p50 / its p50} (1.3 = 1.3x faster than ``baseline``); None where a p50 is 0."""
        base = self.results[baseline].p50_ms
        return {name: (base / r.p50_ms if r.p50_ms > 0 else None) for name, r in self.results.items()}


def time_interleaved(
    runners: Mapping[str, Runner],
    inputs: np.ndarray,
    batches: Iterable[int],
    config: BenchConfig,
    progress: Any = None,
    *,
    clock: Clock = time.perf_counter,
    settle=None,
) -> dict[int, BatchTiming]:
    """Time ``runners`` round-robin at each batch size on ``inputs`` tiled to it -> {batch: BatchTiming}.

    A runner that is not active is activated here (its load time reported) and deactivated after;
    an active one stays active. ``progress`` is a ``progress.ProgressLine`` (or None); ``clock`` and
    ``settle`` go to ``harness.run_interleaved`` (tests pass fake ones).
    """
    runners = dict(runners)
    activated = []
    try:
        for r in runners.values():
            if not r.is_active:
                r.activate()
                activated.append(r)
        out = {}
        for b in batches:
            cb = progress.bench_callback(f"batch {b} ({config.mode}): ") if progress is not None else None
            results, stats = run_interleaved(runners, tile(inputs, b), config, progress=cb, clock=clock, settle=settle)
            out[int(b)] = BatchTiming(int(b), config.mode, results, stats)
        return out
    finally:
        for r in activated:
            r.deactivate()


def export_latency(engine: Runner | None, reference: Runner, inputs: np.ndarray, batch: int, iterations: int) -> dict[str, Any]:
    """The export's latency step: the engine (None: not runnable here, the reference alone) and the
    reference interleaved at ``batch``, ``iterations`` samples each -> the report keys ``latency``
    (None without an engine), ``reference_latency`` and ``speedup_vs_reference``."""
    cfg = BenchConfig(warmup_iters=3, warmup_s=0.0, min_iters=iterations, min_time_s=0.0, max_time_s=max(60.0, 4.0 * iterations))
    runners = {"reference": reference} if engine is None else {"engine": engine, "reference": reference}
    timing = time_interleaved(runners, inputs, [batch], cfg)[batch]
    speedup = timing.speedups("reference").get("engine")
    return {"latency": timing.results["engine"].to_dict() if engine is not None else None,
            "reference_latency": timing.results["reference"].to_dict(),
            "speedup_vs_reference": round(speedup, 3) if speedup is not None else None}
