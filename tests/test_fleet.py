"""The fleet without a cluster: cells, placement, bundles as bytes, the serial scheduler, the worker's
advertisement and the one-line refusals. Ray is not needed for any of it (tests/test_fleet_cluster.py
runs the same cells on a real multi-node Ray cluster)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from coatnet_deploy.errors import UserError
from coatnet_deploy.fleet import nodes, transport

REPO = Path(__file__).resolve().parents[1]
TINY = {"model": "coatnet_tiny", "image_size": 64, "num_classes": 10}


def _config(**kw):
    from coatnet_deploy.bench.matrix import MatrixConfig

    return MatrixConfig(**{**TINY, **kw})


def test_cells_pair_cpu_targets_with_profiles_and_tensorrt_with_gpus():
    from coatnet_deploy.fleet.matrix import fleet_cells

    cells = fleet_cells(_config(models=["coatnet_tiny", "coatnet_0_rw_224"], targets=["onnxruntime", "tensorrt"], precisions=["fp32"],
                                devices=["x86-64-v3", "aarch64-v8.0", "gpu-cc8.7"]))
    keys = [c.key for c in cells]
    assert keys == ["coatnet_tiny/onnxruntime-fp32@x86-64-v3", "coatnet_tiny/onnxruntime-fp32@aarch64-v8.0",
                    "coatnet_tiny/tensorrt-fp32@gpu-cc8.7", "coatnet_0_rw_224/onnxruntime-fp32@x86-64-v3",
                    "coatnet_0_rw_224/onnxruntime-fp32@aarch64-v8.0", "coatnet_0_rw_224/tensorrt-fp32@gpu-cc8.7"]
    # default devices: the bundle's own profile (the export's device, else the default), any GPU for TensorRT
    default = fleet_cells(_config(models=["coatnet_tiny"], targets=["openvino", "tensorrt"], precisions=["int8"],
                                  export={"device": "x86-64-v2"}))
    assert [c.device for c in default] == ["x86-64-v2", "gpu"]


@pytest.mark.parametrize("name, words", [("aarch64-v9", "device profiles are"), ("host", "names no fleet node"),
                                         ("gpu-cc8", "gpu-ccX.Y")])
def test_a_bad_device_is_one_line(name, words):
    with pytest.raises(UserError) as e:
        nodes.check_device_name(name)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_placement_asks_for_the_profile_and_says_what_no_node_offers():
    offered = {nodes.BUILD, nodes.device_resource("x86-64-v3"), nodes.SLOT}
    assert nodes.placement_for("x86-64-v3", offered, False) == (nodes.Placement("coatnet/device/x86-64-v3"), None)
    p, why = nodes.placement_for("aarch64-v8.0", offered, False)
    assert p is None and "coatnet/device/aarch64-v8.0" in why and "--emulate-missing" in why
    p, why = nodes.placement_for("aarch64-v8.0", offered | {nodes.EMULATOR}, True)
    assert p == nodes.Placement(nodes.EMULATOR, emulate="cortex-a72") and why is None
    p, why = nodes.placement_for("x86-64-v4", offered | {nodes.EMULATOR}, True)
    assert p is None and "QEMU cannot emulate x86-64-v4" in why
    p, why = nodes.placement_for("gpu-cc8.9", offered, True)
    assert p is None and "coatnet/gpu/cc8.9" in why


def test_a_node_says_what_it_is():
    spec = nodes.node_spec(device=["x86-64-v2"], build=False)
    assert spec.resources() == {"coatnet/device/x86-64-v2": 1.0, nodes.SLOT: 1.0}
    here = nodes.node_spec()
    assert {nodes.device_resource(p) for p in nodes.host_profiles()} <= set(here.resources())
    assert nodes.BUILD in here.resources()  # PyTorch is installed here
    with pytest.raises(UserError, match="unknown emulated CPU 'pentium'.*cortex-a72"):
        nodes.node_spec(emulate="pentium")


def test_worker_dry_run_prints_the_advertisement(capsys):
    from coatnet_deploy.cli import main

    with pytest.raises(SystemExit) as e:
        main(["worker", "--address", "127.0.0.1:6379", "--device", "x86-64-v3", "--no-build", "--dry-run"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "coatnet/device/x86-64-v3" in out and "--address=127.0.0.1:6379" in out
    assert "coatnet/build" not in out.splitlines()[0]


def test_worker_without_the_extra_is_one_line():
    code = ("import sys; sys.modules['ray'] = None\nfrom coatnet_deploy.cli import main\n"
            "main(['worker', '--address', '127.0.0.1:6379'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: `coatnet-deploy worker` needs Ray: the `cluster` extra is not installed. Pip install 'coatnet-deploy[cluster]'."]


def test_bundles_travel_as_bytes_and_are_checked_on_arrival(bundle, tmp_path):
    data = transport.pack(bundle)
    back = transport.unpack(data, tmp_path / "ok")
    assert sorted(p.name for p in back.iterdir()) == sorted(p.name for p in Path(bundle).iterdir())
    # one byte changed in transit: refused before anything opens it, naming the file
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    raw = bytearray(data)
    at = raw.index(b"golden_logits") if b"golden_logits" in raw else None
    member = next(n for n in names if n.endswith(".npy"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for info in src.getmembers():
            body = src.extractfile(info).read() if info.isfile() else None
            if info.name == member:
                body = body[:-1] + bytes([body[-1] ^ 1])
            dst.addfile(info, io.BytesIO(body) if body is not None else None)
    with pytest.raises(UserError, match=member.split("/")[-1]):
        transport.unpack(buf.getvalue(), tmp_path / "bad")
    assert at is None or at > 0
    # a member that climbs out of the folder is refused by the tar filter
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as t:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UserError, match="arrived damaged"):
        transport.unpack(evil.getvalue(), tmp_path / "evil" / "b")
    assert not (tmp_path / "evil" / "escape.txt").exists()


def test_a_symlink_never_travels(bundle, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    (b / "link").symlink_to(b / "manifest.json")
    with pytest.raises(UserError, match="'link', which is not a regular file"):
        transport.pack(b)


def test_serial_fleet_needs_no_ray_and_proves_natively(tmp_path):
    """One cell for this CPU's profile, one for a profile it cannot be: PASSED with device timing, and
    NO NODE (nothing built) naming the resource. Run with Ray made unimportable."""
    from coatnet_deploy.fleet.nodes import host_profiles

    mine = host_profiles()[0]
    code = f"""
import sys, json
sys.modules['ray'] = None  # any import of Ray fails
from coatnet_deploy.bench.matrix import MatrixConfig
from coatnet_deploy.fleet.matrix import run_fleet
r = run_fleet(MatrixConfig(model='coatnet_tiny', image_size=64, num_classes=10, targets=['onnxruntime'], precisions=['fp32'],
                           devices=['{mine}', 'aarch64-v8.0'], output={str(tmp_path / 'o')!r}, threads=1))
print(json.dumps({{'exit': r.exit_code, 'rows': [x.to_dict() for x in r.rows]}}, default=str))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    native, arm = doc["rows"]
    assert native["status"] == "PASSED" and native["ran_on"]["emulated"] is False and native["ran_on"]["node_id"] == "local"
    assert native["result"]["timing"]["1"]["p50_ms"] > 0 and len(native["result"]["outputs_sha256"]) == 64
    assert arm["status"] == "NO NODE" and "coatnet/device/aarch64-v8.0" in arm["reason"] and not arm["build"]
    assert doc["exit"] == 1
    out = tmp_path / "o"
    assert (out / "matrix.json").is_file() and (out / "matrix.md").is_file() and (out / "matrix.html").is_file()
    assert "ran on" in (out / "matrix.md").read_text()
    assert sorted(p.name for p in (out / "coatnet_tiny").iterdir()) == [f"onnxruntime-fp32@{mine}"]


def test_cluster_without_the_extra_is_one_line(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\nfrom coatnet_deploy.cli import main\n"
            f"main(['matrix', '--model', 'coatnet_tiny', '--cluster', 'local', '--output', {str(tmp_path / 'o')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["error: --cluster needs Ray: the `cluster` extra is not installed. "
                     "Pip install 'coatnet-deploy[cluster]' (or run the matrix without --cluster)."], proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, words", [(["--devices", "arm9"], "unknown device 'arm9'"),
                                         (["--models", "coatnet_99"], "unknown model 'coatnet_99'"),
                                         (["--cell-timeout", "0"], "--cell-timeout")])
def test_fleet_flags_refuse_bad_values_in_one_line(args, words, capsys, tmp_path):
    from coatnet_deploy.cli import main

    with pytest.raises(SystemExit) as e:
        main(["matrix", "--output", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 1 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_the_plain_matrix_is_not_a_fleet():
    assert not _config().is_fleet and _config(devices=["x86-64-v3"]).is_fleet and _config(cluster="local").is_fleet
    assert os.path.basename(_config().default_output()) == "matrix-coatnet_tiny"


def test_the_python_api_runs_the_same_fleet(tmp_path):
    import coatnet_deploy
    from coatnet_deploy.fleet.matrix import FleetResult

    res = coatnet_deploy.matrix("coatnet_tiny", targets=["onnxruntime"], precisions=["fp32"], devices=["aarch64-v8.2-dotprod"],
                                output=tmp_path / "o", image_size=64, num_classes=10)
    assert isinstance(res, FleetResult) and res.exit_code == 1
    assert [r.status for r in res.rows] == ["NO NODE"] and "aarch64-v8.2-dotprod" in res.rows[0].reason
    assert json.loads((tmp_path / "o" / "matrix.json").read_text())["kind"] == "fleet"
    assert "ray" not in sys.modules or sys.modules["ray"] is None  # the serial fleet never imports Ray
    with pytest.raises(UserError, match="unknown device 'pi4'"):
        coatnet_deploy.matrix("coatnet_tiny", devices=["pi4"], output=tmp_path / "p")


def test_emulate_missing_flag_is_unset_unless_given(monkeypatch):
    """A flag not given must not override the matrix YAML's value (None = not given)."""
    from click.testing import CliRunner

    import coatnet_deploy.bench.matrix as bm
    from coatnet_deploy.cli import cli, matrix_cmd  # noqa: F401 - registers the command

    seen: dict = {}

    def spy(config_file, overrides):
        seen.clear()
        seen.update(overrides)
        raise UserError("stop here")

    monkeypatch.setattr(bm, "make_matrix_config", spy)
    CliRunner().invoke(cli, ["matrix", "--model", "coatnet_tiny"])
    assert seen["emulate_missing"] is None and seen["cluster"] is None and seen["devices"] is None
    CliRunner().invoke(cli, ["matrix", "--emulate-missing", "--devices", "x86-64-v3,aarch64-v8.0"])
    assert seen["emulate_missing"] is True and seen["devices"] == ["x86-64-v3", "aarch64-v8.0"]


def test_the_shipped_fleet_config_reads_and_makes_its_cells():
    from coatnet_deploy.bench.matrix import make_matrix_config
    from coatnet_deploy.fleet.matrix import fleet_cells
    from coatnet_deploy.shipped import resolve_config

    cfg = make_matrix_config(resolve_config("matrix-fleet", "matrix"), {"devices": ["x86-64-v3"]})
    assert cfg.is_fleet and cfg.cluster is None and cfg.cell_timeout == 3600
    keys = [c.key for c in fleet_cells(cfg)]
    assert len(keys) == 2 * 2 * 2 and keys[0] == "coatnet_tiny/onnxruntime-fp32@x86-64-v3"
