#!/usr/bin/env python3
"""The fleet matrix serial and on a local Ray cluster, the per-cell cost of going through Ray, and what a
real fleet would take.

    tools/loopback.sh .venv/bin/python benchmarks/bench_fleet.py              # 8 cells, 2 repeats (~8 min on 2 cores)
    tools/loopback.sh .venv/bin/python benchmarks/bench_fleet.py --repeats 1 --precisions fp32

1. Wall time of one fleet matrix (coatnet_tiny at 64 px; onnxruntime and openvino, fp32 and int8; devices
   x86-64-v3 and aarch64-v8.0), run by the serial scheduler in this process (ARM emulated here) and by Ray
   on a local multi-node cluster (a builder, this machine as the x86-64-v3 node, an emulated cortex-a72
   node), alternately, ``--repeats`` times each. Both produce the same statuses and logits (the cluster
   tests check that); only the schedule differs.
2. Per-cell overhead of Ray: a no-op task's round trip on a device node (scheduling), and the same task
   with a real bundle's bytes as its argument, put by the driver (object-store transfer); medians of
   ``--probes`` calls, against a plain function call.
3. An estimate for a 50-model x 6-device fleet on N nodes, from the measured per-cell build and proof
   times of this run (stated per cell), the Ray overhead, and the assumption that builds and proofs
   spread evenly over the nodes that offer them. Full-size models cost more per cell: the estimate
   scales with the per-cell times, which the table states so that they can be replaced.

Everything listens on 127.0.0.1; run it in a loopback-only namespace (tools/loopback.sh).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coatnet_deploy.bench.tables import Table  # noqa: E402


def fleet_config(out: Path, precisions: list[str], cluster: str | None):
    from coatnet_deploy.bench.matrix import MatrixConfig

    return MatrixConfig(model="coatnet_tiny", image_size=64, num_classes=10, threads=2, targets=["onnxruntime", "openvino"],
                        precisions=precisions, devices=["x86-64-v3", "aarch64-v8.0"], cluster=cluster,
                        emulate_missing=cluster is None, output=str(out))


def specs():
    from coatnet_deploy.fleet import nodes

    return [nodes.NodeSpec(build=True, profiles=()), nodes.node_spec(device=["x86-64-v3"], build=False),
            nodes.node_spec(emulate="cortex-a72", build=False)]


def run_serial(out: Path, precisions: list[str]):
    from coatnet_deploy.fleet.matrix import run_fleet
    from coatnet_deploy.progress import stdout_to_stderr

    t0 = time.perf_counter()
    with stdout_to_stderr():  # the exporters' logs; stdout is for the tables
        res = run_fleet(fleet_config(out, precisions, None))
    return time.perf_counter() - t0, res


def run_cluster(out: Path, precisions: list[str]):
    """Wall time from nothing running: the cluster's start is part of what a user waits for (given apart)."""
    from coatnet_deploy.fleet.local import LocalCluster
    from coatnet_deploy.fleet.matrix import run_fleet
    from coatnet_deploy.fleet.schedulers import RayScheduler

    t0 = time.perf_counter()
    with LocalCluster(specs()) as c:
        sched = RayScheduler(c.address)
        up = time.perf_counter() - t0
        try:
            res = run_fleet(fleet_config(out, precisions, c.address), scheduler=sched)
        finally:
            sched.close()
    return time.perf_counter() - t0, up, res


def _noop(data=None):
    return 0 if data is None else len(data)


def ray_overhead(bundle: Path, probes: int) -> dict[str, float]:
    """Medians (ms): a plain call; a Ray task on the device node with no data; with a bundle's bytes."""
    import ray

    from coatnet_deploy.fleet import nodes, transport
    from coatnet_deploy.fleet.local import LocalCluster

    data = transport.pack(bundle)
    with LocalCluster(specs()) as c:
        ray.init(address=c.address, log_to_driver=False)
        task = ray.remote(num_cpus=0)(_noop).options(resources={nodes.device_resource("x86-64-v3"): 1, nodes.SLOT: 1})
        ray.get(task.remote())  # a worker started on the node

        def timed(fn) -> float:
            samples = []
            for _ in range(probes):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(samples)

        plain = timed(lambda: _noop(data))
        sched = timed(lambda: ray.get(task.remote()))
        transfer = timed(lambda: ray.get(task.remote(ray.put(data))))
        ray.shutdown()
    return {"bytes": len(data), "plain_ms": plain, "task_ms": sched, "task_with_bundle_ms": transfer}


def estimate(build_s: float, prove_native_s: float, overhead_s: float, nodes_n: int) -> float:
    """Hours for 50 models x 4 cells (2 targets x 2 precisions) x 6 devices on ``nodes_n`` nodes: half build,
    half prove (each a node of its kind), work spread evenly; every cell pays the Ray overhead once per job."""
    builds = 50 * 4 * 6  # a bundle is made for its device profile
    proofs = builds
    builders = max(1, nodes_n // 2)
    devices = max(1, nodes_n - builders)
    wall = builds * (build_s + overhead_s) / builders
    wall = max(wall, proofs * (prove_native_s + overhead_s) / devices)
    return wall / 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--probes", type=int, default=30)
    a = ap.parse_args()
    from coatnet_deploy import host

    precisions = [p.strip() for p in a.precisions.split(",") if p.strip()]
    rows, serial_t, cluster_t, ups, last = [], [], [], [], None
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for i in range(a.repeats):
            s, sres = run_serial(Path(tmp) / f"serial-{i}", precisions)
            c, up, cres = run_cluster(Path(tmp) / f"cluster-{i}", precisions)
            serial_t.append(s)
            cluster_t.append(c)
            ups.append(up)
            same = [r.status for r in sres.rows] == [r.status for r in cres.rows] and all(
                x.result.get("outputs_sha256") == y.result.get("outputs_sha256") for x, y in zip(sres.rows, cres.rows))
            rows.append([str(i + 1), f"{s:.1f}", f"{c:.1f}", f"{up:.1f}", f"{s / c:.2f}x", "yes" if same else "NO"])
            last = cres
        build = [r.build["export_s"] for r in last.rows if r.build.get("export_s")]
        native = [r.result["seconds"] for r in last.rows if r.ran_on and not r.ran_on["emulated"]]
        emulated = [r.result["seconds"] for r in last.rows if r.ran_on and r.ran_on["emulated"]]
        over = ray_overhead(Path(last.rows[0].bundle), a.probes)
    cells = len(last.rows)
    print(f"# bench_fleet: {cells} cells (coatnet_tiny 64 px; onnxruntime, openvino x {', '.join(precisions)} x x86-64-v3, "
          f"aarch64-v8.0), {host.cpu_name()}, {__import__('os').cpu_count()} cores\n")
    print(Table(["run", "serial s", "cluster s", "of it: cluster start s", "serial / cluster", "same statuses and logits"], rows).text())
    ratios = [s / c for s, c in zip(serial_t, cluster_t)]
    print(f"\nmedian serial {statistics.median(serial_t):.1f} s, cluster {statistics.median(cluster_t):.1f} s; "
          f"speed-up {min(ratios):.2f}-{max(ratios):.2f}x (the cluster's start included)\n")
    per = [["build (export + parity vs PyTorch), builder node", f"{statistics.median(build):.1f}", str(len(build))],
           ["device proof, x86-64-v3 node (parity, predict, census, b1/b8 timing)", f"{statistics.median(native):.1f}", str(len(native))],
           ["device proof, emulated cortex-a72 node (no timing)", f"{statistics.median(emulated):.1f}", str(len(emulated))]]
    print(Table(["per cell (last cluster run)", "median s", "n"], per, left=1).text())
    oh = [["plain function call, bundle bytes in hand", f"{over['plain_ms']:.3f}"],
          ["Ray task on the device node, no data (scheduling + round trip)", f"{over['task_ms']:.2f}"],
          [f"Ray task with the bundle put by the driver ({over['bytes'] / 1e6:.2f} MB: object-store transfer)",
           f"{over['task_with_bundle_ms']:.2f}"]]
    print()
    print(Table(["Ray overhead per job (median of %d)" % a.probes, "ms"], oh, left=1).text())
    overhead_s = 2 * over["task_with_bundle_ms"] / 1e3  # a cell is two jobs (build, proof), each moves the bundle once
    b, p = statistics.median(build), statistics.median(native)
    est = [[str(n), f"{estimate(b, p, overhead_s, n):.2f}"] for n in (2, 4, 8, 16, 32)]
    print(f"\nestimate: 50 models x 4 cells x 6 devices = 1200 builds and 1200 proofs, at this run's per-cell times "
          f"(build {b:.1f} s, proof {p:.1f} s) plus {overhead_s * 1e3:.0f} ms of Ray per cell; half the nodes build, half prove:")
    print(Table(["nodes", "hours"], est).text())
    print(f"serial, one machine: {1200 * (b + p) / 3600:.2f} hours at the same per-cell times")
    return 0


if __name__ == "__main__":
    sys.exit(main())
