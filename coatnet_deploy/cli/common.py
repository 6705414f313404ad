"""Small helpers shared by the CLI commands: JSON output and stderr progress."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout, nothing else there.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def progress_printer(enabled: bool):
    """Stage progress on stderr (stdout stays clean for --json and pipes)."""
    if not enabled:
        return None

    def say(msg: str) -> None:
        click.echo(msg, err=True)
        sys.stderr.flush()

    return say
