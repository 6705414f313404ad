"""One tiny bundle per test session, shared by the runtime / predict / reliability / error tests.

Exporting even ``coatnet_tiny`` costs ~20 s on the 2-core machine, so it is built once per process
(cached here) and copied by tests that change it; ``openvino_bundle_from`` is its OpenVINO twin.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
LABELS = [f"label-{i:02d}" for i in range(10)]

# Small and fast: no latency run, few golden samples, ten classes with names.
TINY_CONFIG = {
    "model": "coatnet_tiny",
    "target": "onnxruntime",
    "precision": "fp32",
    "num_classes": 10,
    "image_size": 64,
    "bench_iterations": 0,
    "golden_images": 2,
    "golden_random": 2,
    "seed": 0,
}

_cache: dict[str, Path] = {}
_root = Path(tempfile.mkdtemp(prefix="coatnet-test-bundles-"))
atexit.register(shutil.rmtree, _root, True)


def labels_file() -> Path:
    p = _root / "labels.txt"
    if not p.exists():
        p.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return p


def config_file(directory: Path, **overrides) -> Path:
    """The tiny export config as YAML (JSON is YAML) in ``directory``, with overrides."""
    cfg = {**TINY_CONFIG, "labels": str(labels_file()), **overrides}
    p = Path(directory) / f"tiny-{abs(hash(json.dumps(cfg, sort_keys=True)))}.yaml"
    p.write_text(json.dumps(cfg), encoding="utf-8")
    return p


def export_tiny(output: Path, **overrides) -> Path:
    """Export the tiny config in this process (torch is imported here, never in the runtime)."""
    from coatnet_deploy.config import make_config
    from coatnet_deploy.exporting import export

    cfg = make_config(str(config_file(_root, **overrides)), {"output": str(output)})
    return export(cfg).bundle


def tiny_bundle() -> Path:
    """Path of the shared tiny ORT fp32 bundle (read-only by convention: copy it before changing it)."""
    if "ort" not in _cache:
        _cache["ort"] = export_tiny(_root / "tiny-ort")
    return _cache["ort"]


def copy_bundle(dst: Path) -> Path:
    shutil.copytree(tiny_bundle(), dst)
    return dst


def has_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_bundle_from() -> Path:
    """The tiny config exported to an OpenVINO fp32 bundle (a real export, cached like the ORT one)."""
    if "ov" not in _cache:
        _cache["ov"] = export_tiny(_root / "tiny-ov", target="openvino")
    return _cache["ov"]


def run_cli(*args, env_extra: dict | None = None, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m coatnet_deploy ARGS`` in a fresh interpreter; text output captured."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([PY, "-m", "coatnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(cwd or REPO), env=env)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr lines that are ours: runtimes' own C++ log lines (ORT's '[W:onnxruntime' ...) are not."""
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and "[W:onnxruntime" not in ln]


def cli_in_process(capsys, *args) -> tuple[int, str, list[str]]:
    """Run the CLI in this process -> (exit code, stdout, non-empty stderr lines)."""
    import pytest

    from coatnet_deploy.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return ex.value.code, out, [ln for ln in err.splitlines() if ln.strip()]
