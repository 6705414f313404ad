"""The fleet on a real multi-node Ray cluster on this machine (marker ``cluster``: `make test-cluster`).

The cluster (``fleet.local.LocalCluster``, Ray's own ``cluster_utils.Cluster``) has a head, a builder,
an x86-64-v3 device node that is this machine, and an emulated cortex-a72 node, each advertising what
``coatnet-deploy worker`` would. Everything listens on 127.0.0.1, with no dashboard, and the run is
meant for a loopback-only network namespace (``tools/loopback.sh``): outside one these tests skip,
saying so; with COATNET_REQUIRE_CLUSTER=1 (CI) that and a missing extra fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
TINY = {"model": "coatnet_tiny", "image_size": 64, "num_classes": 10}
CELLS = {"targets": ["onnxruntime", "openvino"], "precisions": ["fp32", "int8"], "devices": ["x86-64-v3", "aarch64-v8.0"]}


def _interfaces() -> list[str]:
    """This network namespace's interfaces (/proc/net is per namespace; /sys may be the host's)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


def _need_cluster() -> None:
    why = None
    if importlib.util.find_spec("ray") is None:
        why = "needs the cluster extra: pip install -e '.[cluster]'"
    elif _interfaces() != ["lo"]:
        why = "run in a loopback-only network namespace: tools/loopback.sh .venv/bin/python -m pytest -m cluster (make test-cluster)"
    else:
        from coatnet_deploy.fleet import emulation

        why = emulation.missing(emulation.get("cortex-a72"))
    if why:
        if os.environ.get("COATNET_REQUIRE_CLUSTER"):
            pytest.fail(f"COATNET_REQUIRE_CLUSTER is set: {why}")
        pytest.skip(why)


def _specs():
    from coatnet_deploy.fleet import nodes

    return [nodes.NodeSpec(build=True, profiles=()),                         # the builder
            nodes.node_spec(device=["x86-64-v3"], build=False),               # this machine as an x86-64-v3 device
            nodes.node_spec(emulate="cortex-a72", build=False)]               # a Raspberry Pi 4, emulated


@pytest.fixture(scope="module")
def cluster():
    _need_cluster()
    from coatnet_deploy.fleet.local import LocalCluster

    with LocalCluster(_specs()) as c:
        yield c


def _config(**kw):
    from coatnet_deploy.bench.matrix import MatrixConfig

    return MatrixConfig(**{**TINY, "threads": 2, **kw})


def _node_ids(cluster) -> list[str]:
    return [n.node_id for n in cluster.nodes]


def _by_key(result) -> dict:
    return {r.key: r for r in result.rows}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The same eight cells run serially in this process (aarch64 emulated here: --emulate-missing)."""
    _need_cluster()
    from coatnet_deploy.fleet.matrix import run_fleet

    return run_fleet(_config(**CELLS, emulate_missing=True, output=str(tmp_path_factory.mktemp("serial"))))


@pytest.fixture(scope="module")
def fleet(cluster, tmp_path_factory):
    from coatnet_deploy.fleet.matrix import run_fleet
    from coatnet_deploy.fleet.schedulers import RayScheduler

    sched = RayScheduler(cluster.address)
    try:
        return run_fleet(_config(**CELLS, cluster=cluster.address, output=str(tmp_path_factory.mktemp("fleet"))), scheduler=sched)
    finally:
        sched.close()


def test_fleet_matches_the_serial_matrix_bit_for_bit(serial, fleet):
    a, b = _by_key(serial), _by_key(fleet)
    assert sorted(a) == sorted(b) and len(a) == 8
    for key, s in a.items():
        f = b[key]
        assert f.status == s.status, (key, f.status_text(), s.status_text())
        for k in ("status", "cosine_min", "top1_agreement", "failed_gates", "size_mb"):
            assert f.build.get(k) == s.build.get(k), (key, k)
        assert f.result["outputs_sha256"] == s.result["outputs_sha256"], key  # the device's logits, bit for bit
        assert f.result["parity"] == s.result["parity"], key
        assert [p["index"] for p in f.result["predict"]] == [p["index"] for p in s.result["predict"]]
    assert fleet.exit_code == serial.exit_code == 0, [r.status_text() for r in fleet.rows]


def test_every_device_row_ran_on_the_node_that_owns_its_profile(cluster, fleet):
    builder, x86, a72 = _node_ids(cluster)
    for r in fleet.rows:
        assert r.built_on["node_id"] == builder
        if r.device == "x86-64-v3":
            assert r.ran_on["node_id"] == x86 and not r.ran_on["emulated"]
            assert r.result["cpu"]["arch"] == "x86_64"
            assert r.result["timing"]["1"]["p50_ms"] > 0 and r.result["timing"]["8"]["throughput_ips"] > 0
        else:
            assert r.ran_on["node_id"] == a72 and r.ran_on["emulated"] and r.ran_on["emulate"] == "cortex-a72"
            assert r.result["cpu"]["arch"] == "aarch64"  # the CPU itself answered: ARM
            assert "timing" not in r.result  # an emulated node reports no latency
        if r.precision == "int8":  # the runtime's own census, on the device (OpenVINO on ARM keeps all but its head float)
            assert r.result["census"]["runtime"] and (r.result["census"]["int8_compute_nodes"] > 0 or r.device == "aarch64-v8.0")


def test_bundles_came_back_whole_and_the_tables_say_where_they_ran(fleet):
    from coatnet_deploy.bundle import check_manifest_sum, verify_bundle

    out = fleet.output
    for r in fleet.rows:
        check_manifest_sum(r.bundle)
        verify_bundle(r.bundle)
        assert Path(r.bundle) == out / r.cell.folder
    assert not list(out.rglob("*.partial-*"))
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["columns"][-1] == "ran on" and len(doc["table"]) == 8
    md, html = (out / "matrix.md").read_text(), (out / "matrix.html").read_text()
    for r in fleet.rows:
        assert r.ran_on_text() in md.replace("\\|", "|") and r.ran_on_text().split(" [")[0] in html
    assert "emulated" in md and "real" in md


def test_a_profile_no_node_offers_is_no_node_at_once(cluster, tmp_path):
    from coatnet_deploy.fleet.matrix import run_fleet
    from coatnet_deploy.fleet.schedulers import RayScheduler

    sched = RayScheduler(cluster.address)
    t0 = time.monotonic()
    try:
        res = run_fleet(_config(targets=["onnxruntime", "tensorrt"], precisions=["fp32"], devices=["aarch64-v8.2-dotprod", "gpu-cc8.7"],
                                cluster=cluster.address, output=str(tmp_path / "o"), cell_timeout=60), scheduler=sched)
    finally:
        sched.close()
    assert time.monotonic() - t0 < 30
    rows = _by_key(res)
    assert rows["coatnet_tiny/onnxruntime-fp32@aarch64-v8.2-dotprod"].status == "NO NODE"
    assert "coatnet/device/aarch64-v8.2-dotprod" in rows["coatnet_tiny/onnxruntime-fp32@aarch64-v8.2-dotprod"].reason
    assert "coatnet/gpu/cc8.7" in rows["coatnet_tiny/tensorrt-fp32@gpu-cc8.7"].reason
    assert res.exit_code == 1


def test_cell_timeout_bounds_a_device_proof(cluster, tmp_path):
    """An emulated proof takes tens of seconds: with a 3 s budget it is cut, and the run goes on."""
    from coatnet_deploy.fleet.matrix import run_fleet
    from coatnet_deploy.fleet.schedulers import RayScheduler

    sched = RayScheduler(cluster.address)
    t0 = time.monotonic()
    try:
        res = run_fleet(_config(targets=["onnxruntime"], precisions=["fp32"], devices=["x86-64-v3", "aarch64-v8.0"],
                                cluster=cluster.address, output=str(tmp_path / "o"), cell_timeout=3), scheduler=sched)
    finally:
        sched.close()
    rows = _by_key(res)
    slow = rows["coatnet_tiny/onnxruntime-fp32@aarch64-v8.0"]
    assert slow.status == "TIMEOUT" and "cell-timeout 3" in slow.reason, slow.status_text()
    assert time.monotonic() - t0 < 120
    assert res.exit_code == 1


def _fleet_in_thread(sched, cfg):
    from coatnet_deploy.fleet.matrix import run_fleet

    box: dict = {}

    def go():
        try:
            box["result"] = run_fleet(cfg, scheduler=sched)
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            box["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


@pytest.mark.parametrize("second_a72", [True, False], ids=["rerun-on-another-node", "lost"])
def test_a_node_killed_mid_run(second_a72, tmp_path):
    """The emulated node is killed (its raylet and workers, no drain) while it proves its cell: with a second
    node of that profile the cell runs again there (Ray's task retry); without, it is LOST, naming the node.
    The other cell is intact, and the run ends."""
    _need_cluster()
    from coatnet_deploy.fleet import nodes
    from coatnet_deploy.fleet.local import LocalCluster
    from coatnet_deploy.fleet.schedulers import RayScheduler

    specs = _specs() + ([nodes.node_spec(emulate="cortex-a72", build=False)] if second_a72 else [])
    arm_key = "coatnet_tiny/onnxruntime-fp32@aarch64-v8.0"
    with LocalCluster(specs) as c:
        sched = RayScheduler(c.address)
        cfg = _config(targets=["onnxruntime"], precisions=["fp32"], devices=["x86-64-v3", "aarch64-v8.0"],
                      cluster=c.address, output=str(tmp_path / "o"), cell_timeout=600)
        t0 = time.monotonic()
        thread, box = _fleet_in_thread(sched, cfg)
        try:
            while True:  # the ledger says which node took the ARM proof
                entry = sched.ray.get(sched.ledger.get.remote()).get(f"prove:{arm_key}")
                if entry:
                    break
                assert time.monotonic() - t0 < 300 and thread.is_alive(), box
                time.sleep(0.2)
            victim = entry["node_id"]
            time.sleep(2)  # the probe is running under QEMU now
            c.kill([n.node_id for n in c.nodes].index(victim))
            thread.join(timeout=600)
        finally:
            sched.close()
        assert not thread.is_alive() and "error" not in box, box
        rows = _by_key(box["result"])
        assert rows["coatnet_tiny/onnxruntime-fp32@x86-64-v3"].status == "PASSED"
        arm = rows[arm_key]
        if second_a72:
            assert arm.status == "PASSED" and arm.ran_on["node_id"] != victim and arm.ran_on["emulated"], arm.status_text()
        else:
            assert arm.status == "LOST" and victim[:12] in arm.reason, arm.status_text()
        assert time.monotonic() - t0 < 600


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_ctrl_c_leaves_no_ray_process_and_nothing_half_written(tmp_path):
    _need_cluster()
    import psutil

    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "coatnet_deploy", "matrix", "--cluster", "local", "--model", "coatnet_tiny", "--image-size", "64",
           "--num-classes", "10", "--targets", "onnxruntime,openvino", "--precisions", "fp32,int8", "--devices", "x86-64-v3",
           "--output", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path)
    seen: dict[int, psutil.Process] = {}
    t0 = time.monotonic()
    # until the first cell is in: a bundle written, others still building (and Ray's processes all started)
    while not list(out.glob("coatnet_tiny/*/manifest.json")):
        assert p.poll() is None and time.monotonic() - t0 < 300, p.communicate()[1][-2000:]
        seen.update({c.pid: c for c in _descendants(p.pid)})
        time.sleep(0.2)
    seen.update({c.pid: c for c in _descendants(p.pid)})
    assert any("raylet" in " ".join(c.cmdline()) for c in seen.values() if c.is_running())
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "aborted" in err
    time.sleep(1)
    alive = [c for c in seen.values() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [" ".join(c.cmdline())[:120] for c in alive]
    from coatnet_deploy.bundle import check_manifest_sum, verify_bundle

    assert not list(out.rglob("*.partial-*"))
    for m in out.glob("coatnet_tiny/*/manifest.json"):
        check_manifest_sum(m.parent)
        verify_bundle(m.parent)
    assert not (out / "matrix.json").exists()  # an interrupted run writes no table claiming to be whole


def test_worker_joins_and_advertises_what_host_py_says(tmp_path):
    """`coatnet-deploy worker` joins a head as Ray's own `ray start` does; one at a time (two `ray start` nodes on
    one host would share Ray's fixed agent port), and Ctrl-C takes each out again."""
    _need_cluster()
    import ray

    from coatnet_deploy.fleet import nodes
    from coatnet_deploy.fleet.local import LocalCluster

    def alive() -> list[dict]:
        return [n for n in ray.nodes() if n["Alive"] and any(k.startswith("coatnet/") for k in n["Resources"])]

    with LocalCluster([]) as c:
        ray.init(address=c.address, log_to_driver=False)
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        seen = {}
        try:
            for name, extra in (("emulated", ["--emulate", "cortex-a72"]), ("native", ["--no-build"])):
                p = subprocess.Popen([sys.executable, "-m", "coatnet_deploy", "worker", "--address", c.address, *extra,
                                      "--node-ip-address", "127.0.0.1", "--num-cpus", "1"], env=env, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                t0 = time.monotonic()
                while not alive():
                    assert p.poll() is None and time.monotonic() - t0 < 120, p.communicate()[0][-3000:]
                    time.sleep(0.5)
                seen[name] = alive()[0]
                os.killpg(p.pid, signal.SIGINT)
                assert p.wait(timeout=60) == 130
                while alive():
                    assert time.monotonic() - t0 < 180
                    time.sleep(0.5)
        finally:
            ray.shutdown()
    emulated, native = seen["emulated"]["Resources"], seen["native"]["Resources"]
    assert "coatnet/device/aarch64-v8.0" in emulated and "coatnet/cpu/cortex-a72" in emulated and nodes.BUILD not in emulated
    assert (seen["emulated"].get("Labels") or {}).get(nodes.LABEL_EMULATE) == "cortex-a72"
    assert {nodes.device_resource(p) for p in nodes.host_profiles()} <= set(native) and nodes.BUILD not in native
    assert nodes.LABEL_EMULATE not in (seen["native"].get("Labels") or {})


def test_a_device_that_refuses_the_bundle_is_refused(tmp_path):
    """A node told it is an x86-64-v4-vnni box (`worker --device`) that is really an emulated Haswell: the
    VNNI profile's full-range INT8 bundle is refused there (exit 3), and the row says REFUSED."""
    _need_cluster()
    from coatnet_deploy.fleet import nodes
    from coatnet_deploy.fleet.local import LocalCluster
    from coatnet_deploy.fleet.matrix import run_fleet
    from coatnet_deploy.fleet.schedulers import RayScheduler

    specs = [nodes.NodeSpec(build=True, profiles=()), nodes.node_spec(emulate="haswell", device=["x86-64-v4-vnni"], build=False)]
    with LocalCluster(specs) as c:
        sched = RayScheduler(c.address)
        try:
            res = run_fleet(_config(targets=["onnxruntime"], precisions=["int8"], devices=["x86-64-v4-vnni"], cluster=c.address,
                                    output=str(tmp_path / "o"), cell_timeout=600), scheduler=sched)
        finally:
            sched.close()
    (row,) = res.rows
    assert row.status == "REFUSED" and row.result["exit_code"] == 3 and "VNNI" in row.reason, row.status_text()
    assert row.ran_on["emulate"] == "haswell" and row.build["status"] == "PASSED"
    assert res.exit_code == 1


def test_emulate_missing_sends_a_profile_no_node_has_to_an_emulator(tmp_path):
    """No node is an ARMv8.2 board, one is an emulator (`worker --emulator`): with --emulate-missing the cell
    runs there as an emulated Neoverse-N1 (the profile's floor), and the row says so."""
    _need_cluster()
    from coatnet_deploy.fleet import nodes
    from coatnet_deploy.fleet.local import LocalCluster
    from coatnet_deploy.fleet.matrix import run_fleet
    from coatnet_deploy.fleet.schedulers import RayScheduler

    specs = [nodes.NodeSpec(build=True, profiles=()), nodes.node_spec(device=["x86-64-v3"], build=False, emulator=True)]
    with LocalCluster(specs) as c:
        sched = RayScheduler(c.address)
        try:
            res = run_fleet(_config(targets=["onnxruntime"], precisions=["fp32"], devices=["aarch64-v8.2-dotprod"], cluster=c.address,
                                    emulate_missing=True, output=str(tmp_path / "o"), cell_timeout=600), scheduler=sched)
        finally:
            sched.close()
    (row,) = res.rows
    assert row.status == "PASSED", row.status_text()
    assert row.placement["resource"] == nodes.EMULATOR and row.ran_on["emulate"] == "neoverse-n1" and row.ran_on["emulated"]
    assert row.result["cpu"]["arch"] == "aarch64" and "ASIMDDP" in row.result["cpu"]["features"]
    assert "timing" not in row.result and "emulated" in row.ran_on_text()
