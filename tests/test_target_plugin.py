"""A target is files only: a plug-in package registers one through the ``coatnet_deploy.targets``
entry point, and `targets`, `export --target`, `parity`, `predict`, `inspect` and `matrix` all find it,
with nothing under coatnet_deploy/ naming it."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_helpers import PY, REPO, cli_in_process, config_file

PLUGIN = Path(__file__).resolve().parent / "plugins" / "ortx_target.py"


def _site(root: Path) -> Path:
    """A folder that looks like an installed plug-in distribution: the module and its dist-info."""
    site = root / "site"
    dist = site / "coatnet_deploy_ortx-0.1.dist-info"
    dist.mkdir(parents=True)
    shutil.copyfile(PLUGIN, site / "coatnet_deploy_ortx.py")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: coatnet-deploy-ortx\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[coatnet_deploy.targets]\nortx = coatnet_deploy_ortx:OrtxTarget\n")
    return site


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    from coatnet_deploy import targets

    site = _site(tmp_path_factory.mktemp("plugin"))
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    targets._loaded = False  # discover entry points again, as a fresh process would
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        targets.unregister("ortx")
        sys.modules.pop("coatnet_deploy_ortx", None)


def test_a_fresh_process_lists_the_plugin(plugin_site):
    out = subprocess.run([PY, "-m", "coatnet_deploy", "targets", "--json"], capture_output=True, text=True, timeout=120,
                         cwd=str(REPO), env={"PYTHONPATH": str(plugin_site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["target"] == "ortx"]
    assert rows == [{"target": "ortx", "precision": "fp32", "available": True, "reason": "onnxruntime installed", "deferred": False,
                     "artifacts": "model.onnx + model.ortx.onnx", "how": "ORT extended graph optimizations, saved",
                     "summary": "ONNX Runtime, extended optimizations (test plug-in)"}]


def test_export_parity_predict_inspect_on_the_plugin(capsys, plugin_site, tmp_path):
    rc, out, _ = cli_in_process(capsys, "targets", "--json")
    assert rc == 0 and "ortx" in {r["target"] for r in json.loads(out)}
    rc, out, err = cli_in_process(capsys, "export", "--config", config_file(tmp_path), "--target", "ortx",
                                  "--output", tmp_path / "b", "--json")
    assert rc == 0, err
    b = Path(json.loads(out)["bundle"])
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["target"] == "ortx" and "model.ortx.onnx" in {a["path"] for a in manifest["artifacts"]}
    assert "ortx" in (b / "report.md").read_text()
    rc, out, _ = cli_in_process(capsys, "parity", b, "--json")
    assert rc == 0 and json.loads(out)["runs"] == "onnxruntime on model.ortx.onnx (ortx)"
    rc, out, _ = cli_in_process(capsys, "predict", b, REPO / "calibration" / "astronaut.jpg", "--json")
    assert rc == 0 and json.loads(out)["predictions"][0]["topk"]
    rc, out, _ = cli_in_process(capsys, "inspect", b, "--json")
    assert rc == 0 and json.loads(out)["target"] == "ortx"
    # a precision the plug-in does not offer is refused naming what it does
    rc, _, err = cli_in_process(capsys, "export", "--config", config_file(tmp_path), "--target", "ortx", "--precision", "int8",
                                "--output", tmp_path / "c")
    assert rc == 1 and "ortx does not support int8" in err[0] and "fp32" in err[0] and not (tmp_path / "c").exists()


def test_matrix_runs_the_plugin_cell(capsys, plugin_site, tmp_path):
    cfg = json.loads(config_file(tmp_path).read_text())
    rc, out, err = cli_in_process(capsys, "matrix", "--model", cfg["model"], "--image-size", cfg["image_size"],
                                  "--num-classes", cfg["num_classes"], "--targets", "ortx,onnx", "--precisions", "fp32",
                                  "--iterations", 2, "--output", tmp_path / "m", "--json")
    assert rc == 0, err
    rows = {(r["target"], r["precision"]): r for r in json.loads(out)["rows"]}
    assert rows[("ortx", "fp32")]["status"] == "PASSED" and rows[("ortx", "fp32")]["p50_ms"] > 0
