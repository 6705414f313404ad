"""coatnet-deploy matrix: one model to every target x precision that runs here, checked and timed."""

from __future__ import annotations

import click

from coatnet_deploy import targets
from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option


def _list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@cli.command("matrix")
@click.option("--config", "config_file", type=str, help="Matrix YAML file, or a shipped one's name (matrix); flags override it.")
@click.option("--model", type=str, help="Variant from `coatnet-deploy models` (default coatnet_0_rw_224).")
@click.option("--weights", type=str, help=".safetensors or torch checkpoint; default seeded random init.")
@click.option("--num-classes", type=int, help="Head size (inferred from --weights).")
@click.option("--image-size", type=int, help="Square input size (default: the variant's).")
@click.option("--targets", "targets_", type=str, help=f"Comma-separated subset of {','.join(targets.names())} (default all).")
@click.option("--precisions", type=str, help="Comma-separated subset of fp32,fp16,int8,fp8 (default all that run here).")
@click.option("--eval-images", type=str, help="ImageFolder tree: adds each cell's top-1 accuracy drop.")
@click.option("--output", type=str, help="Directory for OUTPUT/<target>-<precision>/ and matrix.json/md (default bundles/matrix-<model>).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every runtime and the reference.")
@click.option("--iterations", type=click.IntRange(min=1), help="Measured iterations per engine and batch (default 10).")
@click.option("--models", type=str, help="Comma-separated variants: a fleet run of several models (each x every cell).")
@click.option("--devices", type=str, help="Comma-separated device profiles to prove each cell on (x86-64-v3, aarch64-v8.0, ...; "
              "gpu or gpu-ccX.Y for tensorrt). Default: the bundle's own profile.")
@click.option("--cluster", type=str, help="Ray address (HOST:PORT, ray://HOST:PORT, auto), or 'local' for a private Ray here. "
              "Needs the cluster extra.")
@click.option("--emulate-missing", is_flag=True, default=None, help="Cells whose profile no node offers run on an emulator node (QEMU).")
@click.option("--cell-timeout", type=click.FloatRange(min=1), help="Seconds each build and each device proof may run (default 3600).")
@json_option
def matrix_cmd(config_file, iterations, as_json, **flags):
    """Export one model to every target x precision that can run here, then time each engine
    interleaved with the PyTorch reference (p50 at batch 1, images/s at batch 8) and name the
    fastest engine that passed its gates at each.

    One failing cell does not stop the others; its row says why. Writes OUTPUT/matrix.json and
    OUTPUT/matrix.md with the same table. Exit 0 when every available cell passed its parity gates,
    2 when a gate failed, 1 when a cell errored.

    With --cluster, --devices or --models it is the fleet matrix: each cell (model x target x
    precision x device) is built on a builder node and proven (parity, predict, INT8 census, b1/b8
    timing) on a node that is, or emulates, its device; the table gains "ran on". Cells no node can
    take are NO NODE, cells whose node died LOST, refused bundles REFUSED: these exit 1.
    """
    from coatnet_deploy.bench.matrix import format_matrix, make_matrix_config, run_matrix
    from coatnet_deploy.progress import ProgressLine, stdout_to_stderr
    from coatnet_deploy.shipped import resolve_config

    flags["targets"], flags["precisions"] = _list(flags.pop("targets_")), _list(flags["precisions"])
    flags["models"], flags["devices"] = _list(flags["models"]), _list(flags["devices"])
    cfg = make_matrix_config(resolve_config(config_file, "matrix") if config_file else None, flags)
    if iterations is not None:
        cfg.bench = {**cfg.bench, "min_iters": iterations}
    if cfg.is_fleet:
        from coatnet_deploy.fleet.matrix import format_fleet, run_fleet

        with stdout_to_stderr():
            result = run_fleet(cfg, say=None if as_json else (lambda line: click.echo(line, err=True)))
        return _emit(result, as_json, format_fleet, "matrix.md and matrix.html")
    # exporters (NNCF) log to stdout; stdout is for the table / JSON only
    with ProgressLine(quiet=as_json) as progress, stdout_to_stderr():
        result = run_matrix(cfg, progress=progress)
    return _emit(result, as_json, format_matrix, "matrix.md")


def _emit(result, as_json: bool, text, also: str) -> int:
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(text(result))
        click.echo(f"wrote {result.output / 'matrix.json'} and {also}")
    return result.exit_code
