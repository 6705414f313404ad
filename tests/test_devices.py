"""Device profiles: the export's CPU-dependent choices come from the device, bundles run on other CPUs,
and the runtime refuses (exit 3) only what would compute wrong numbers. Emulated CPUs (QEMU user-mode)
prove it where qemu-x86_64-static / the aarch64 sysroot (tools/devices/aarch64-sysroot.sh) are installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_helpers import REPO, cli_in_process, export_tiny, has_openvino, tiny_bundle

sys.path.insert(0, str(REPO / "tools" / "devices"))

FIXTURES = REPO / "tests" / "fixtures"
OTHER_CPU_BUNDLES = [FIXTURES / "old_bundles" / "onnxruntime-fp32", FIXTURES / "other_cpu_bundles" / "onnxruntime-fp32-avx2"]
HAS_QEMU_X86 = shutil.which("qemu-x86_64-static") is not None
HAS_AARCH64 = shutil.which("qemu-aarch64-static") is not None and (REPO / "build/aarch64/site/.wheels-done").is_file()


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def vnni_int8(tmp_path_factory) -> Path:
    """An onnxruntime INT8 bundle for the x86-64-v4-vnni profile: full-range weights, whatever this host has."""
    return export_tiny(tmp_path_factory.mktemp("vnni") / "b", precision="int8", device="x86-64-v4-vnni", calibration_samples=8)


@pytest.fixture(scope="module")
def default_int8(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("v3") / "b", precision="int8", calibration_samples=8)


# -- the profiles ------------------------------------------------------------------------------------

def test_profiles_table_and_choices():
    from coatnet_deploy import devices

    assert devices.DEFAULT == "x86-64-v3" and devices.get(None).name == "x86-64-v3"
    for name in devices.PROFILES:
        p = devices.get(name)
        c = p.choices()
        assert c["onnxruntime_saved_graph"] == "basic"  # portable profiles never save a layout of the build CPU
        # 7-bit weights exactly where a member CPU may lack an int8 dot product (x86 without VNNI/AMX)
        assert c["int8_reduce_range"] == (p.arch == "x86_64" and not p.int8_dot)
        assert c["openvino_int8_head"] == ("float" if p.arch == "aarch64" else "int8")
        # full-range INT8 weights need an int8 dot product on x86 (an aarch64 bundle run on x86 too)
        assert bool(p.needs("onnxruntime", "int8")) == (not c["int8_reduce_range"])
        assert p.needs("onnxruntime", "fp32") == [] and p.needs("openvino", "fp16") == []
    # every x86 profile's features include the one below it
    assert set(devices.get("x86-64-v2").features) < set(devices.get("x86-64-v3").features) < set(devices.get("x86-64-v4").features)
    assert devices.get("host").choices()["onnxruntime_saved_graph"] == "all"


def test_unknown_device_is_one_line(capsys):
    rc, _, err = cli_in_process(capsys, "targets", "--device", "pentium-pro")
    assert rc == 1 and len(err) == 1 and "unknown device 'pentium-pro'" in err[0] and "x86-64-v3" in err[0]


def test_targets_device_lists_choices(capsys):
    rc, out, _ = cli_in_process(capsys, "targets", "--device", "aarch64-v8.0", "--json")
    rows = json.loads(out)
    assert rc == 0 and rows[0]["profile"] == "aarch64-v8.0" and rows[0]["emulated_by"] == "cortex-a72"
    assert rows[0]["cells"]["openvino/int8"]["choices"]["openvino_int8_head"] == "float"
    rc, out, _ = cli_in_process(capsys, "targets", "--device", "list")
    assert rc == 0 and all(f"device {n}:" in out for n in ("x86-64-v2", "x86-64-v3", "x86-64-v4-vnni", "aarch64-v8.2-dotprod", "host"))


def test_device_is_refused_for_a_gpu_target(tmp_path, capsys):
    rc, _, err = cli_in_process(capsys, "export", "--model", "coatnet_tiny", "--image-size", "64", "--target", "tensorrt",
                                "--precision", "fp32", "--defer-build", "--device", "x86-64-v3", "--output", tmp_path / "b")
    assert rc == 1 and len(err) == 1 and "--device applies to the CPU targets" in err[0]
    assert not (tmp_path / "b").exists()


def test_host_features_come_from_the_cpu_not_cpuinfo(monkeypatch):
    # Under qemu-user /proc/cpuinfo is the real machine's: its extra flags count only where it agrees with CPUID.
    from coatnet_deploy import host

    if host.machine() != "x86_64":
        pytest.skip("x86 flags")
    monkeypatch.setattr(host, "_features", None)
    real = host.features()
    agreeing = {"avx2"} if "AVX2" in real else set()
    agreeing |= {"avx512f"} if "AVX512F" in real else set()
    monkeypatch.setattr(host, "_features", None)
    monkeypatch.setattr(host, "cpu_flags", lambda: agreeing | {"amx_int8"})
    assert "AMX_INT8" in host.features()
    monkeypatch.setattr(host, "_features", None)
    monkeypatch.setattr(host, "cpu_flags", lambda: (agreeing ^ {"avx512f"}) | {"amx_int8"})  # another CPU's file
    assert "AMX_INT8" not in host.features()
    monkeypatch.setattr(host, "_features", None)


# -- what the bundle records, and the runtime's check ------------------------------------------------

def test_default_bundle_is_portable(bundle):
    m = manifest(bundle)
    d = m["device"]
    assert d["profile"] == "x86-64-v3" and d["arch"] == "x86_64" and "AVX2" in d["features"] and d["needs"] == []
    assert d["built_on"]["arch"] and d["built_on"]["int8_isa"]
    assert m["engine"]["saved_optimization"] == "basic" and m["engine"]["load_optimization"] == "all"
    # no NCHWc layout (of this CPU's vector width), no contrib op in the saved graph; ORT builds them at load
    import onnx

    from coatnet_deploy.targets.onnxruntime import _holds_nchwc

    g = onnx.load(str(bundle / "model.ort.onnx"))
    assert {n.domain for n in g.graph.node} <= {"", "ai.onnx"} and not _holds_nchwc(bundle / "model.ort.onnx")


def test_int8_weights_follow_the_device_not_the_host(default_int8, vnni_int8, capsys):
    assert manifest(default_int8)["precision_details"]["reduce_range"] is True
    m = manifest(vnni_int8)
    assert m["precision_details"]["reduce_range"] is False and m["precision_details"]["device"] == "x86-64-v4-vnni"
    assert m["device"]["needs"] == ["x86: AVX512VNNI|AVX_VNNI|AMX_INT8"]
    from coatnet_deploy import host

    rc, out, err = cli_in_process(capsys, "parity", vnni_int8, "--json")
    if host.cpu_has_vnni():
        assert rc == 0
    else:
        # full-range weights saturate without VNNI: refused in one line, and --any-cpu runs it anyway
        assert rc == 3 and len(err) == 1 and "needs an x86 int8 dot product" in err[0] and "--any-cpu" in err[0]
        rc, out, err = cli_in_process(capsys, "parity", vnni_int8, "--any-cpu", "--json")
        assert rc in (0, 2) and any("--any-cpu" in e for e in err)


def test_check_runs_here_outside_the_profile_warns(monkeypatch):
    from coatnet_deploy import devices, host

    m = {"device": devices.get("x86-64-v3").to_manifest("onnxruntime", "fp32")}
    monkeypatch.setattr(host, "features", lambda: frozenset(devices.PROFILES["x86-64-v2"].features))
    warnings = devices.check_runs_here("B", m)
    assert len(warnings) == 1 and "outside the bundle's device profile x86-64-v3" in warnings[0] and "AVX2" in warnings[0]
    m = {"device": devices.get("x86-64-v4-vnni").to_manifest("openvino", "int8")}
    monkeypatch.setattr(host, "features", lambda: frozenset(devices.PROFILES["x86-64-v4"].features))
    with pytest.raises(devices.TargetUnavailable):
        devices.check_runs_here("B", m)
    # an ARM CPU has no x86 need to meet
    monkeypatch.setattr(host, "machine", lambda: "aarch64")
    monkeypatch.setattr(host, "features", lambda: frozenset({"ASIMD"}))
    assert "outside" in devices.check_runs_here("B", m)[0]
    assert devices.check_runs_here("B", {}) == []  # bundles from before profiles: nothing to check


@pytest.mark.parametrize("old", OTHER_CPU_BUNDLES, ids=lambda p: p.name)
def test_saved_graph_of_another_cpu_falls_back_to_model_onnx(old, tmp_path, capsys):
    # One of these two was optimized for another vector width than this CPU's, whichever this CPU is:
    # earlier code ran it straight into a traceback; now model.onnx runs, optimized at load.
    b = Path(shutil.copytree(old, tmp_path / old.name))
    rc, out, err = cli_in_process(capsys, "parity", b, "--json")
    res = json.loads(out)
    assert rc == 0 and res["status"] == "PASSED" and "model.onnx, optimized at load" in res["runs"]
    assert any("NCHWc" in e for e in err)


def test_host_bundle_keeps_its_graph_here_and_falls_back_on_another_width(tmp_path, monkeypatch):
    from coatnet_deploy import devices, host
    from coatnet_deploy.runtime import Classifier
    from coatnet_deploy.targets.onnxruntime import saved_graph_here

    b = export_tiny(tmp_path / "host", device="host")
    m = manifest(b)
    block = devices.nchwc_block(host.features(), host.machine())
    assert m["engine"]["saved_optimization"] == "all" and m["device"]["nchwc_block"] == block
    assert saved_graph_here(b, m)[0].name == "model.ort.onnx"
    golden = np.load(b / "golden_inputs.npy")
    with Classifier.load(b) as clf:
        here = clf.logits(golden)
    # the same bundle on a CPU of the other width: the portable graph, same numbers
    other = frozenset(host.features() ^ {"AVX512F"}) if host.machine() == "x86_64" else frozenset()
    monkeypatch.setattr(host, "features", lambda: other)
    from coatnet_deploy.targets.onnxruntime import _holds_nchwc

    if host.machine() == "x86_64" and _holds_nchwc(b / "model.ort.onnx"):
        path, level, note = saved_graph_here(b, m)
        assert path.name == "model.onnx" and level == "all" and "another CPU" in note
        with Classifier.load(b, any_cpu=True) as clf:
            np.testing.assert_allclose(clf.logits(golden), here, atol=1e-4)


# -- emulated CPUs -----------------------------------------------------------------------------------

def emulated(cpu: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    from coatnet_deploy.fleet import emulation

    cmd, env = emulation.command(emulation.get(cpu), ["-m", "coatnet_deploy", *map(str, args)])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def ours(proc: subprocess.CompletedProcess) -> list[str]:
    noise = ("TCG doesn't support", "MIDR_EL1", "[W:onnxruntime")
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and not any(n in ln for n in noise)]


@pytest.mark.skipif(not HAS_QEMU_X86, reason="qemu-x86_64-static not installed (README: the apt line)")
def test_emulated_haswell_and_nehalem(tmp_path):
    b = tiny_bundle()
    for cpu in ("haswell", "nehalem"):
        r = emulated(cpu, "parity", b, "--json")
        res = json.loads(r.stdout)
        assert r.returncode == 0 and res["status"] == "PASSED", r.stderr[-500:]
        assert res["cpu"]["arch"] == "x86_64" and ("AVX2" in res["cpu"]["features"]) == (cpu == "haswell")
        if cpu == "nehalem":  # outside the default profile: runs, and says so in one line
            assert any("outside the bundle's device profile x86-64-v3" in ln for ln in ours(r))
        r = emulated(cpu, "predict", b, REPO / "calibration" / "astronaut.jpg", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["predictions"][0]["topk"]


@pytest.mark.skipif(not HAS_QEMU_X86, reason="qemu-x86_64-static not installed (README: the apt line)")
def test_emulated_haswell_refuses_a_vnni_bundle_in_one_line(vnni_int8):
    r = emulated("haswell", "parity", vnni_int8)
    assert r.returncode == 3 and len(ours(r)) == 1 and "needs an x86 int8 dot product" in ours(r)[0]
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not HAS_AARCH64, reason="no aarch64 sysroot (tools/devices/aarch64-sysroot.sh) or qemu-aarch64-static")
def test_emulated_cortex_a72_runs_the_default_bundle():
    r = emulated("cortex-a72", "parity", tiny_bundle(), "--json")
    res = json.loads(r.stdout)
    assert r.returncode == 0 and res["status"] == "PASSED" and res["cpu"]["arch"] == "aarch64", r.stderr[-800:]


@pytest.mark.skipif(not HAS_AARCH64 or not has_openvino(), reason="no aarch64 sysroot or qemu-aarch64-static, or no openvino")
def test_aarch64_profile_openvino_int8_passes_under_sme(tmp_path):
    # -cpu max turns SME on: OpenVINO's int8 FullyConnected head runs wrong there. The aarch64 profiles keep it float.
    b = export_tiny(tmp_path / "arm", target="openvino", precision="int8", device="aarch64-v8.0", calibration_samples=8)
    assert manifest(b)["device"]["choices"]["openvino_int8_head"] == "float"
    r = emulated("max", "parity", b, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "PASSED", r.stderr[-800:]


def test_openvino_int8_candidate_by_accuracy_where_host_speed_says_nothing(monkeypatch):
    from coatnet_deploy import devices, host
    from coatnet_deploy.targets.openvino import choose_candidate

    c = {"nncf": {"passed": True, "p50_ms_b1": 1.0, "top1_agreement": 1.0, "cosine_mean": 0.990},
         "qdq": {"passed": True, "p50_ms_b1": 2.0, "top1_agreement": 1.0, "cosine_mean": 0.995}}
    assert choose_candidate(c, by_speed=True) == "nncf" and choose_candidate(c, by_speed=False) == "qdq"
    # an ARM profile built on x86: this host's timing is not the device's
    assert not devices.get("aarch64-v8.0").speed_counts_here() and devices.get("host").speed_counts_here()
    monkeypatch.setattr(host, "features", lambda: frozenset(devices.PROFILES["x86-64-v3"].features))
    monkeypatch.setattr(host, "machine", lambda: "x86_64")
    monkeypatch.setattr(host, "cpu_has_vnni", lambda flags=None, onednn=False: True)
    # a VNNI host building the default (non-VNNI) profile: other int8 kernels, so accuracy decides
    assert not devices.get("x86-64-v3").speed_counts_here()
