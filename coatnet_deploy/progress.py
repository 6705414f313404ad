"""A one-line progress display on stderr for `bench` and `matrix`.

Quiet under ``--json`` and whenever stdout or stderr is not a terminal: progress is for a person
watching, and a pipe or a log file must only get the results. The line is rewritten in place
(``\\r``) and cleared when done, so the table that follows starts on a clean line.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


def interactive(stream: IO[str] | None = None) -> bool:
    """True when both stdout and ``stream`` (default stderr) are terminals."""
    stream = stream or sys.stderr
    try:
        return bool(sys.stdout.isatty() and stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams (pytest capture)
        return False


class ProgressLine:
    """A status line on stderr: ``say(text)`` replaces it, ``done()`` clears it.

    ``enabled=None`` decides by ``interactive()``; ``quiet=True`` (``--json``) always disables it.
    Redraws are rate-limited so a fast benchmark loop does not spend its time printing.
    """

    def __init__(self, enabled: bool | None = None, quiet: bool = False, stream: IO[str] | None = None,
                 min_interval_s: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.enabled = (not quiet) and (interactive(self.stream) if enabled is None else bool(enabled))
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._width = 0
        self.prefix = ""

    def say(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        line = (self.prefix + text)[:119]
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "ProgressLine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done()

    # -- adapters for the library callbacks -------------------------------------------------------
    def bench_callback(self, label: str = ""):
        """A ``bench.Progress`` callback ``(runner, phase, n)`` drawing '<label> runner: phase n', or None."""
        if not self.enabled:
            return None

        def progress(name: str, phase: str, n: int) -> None:
            self.say(f"{label}{name}: {phase} {n}")

        return progress

    def stage_callback(self, label: str = ""):
        """A ``pipeline.Progress`` callback ``(message)`` drawing '<label> message' (always a callable)."""
        def progress(message: str) -> None:
            self.say(f"{label}{message}", force=True)

        return progress


class stdout_to_stderr:
    """Send everything written to stdout (Python and C level, e.g. NNCF's logger and progress bars)
    to stderr for the duration, so stdout carries only the command's result (``--json``, the table)."""

    def __enter__(self) -> "stdout_to_stderr":
        import contextlib
        import os

        sys.stdout.flush()
        self._saved_fd = os.dup(1)
        os.dup2(2, 1)
        self._redirect = contextlib.redirect_stdout(sys.stderr)
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        import os

        self._redirect.__exit__(*exc)
        sys.stdout.flush()
        os.dup2(self._saved_fd, 1)
        os.close(self._saved_fd)
