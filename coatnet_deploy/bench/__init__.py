"""Timing: the harness, the one interleaved session, `bench` over bundles, the matrix, one table formatter.

- ``harness``: BenchConfig, LatencyResult, summarize, the round-robin loop and its stopping rules.
- ``session``: ``time_interleaved`` (export's latency step, `bench` and `matrix` all time through it).
- ``bundles``: the `bench` command (bundles, reference, baseline; report update).
- ``matrix``: the target x precision matrix (config, run, rows).
- ``ranking``: the fastest engine that passed its gates, per batch size.
- ``reference``: golden inputs and the PyTorch reference rebuilt from a manifest.
- ``tables``: aligned text and Markdown tables.
"""

from coatnet_deploy.bench.harness import NOISY_CV, BenchConfig, LatencyResult, summarize
from coatnet_deploy.bench.session import BatchTiming, export_latency, tile, time_interleaved

__all__ = ["NOISY_CV", "BatchTiming", "BenchConfig", "LatencyResult", "export_latency", "summarize", "tile", "time_interleaved"]
