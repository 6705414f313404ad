"""The one user-error type, caught once at the CLI entry and printed as one line."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an impossible request: what went wrong, why, and how to fix it.

    The CLI prints ``str(err)`` as one line on stderr and exits with ``exit_code``.
    Anything that is not a UserError is a bug and keeps its traceback.
    """

    exit_code = 1

    def __init__(self, what: str, why: str | None = None, fix: str | None = None):
        self.what, self.why, self.fix = what, why, fix
        parts = [what.rstrip(".")]
        if why:
            parts.append(why.rstrip("."))
        if fix:
            fix = fix.rstrip(".")
            parts.append(fix[:1].upper() + fix[1:])
        super().__init__(": ".join(parts[:2]) + (f". {parts[2]}" if len(parts) > 2 else "") + ".")


class TargetUnavailable(UserError):
    """The target cannot run on this machine (exit 3), e.g. TensorRT without an NVIDIA GPU."""

    exit_code = 3


# Exit codes from ../shared/design/CONTRACT.md
EXIT_OK = 0
EXIT_USER = 1
EXIT_GATE_FAILED = 2
EXIT_UNAVAILABLE = 3
