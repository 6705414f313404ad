"""Which engine to deploy: the fastest one that passes its gates, at each batch size."""

from __future__ import annotations

from typing import Iterable, Mapping


def fastest_passing(candidates: Iterable[Mapping], batches: Iterable[int]) -> dict[str, str | None]:
    """Rows {name, batch, status, p50_ms} -> {str(batch): name of the lowest p50 among PASSED rows, or None}.

    Only an engine whose bundle passed its gates is a candidate (FAILED, ERROR, an unknown status and the
    reference are not); a row without a p50 was not timed. Ties keep the first row given.
    """
    best: dict[int, tuple[float, str]] = {}
    for row in candidates:
        if row.get("status") != "PASSED" or row.get("p50_ms") is None:
            continue
        b, p50 = int(row["batch"]), float(row["p50_ms"])
        if b not in best or p50 < best[b][0]:
            best[b] = (p50, str(row["name"]))
    return {str(b): (best[int(b)][1] if int(b) in best else None) for b in batches}


def fastest_line(fastest: Mapping[str, str | None]) -> str:
    """The text output's line: 'fastest passing engine: b1 openvino-int8, b8 none'."""
    return "fastest passing engine: " + ", ".join(f"b{b} {name or 'none'}" for b, name in fastest.items())
