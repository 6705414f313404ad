"""examples/ci/export-and-compare.yml: its `export` and `compare` steps, run as GitHub Actions would run
them (bash, the workflow's env with paths pointing here), against a "released" bundle: the same
checkpoint passes, a checkpoint whose classes moved fails the job (exit 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bundle_helpers import REPO
from timm_fixtures import checkpoint_dict, unpacked

WORKFLOW = REPO / "examples" / "ci" / "export-and-compare.yml"


def steps() -> dict[str, str]:
    wf = yaml.safe_load(WORKFLOW.read_text())
    (job,) = wf["jobs"].values()
    return {s["id"]: s["run"] for s in job["steps"] if "id" in s}


def run_step(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    # the venv's coatnet-deploy first on PATH, as `pip install coatnet-deploy` puts it in the runner's
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", "-eo", "pipefail", "-c", steps()[name]], cwd=cwd, env={**os.environ, **env, "PATH": path},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def job(tmp_path):
    """The workflow's env, with the checkout's paths made here: the timm train.py checkpoint, photos, eval set."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    env = {k: str(v) for k, v in wf["env"].items()}
    shutil.copy(unpacked()["checkpoint"], tmp_path / "model_best.pth.tar")
    evals = tmp_path / "val"
    photos = sorted((REPO / "calibration").glob("*.jpg"))
    for i, cls in enumerate(("0", "1", "2")):
        (evals / cls).mkdir(parents=True)
        for p in photos[i * 2:(i + 1) * 2]:
            shutil.copy(p, evals / cls / p.name)
    env.update(WEIGHTS=str(tmp_path / "model_best.pth.tar"), TARGET="onnxruntime", PRECISION="fp32",
               CALIBRATION=str(REPO / "calibration"), EVAL_IMAGES=str(evals), COMPARE_SECONDS="3")
    return env


def test_the_workflow_steps_pass_a_rebuild_and_fail_moved_classes(job, tmp_path):
    assert set(steps()) == {"export", "compare"}
    # the release: the export step run once before
    proc = run_step("export", {**job, "NEW": "released/bundle"}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "export.json").is_file() and (tmp_path / "released" / "bundle" / "manifest.json").is_file()

    # this push: the same checkpoint again -> within every budget
    assert run_step("export", job, tmp_path).returncode == 0
    proc = run_step("compare", job, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("PASSED:")
    assert sorted(p.name for p in (tmp_path / job["REPORT"]).iterdir()) == ["compare.html", "compare.json", "compare.md"]

    # a checkpoint whose classifier rows moved by one class: every answer changes -> the job fails
    import torch

    ck = checkpoint_dict()
    for key in ("state_dict", "state_dict_ema"):
        sd = ck[key]
        for name in ("head.fc.weight", "head.fc.bias"):
            sd[name] = torch.roll(sd[name], 1, dims=0)
    torch.save(ck, tmp_path / "moved.pth.tar")
    env = {**job, "WEIGHTS": str(tmp_path / "moved.pth.tar")}
    assert run_step("export", env, tmp_path).returncode == 0
    proc = run_step("compare", env, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("FAILED:") and "max_disagreement" in proc.stdout
