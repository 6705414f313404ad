"""coatnet-deploy bench: time bundles with the one harness, interleaved, on the same inputs."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option
from coatnet_deploy.errors import EXIT_OK


@cli.command("bench")
@click.argument("bundles", nargs=-1, required=True, type=str)
@click.option("--batch", "batch", default="1,8", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Warm-up iterations (at least).")
@click.option("--warmup-time", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Warm-up seconds (at least; all runners' calls together).")
@click.option("--iterations", type=click.IntRange(min=1), default=20, show_default=True, help="Measured iterations per runner (at least).")
@click.option("--min-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Measured seconds (at least; all runners' calls together).")
@click.option("--max-time", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Wall-clock limit per batch size (warm-up + measurement, all runners); the result says when it cut the run short.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every runtime and the reference (default: each runtime's choice).")
@click.option("--mode", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="latency: one request at a time; throughput: several requests in flight where the runtime has an "
                   "async queue and a throughput hint (each row's settings say what ran).")
@click.option("--reference", is_flag=True, help="Also time the PyTorch model rebuilt from the manifest; adds speed-ups vs it.")
@click.option("--weights", type=str, help="With --reference: the weights the bundle was exported from (SHA-256 checked).")
@click.option("--baseline", type=str, help="Another bundle, timed in the same interleaved run; adds speed-ups vs it.")
@click.option("--update-report", is_flag=True, help="Write the latency (first batch size) into each bundle's report.json/md/html.")
@json_option
def bench_cmd(bundles, batch, warmup, warmup_time, iterations, min_time, max_time, threads, mode, reference, weights, baseline,
              update_report, as_json):
    """Time one or more BUNDLEs round-robin at each batch size, on their golden inputs tiled to the batch.

    Every bundle is verified first (checksums). Speed-ups are medians from the same interleaved run,
    never from an older file. A runner whose coefficient of variation is above 0.1 is flagged noisy (!).
    The last line names the fastest bundle that passed its gates at each batch size.
    """
    from coatnet_deploy.bench import BenchConfig
    from coatnet_deploy.bench.bundles import BenchSpec, bench_bundles, format_bench, parse_batches, update_reports
    from coatnet_deploy.progress import ProgressLine

    cfg = BenchConfig(warmup_iters=warmup, warmup_s=warmup_time, min_iters=iterations, min_time_s=min_time,
                      max_time_s=max(max_time, min_time), mode=mode)
    spec = BenchSpec(batches=parse_batches(batch), config=cfg, threads=threads, reference=reference, weights=weights, baseline=baseline)
    with ProgressLine(quiet=as_json) as progress:
        result = bench_bundles(list(bundles), spec, progress=progress)
    if update_report:
        result["updated_reports"] = update_reports(result)
    if as_json:
        emit_json(result)
        return EXIT_OK
    click.echo(format_bench(result))
    for path in result.get("updated_reports", []):
        click.echo(f"updated {path}/report.json (+ md, html, manifest checksums)")
    return EXIT_OK
