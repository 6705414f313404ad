"""coatnet-deploy compare: regression of a new bundle against the one on the devices."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option, progress_printer
from coatnet_deploy.errors import EXIT_GATE_FAILED, EXIT_OK
from coatnet_deploy.regression import DEFAULT_MAX_DISAGREEMENT, DEFAULT_MAX_DROP, DEFAULT_MAX_SLOWDOWN


@cli.command("compare")
@click.argument("old", type=str)
@click.argument("new", type=str)
@click.option("--images", type=str, help="Folder of images both engines also classify (each preprocessed as its bundle says).")
@click.option("--eval-images", type=str, help="ImageFolder tree: both engines' top-1 and the drop.")
@click.option("--max-disagreement", type=click.FloatRange(min=0, max=1), default=DEFAULT_MAX_DISAGREEMENT, show_default=True,
              help="Budget: share of real images whose top-1 differs between the engines.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=DEFAULT_MAX_DROP, show_default=True,
              help="Budget: top-1 accuracy drop on --eval-images, in points.")
@click.option("--max-slowdown", type=click.FloatRange(min=0), default=DEFAULT_MAX_SLOWDOWN, show_default=True,
              help="Budget: new p50 / old p50 at each timed batch size.")
@click.option("--batch", "batch", default="1,8", show_default=True, help="Batch sizes timed, comma-separated.")
@click.option("--min-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Measured seconds per batch size (both engines together).")
@click.option("--max-time", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Wall-clock limit per batch size (warm-up and waits included); the result says when it cut the run short.")
@click.option("--warmup-time", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Warm-up seconds per batch size (both engines' calls together), after 5 calls each.")
@click.option("--no-timing", is_flag=True, help="Skip latency (agreement, references and accuracy only).")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads (default: each runtime's choice).")
@click.option("--output", type=str, help="Folder for compare.json, compare.md, compare.html (default: compare-OLD-vs-NEW).")
@click.option("--any-cpu", is_flag=True, help="Run bundles whose device profile needs what this CPU lacks.")
@json_option
def compare_cmd(old, new, images, eval_images, max_disagreement, max_drop, max_slowdown, batch, min_time, max_time, warmup_time,
                no_timing, threads,
                output, any_cpu, as_json):
    """Compare bundle NEW against bundle OLD of the same task: both engines on the same inputs (both golden
    sets + --images), each against its own reference, accuracy (--eval-images), latency interleaved, size,
    and what the manifests say differently. Torch-free.

    Exit 0 within every budget, 2 when one is exceeded (or NEW fails its own gates here), 1 for bad input,
    3 when an engine cannot run here.
    """
    from pathlib import Path

    from coatnet_deploy.api import compare_bundles
    from coatnet_deploy.bench.bundles import parse_batches

    out = output or f"compare-{Path(old).resolve().name}-vs-{Path(new).resolve().name}"
    result = compare_bundles(old, new, images=images, eval_images=eval_images, max_disagreement=max_disagreement,
                             max_drop=max_drop, max_slowdown=max_slowdown, batches=parse_batches(batch), min_time_s=min_time, max_time_s=max_time,
                             warmup_s=warmup_time,
                             timing=not no_timing, threads=threads, output=out, any_cpu=any_cpu,
                             progress=progress_printer(not as_json))
    if as_json:
        emit_json({**result.data, "files": [str(p) for p in result.files]})
    else:
        from coatnet_deploy.regression import summary_lines

        for line in summary_lines(result.data):
            click.echo(line)
        click.echo(f"  report     {', '.join(str(p) for p in result.files)}")
    return EXIT_OK if result.passed else EXIT_GATE_FAILED
