"""The Click CLI. Each command lives in its own thin module and calls library functions."""

from __future__ import annotations

import sys

import click

from coatnet_deploy import __version__
from coatnet_deploy.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="coatnet-deploy")
def cli():
    """Export CoAtNet image classifiers to ONNX Runtime, OpenVINO and TensorRT,
    and prove every artifact against the PyTorch reference."""


def _register():
    # Commands import their heavy dependencies inside the command body, so --help stays fast.
    from coatnet_deploy.cli import (  # noqa: F401  (registration side effects)
        bench_cmd,
        compare_cmd,
        export_cmd,
        inspect_cmd,
        matrix_cmd,
        models_cmd,
        parity_cmd,
        predict_cmd,
        targets_cmd,
        worker_cmd,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to the contract's exit codes."""
    _register()
    try:
        rv = cli.main(args=argv, prog_name="coatnet-deploy", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        # Click's usage errors exit 2 by default, which the contract reserves for failed gates.
        click.echo(f"error: {e.format_message()} (see '{_prog(e)} --help').", err=True)
        sys.exit(1)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


def _prog(e: click.ClickException) -> str:
    ctx = getattr(e, "ctx", None)
    return ctx.command_path if ctx is not None else "coatnet-deploy"
