"""The device check: bundles built once, proven on emulated CPUs (QEMU user-mode), docs/DEVICES.md written.

    .venv/bin/python tools/devices/check.py              # build, run every CPU, write docs/DEVICES.md; exit 1 on a surprise
    .venv/bin/python tools/devices/check.py --cpus haswell,cortex-a72 --no-write

It is a user of the fleet engine (coatnet_deploy.fleet), not a scheduler of its own: it starts a local
multi-node Ray cluster (a head, a builder, one emulated device node per CPU, each advertising what
`coatnet-deploy worker --emulate CPU` would), has the builder export the bundles that are not cached
in build/devices/bundles, and sends every bundle, as bytes through Ray's object store, to each CPU's
node, where one probe process (coatnet_deploy/fleet/probe.py: parity on the golden set, predict
through the runtime's Classifier, the runtime's own op census for INT8) runs them all under QEMU:
x86 CPUs run this checkout's venv under ``qemu-x86_64-static -cpu MODEL``; aarch64 CPUs run Debian's
arm64 python with the aarch64 wheels (tools/devices/aarch64-sysroot.sh). Under emulated Haswell and
Cortex-A72 the C++ app (``selftest``) runs too, where it is built.

A cell is a surprise, and the run fails, when a bundle crashes anywhere, when it fails its gates on a
CPU where it should pass, or when it is refused where it should run (or runs where it must be
refused). The expected outcomes, and why, are in ``expected`` below and in docs/DEVICES.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from coatnet_deploy import devices  # noqa: E402
from coatnet_deploy.fleet import emulation  # noqa: E402

WORK = REPO / "build" / "devices"
SYSROOT_DIR = REPO / "build" / "aarch64"
VENV_PY = REPO / ".venv" / "bin" / "python"


CPUS = emulation.CPUS
Cpu = emulation.Cpu

#: what QEMU cannot emulate, with the evidence (TCG's own warning)
GAPS = [("AVX-512 (x86-64-v4, x86-64-v4-vnni, x86-64-v4-amx)", "QEMU 7.2's TCG implements no AVX-512: `qemu-x86_64-static -cpu "
         "Skylake-Server` starts with 'TCG doesn't support requested feature' and the CPU answers CPUID without AVX512F (NumPy sees "
         "X86_V3 only); bundles made there are checked by their needs instead (refused on a CPU without VNNI)"),
        ("AVX-VNNI / AVX512-VNNI / AMX int8 kernels", "not in TCG either: the VNNI profiles' full-range INT8 runs only on real hardware; "
         "here it is proven refused where it would saturate")]


@dataclass(frozen=True)
class Bundle:
    name: str
    target: str
    precision: str
    device: str | None  # None: the default profile (no --device)
    source: Path | None = None  # a bundle kept in the repo (written by earlier code) instead of an export


BUNDLES = [
    *[Bundle(f"{t}-{p}", t, p, None) for t in ("onnx", "onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")],
    Bundle("onnxruntime-fp32@x86-64-v2", "onnxruntime", "fp32", "x86-64-v2"),
    Bundle("onnxruntime-int8@x86-64-v2", "onnxruntime", "int8", "x86-64-v2"),
    Bundle("openvino-int8@x86-64-v2", "openvino", "int8", "x86-64-v2"),
    Bundle("onnxruntime-int8@x86-64-v4-vnni", "onnxruntime", "int8", "x86-64-v4-vnni"),
    *[Bundle(f"{t}-int8@{d}", t, "int8", d) for d in ("aarch64-v8.0", "aarch64-v8.2-dotprod") for t in ("onnxruntime", "openvino")],
    Bundle("onnxruntime-fp32 (27c6d7f, AVX-512 host)", "onnxruntime", "fp32", None, REPO / "tests/fixtures/old_bundles/onnxruntime-fp32"),
    Bundle("onnxruntime-fp32 (b48a9a6, AVX2 host)", "onnxruntime", "fp32", None, REPO / "tests/fixtures/other_cpu_bundles/onnxruntime-fp32-avx2"),
]


def expected(b: Bundle, cpu: Cpu) -> tuple[str, str]:
    """(outcome, why) this bundle must show on this CPU: PASSED, REFUSED or FAILED (a known gap)."""
    profile = devices.get(b.device)
    feats = {"haswell": set(devices.PROFILES["x86-64-v3"].features), "nehalem": set(devices.PROFILES["x86-64-v2"].features)}
    if cpu.arch == "x86_64":
        unmet = [n for n in profile.needs(b.target, b.precision) if not devices._need_met(n, frozenset(feats[cpu.name]), cpu.arch)]
        if unmet:
            return "REFUSED", f"needs {devices.show_need(unmet[0])}, which {cpu.qemu} lacks"
    if (cpu.name == "max" and b.target == "openvino" and b.precision == "int8" and profile.arch != "aarch64"):
        return "FAILED", ("known: OpenVINO's int8 FullyConnected head (ACL) runs wrong with SME on; aarch64 profiles keep it float "
                          "(see docs/DEVICES.md)")
    return "PASSED", ""


# -- the fleet: a local cluster, builds on its builder, probes on each CPU's node -------------------

SETTINGS = {"model": "coatnet_tiny", "image_size": 64, "num_classes": 10}


def start_fleet(cpus: list[Cpu]):
    """A local cluster: head, builder, and one emulated device node per CPU (as `worker --emulate CPU` advertises)."""
    from coatnet_deploy.fleet import nodes
    from coatnet_deploy.fleet.local import LocalCluster
    from coatnet_deploy.fleet.schedulers import RayScheduler

    specs = [nodes.NodeSpec(build=True, profiles=())] + [nodes.node_spec(emulate=c.name, build=False) for c in cpus]
    cluster = LocalCluster(specs)
    return cluster, RayScheduler(cluster.address)


def build_bundles(out: Path, rebuild: bool, scheduler) -> dict[str, Path]:
    """Every bundle of BUNDLES in ``out``: exported on the fleet's builder where not cached (or ``rebuild``)."""
    from coatnet_deploy.bench.matrix import MatrixConfig
    from coatnet_deploy.fleet.cells import FleetCell
    from coatnet_deploy.fleet.matrix import cell_settings, write_bundle

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    jobs = {}
    settings = cell_settings(MatrixConfig(**SETTINGS, bench={}, export={}))
    for b in BUNDLES:
        if b.source is not None:
            paths[b.name] = b.source
            continue
        dest = out / b.name.replace("@", "_at_")
        paths[b.name] = dest
        if rebuild or not (dest / "manifest.json").is_file():
            jobs[b.name] = scheduler.build(FleetCell(SETTINGS["model"], b.target, b.precision, b.device or devices.DEFAULT), settings, False)
    t0 = time.perf_counter()
    while jobs:
        for job in scheduler.wait(list(jobs.values()), timeout=5.0):
            name = next(n for n, j in jobs.items() if j is job)
            del jobs[name]
            row = scheduler.result(job)["row"]
            print(f"[build] {name}: {row['status']} in {row['export_s']} s", flush=True)
            if row["status"] not in ("PASSED", "FAILED"):
                raise SystemExit(f"device check: exporting {name} failed: {row['reason']}")
            write_bundle(scheduler.bundle_bytes(job), paths[name])
    if time.perf_counter() - t0 > 1:
        print(f"[build] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def run_cpus(cpus: list[Cpu], bundles: dict[str, Path], timeout_s: float, scheduler) -> dict[str, dict[str, dict]]:
    """Every bundle on every CPU: one job per CPU on the node that emulates it, all CPUs at once."""
    from coatnet_deploy.fleet import nodes, transport

    refs = [(name, scheduler.ray.put(transport.pack(path))) for name, path in bundles.items()]
    jobs = {c.name: scheduler.prove_many(f"device-check/{c.name}", refs, nodes.Placement(nodes.cpu_resource(c.name)), [], None, timeout_s)
            for c in cpus}
    t0 = time.perf_counter()
    results: dict[str, dict[str, dict]] = {}
    while jobs:
        for job in scheduler.wait(list(jobs.values()), timeout=5.0):
            name = next(n for n, j in jobs.items() if j is job)
            del jobs[name]
            value = scheduler.result(job)
            results[name] = value["results"]
            assert value["node"]["emulated"] and value["node"]["emulate"] == name, value["node"]
            print(f"[{name}] {len(value['results'])} bundle(s) in {time.perf_counter() - t0:.0f} s on node "
                  f"{value['node']['node_id'][:8]} ({value['node']['cpu']})", flush=True)
    return results


def cpp_selftests(cpu: Cpu, bundles: dict[str, Path]) -> dict[str, dict]:
    """The C++ app's selftest on this CPU, for the OpenVINO bundles, where the app for its arch is built."""
    out: dict[str, dict] = {}
    if cpu.name == "haswell" and (REPO / "build/cpp/coatnet-classify").is_file():
        for name, path in bundles.items():
            if name.startswith("openvino-"):
                cmd = [shutil.which("qemu-x86_64-static") or "qemu-x86_64-static", "-cpu", cpu.qemu, str(REPO / "build/cpp/coatnet-classify"),
                       "selftest", str(path), "--json"]
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                out[name] = {"exit_code": r.returncode, "stderr": r.stderr.strip().splitlines()[-1:] if r.returncode else []}
    elif cpu.name == "cortex-a72":
        try:
            sys.path.insert(0, str(REPO / "tools/devices"))
            import cpp_aarch64  # noqa: PLC0415 - only where the aarch64 app exists
        except ImportError:
            return out
        if not cpp_aarch64.built():
            return out
        for name, path in bundles.items():
            if name.startswith("openvino-"):
                r = cpp_aarch64.run(["selftest", str(path), "--json"], cpu=cpu.qemu)
                out[name] = {"exit_code": r.returncode, "stderr": r.stderr.strip().splitlines()[-1:] if r.returncode else []}
    return out


# -- the table ---------------------------------------------------------------------------------------

def cell(res: dict | None, exp: tuple[str, str]) -> tuple[str, bool]:
    """Markdown cell text, and whether it is a surprise."""
    if res is None:
        return "not run", False
    status = res.get("status")
    surprise = status != exp[0]
    if status in ("PASSED", "FAILED"):
        p = res["parity"]
        text = f"{status} {p['cosine_mean']:.5f} / {p['top1_agreement']:.2f}"
    elif status == "REFUSED":
        text = f"REFUSED (exit {res.get('exit_code')})"
    else:
        text = f"**{status}**: {res.get('message', '')[:80]}"
    if surprise:
        text = f"**{text}** (expected {exp[0]})"
    elif status != "PASSED":
        text += " (expected)"
    return text, surprise


def write_markdown(path: Path, cpus: list[Cpu], bundles: dict[str, Path], results: dict[str, dict[str, dict]],
                   cpp: dict[str, dict[str, dict]], host_cpu: str, seconds: float) -> int:
    from coatnet_deploy import host

    surprises = 0
    lines = ["# Devices: every CPU bundle on emulated CPUs", "",
             "Generated by `tools/devices/check.py` (CI runs it; do not edit by hand). Bundles of `coatnet_tiny` (64 px, 10 classes,",
             "seeded random weights, 8 photos + 4 random golden inputs) were built once by the builder node of a local Ray fleet on",
             "the host below, then sent as bytes to one emulated node per CPU (`coatnet-deploy worker --emulate CPU`, README \"Beyond",
             "one machine\"), where the torch-free runtime ran them: `parity` on the golden set, `predict` through `Classifier`, and for",
             "INT8 the runtime's own op census. A cell is `status cosine_mean / top-1 agreement` over the gated golden samples (the photos for fp16/int8,",
             "all for fp32); the gates are the bundle's own (docs/GATES.md).", "",
             f"Built on: {host_cpu} ({host.machine()}, int8: {host.int8_isa()}). Run took {seconds:.0f} s.", "",
             "| bundle (target-precision@device) | " + " | ".join(c.name for c in cpus) + " |",
             "|---|" + "---|" * len(cpus)]
    for b in BUNDLES:
        if b.name not in bundles:
            continue
        row = []
        for c in cpus:
            text, surprise = cell(results.get(c.name, {}).get(b.name), expected(b, c))
            surprises += surprise
            row.append(text)
        lines.append(f"| {b.name} | " + " | ".join(row) + " |")
    lines += ["", "Rows without `@device` use the default profile, x86-64-v3. The two last rows are bundles written by earlier",
              "code (tests/fixtures): their `model.ort.onnx` holds NCHWc layouts of the CPU that built them, so every other CPU",
              "runs their portable `model.onnx` (a warning says so).", "",
              "## The emulated CPUs", "", "| name | qemu -cpu | stands for |", "|---|---|---|"]
    lines += [f"| {c.name} | `{c.qemu}` | {c.stands_for} |" for c in cpus]
    lines += ["", "## Expected other than PASSED", ""]
    for b in BUNDLES:
        for c in cpus:
            exp = expected(b, c)
            if exp[0] != "PASSED" and b.name in bundles:
                lines.append(f"- {b.name} on {c.name}: {exp[0]}: {exp[1]}")
    lines += ["", "## What runs in int8 on each CPU (the runtime's own census)", "",
              "int8 compute nodes / all compute nodes (Conv, MatMul, FullyConnected and their fused or quantized forms), and",
              "the ops that ran int8, as the runtime on that CPU reports them (ORT's profiler; OpenVINO's execution graph).", "",
              "| bundle | " + " | ".join(c.name for c in cpus) + " |", "|---|" + "---|" * len(cpus)]
    for b in BUNDLES:
        if b.precision != "int8" or b.name not in bundles:
            continue
        row = []
        for c in cpus:
            cen = (results.get(c.name, {}).get(b.name) or {}).get("census")
            if not cen:
                row.append("-")
                continue
            ops = sorted({f"{r['op']}" for r in cen["by_op"] if r["compute"] and r["precision"] in ("int8", "i8", "u8")})
            prec = f", rest {cen['effective_precision']}" if cen.get("effective_precision") else ""
            row.append(f"{cen['int8_compute_nodes']}/{cen['int8_compute_nodes'] + cen['float_compute_nodes']} "
                       f"({', '.join(ops) or 'none'}{prec})")
        lines.append(f"| {b.name} | " + " | ".join(row) + " |")
    if any(cpp.values()):
        lines += ["", "## The C++ app (`coatnet-classify selftest`) on emulated CPUs", "", "| bundle | cpu | exit |", "|---|---|---|"]
        for cname, per in cpp.items():
            for name, r in per.items():
                ok = r["exit_code"] == 0 or (r["exit_code"] == 2 and expected(next(b for b in BUNDLES if b.name == name),
                                                                              CPUS[cname])[0] == "FAILED")
                surprises += not ok
                lines.append(f"| {name} | {cname} | {r['exit_code']}{'' if ok else ' **(unexpected)**: ' + ' '.join(r['stderr'])} |")
    lines += ["", "## What cannot be emulated here", ""]
    lines += [f"- **{what}**: {why}." for what, why in GAPS]
    lines += ["", f"Surprises in this run: {surprises}.", ""]
    path.write_text("\n".join(lines))
    return surprises


def main(argv: list[str] | None = None) -> int:
    from coatnet_deploy import host

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", default=",".join(CPUS), help=f"comma-separated, from: {', '.join(CPUS)}")
    ap.add_argument("--bundles", default=str(WORK / "bundles"), help="where the bundles are built (kept between runs)")
    ap.add_argument("--rebuild", action="store_true", help="export every bundle again")
    ap.add_argument("--only", default="", help="comma-separated bundle names (default: all)")
    ap.add_argument("--markdown", default=str(REPO / "docs" / "DEVICES.md"))
    ap.add_argument("--json", default=str(WORK / "devices.json"))
    ap.add_argument("--no-write", action="store_true", help="do not rewrite the markdown table")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for one CPU's probe process")
    a = ap.parse_args(argv)
    cpus = [CPUS[n.strip()] for n in a.cpus.split(",") if n.strip()]
    if any(c.arch == "aarch64" for c in cpus) and not (SYSROOT_DIR / "site" / ".wheels-done").is_file():
        subprocess.run(["bash", str(REPO / "tools/devices/aarch64-sysroot.sh"), str(SYSROOT_DIR)], check=True,
                       env={**os.environ, "PY": str(VENV_PY)})
    t0 = time.perf_counter()
    cluster, scheduler = start_fleet(cpus)
    try:
        bundles = build_bundles(Path(a.bundles), a.rebuild, scheduler)
        if a.only:
            keep = {n.strip() for n in a.only.split(",")}
            bundles = {k: v for k, v in bundles.items() if k in keep}
        results = run_cpus(cpus, bundles, a.timeout, scheduler)
    finally:
        scheduler.close()
        cluster.shutdown()
    cpp = {c.name: cpp_selftests(c, bundles) for c in cpus}
    seconds = time.perf_counter() - t0
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"cpus": [c.name for c in cpus], "results": results, "cpp": cpp}, indent=1))
    target = Path(a.markdown) if not a.no_write else WORK / "DEVICES.md"
    surprises = write_markdown(target, cpus, bundles, results, cpp, host.cpu_name(), seconds)
    print(target.read_text().split("## The emulated CPUs")[0])
    print(f"device check: {surprises} surprise(s); table in {target}, results in {a.json}")
    return 1 if surprises else 0


if __name__ == "__main__":
    sys.exit(main())
