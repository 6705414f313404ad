"""coatnet-deploy predict: classify images with a bundle (the device runtime, no PyTorch)."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option
from coatnet_deploy.errors import EXIT_OK


@cli.command("predict")
@click.argument("bundle", type=str)
@click.argument("images", nargs=-1, required=True, type=str)
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True, help="Classes listed per image.")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads (default: the runtime's choice).")
@click.option("--any-cpu", is_flag=True, help="Run a bundle whose device profile needs what this CPU lacks (refused otherwise, exit 3).")
@json_option
def predict_cmd(bundle, images, topk, threads, any_cpu, as_json):
    """Verify BUNDLE, preprocess each IMAGE as its manifest says, print the top-k classes.

    Every image is read before any inference, so a bad file fails the command (exit 1) naming it.
    """
    from coatnet_deploy.runtime import Classifier

    with Classifier.load(bundle, threads=threads, any_cpu=any_cpu) as clf:
        # All images first: one unreadable file must not leave half the answers printed.
        arrays = [clf.preprocess(path, name=path) for path in images]
        import numpy as np

        results = clf.classify_batch(np.stack(arrays), topk=topk)
        if clf.status and clf.status != "PASSED":
            click.echo(f"warning: bundle '{bundle}' status is {clf.status} (a parity gate failed at export)", err=True)
        if as_json:
            emit_json({"bundle": bundle, "runs": clf.runs, "status": clf.status,
                       "predictions": [{"image": path, "topk": [p.to_dict() for p in preds]} for path, preds in zip(images, results)]})
            return EXIT_OK
        for path, preds in zip(images, results):
            click.echo(path)
            for p in preds:
                click.echo(f"  {p.prob:8.4f}  {p.index:>5d}  {p.label}")
    return EXIT_OK
