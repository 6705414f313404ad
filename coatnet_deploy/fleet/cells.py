"""A fleet cell, and the two functions that do its work: ``build_cell`` and ``prove_bundles``.

Both are plain functions of plain data (dicts, bytes) so that the same code runs in this process
(the serial scheduler) or as a Ray task on another node (``schedulers.RayScheduler``): nothing about
a cell is written twice. The build is the matrix's own export of one cell (``bench.matrix.export_cell``);
the device side is ``probe.py`` in a child process, natively or under QEMU (``emulation.command``).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: row fields the build fills (bench.matrix.MatrixRow); the bundle path is the driver's to set
BUILD_FIELDS = ("status", "reason", "deferred", "size_mb", "cosine_min", "top1_agreement", "accuracy_drop", "failed_gates",
                "export_s", "warnings", "traceback")


@dataclass(frozen=True)
class FleetCell:
    """model x target x precision x device profile (``gpu`` / ``gpu-ccX.Y`` for TensorRT)."""

    model: str
    target: str
    precision: str
    device: str

    @property
    def key(self) -> str:
        return f"{self.model}/{self.target}-{self.precision}@{self.device}"

    @property
    def folder(self) -> str:
        """Its bundle's folder under the run's output."""
        return f"{self.model}/{self.target}-{self.precision}@{self.device}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_info(emulate: str | None = None) -> dict[str, Any]:
    """The node this runs on, as the "ran on" column shows it: Ray node id, host, CPU, profiles, real or emulated."""
    from coatnet_deploy import host
    from coatnet_deploy.fleet import emulation, nodes

    info: dict[str, Any] = {"node_id": "local", "host": socket.gethostname(), "host_cpu": host.cpu_name(), "labels": {}}
    try:
        import ray  # only present on fleet nodes; never imported for that on a plain run

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            info["node_id"] = ctx.get_node_id()
            info["labels"] = {k: v for k, v in (ctx.get_node_labels() or {}).items() if k.startswith("coatnet")}
    except ImportError:
        pass
    # the node's label (Ray), else the environment `worker --emulate` gives its raylet and so its tasks
    emulate = emulate or info["labels"].get(nodes.LABEL_EMULATE) or os.environ.get("COATNET_DEPLOY_EMULATE")
    info["emulated"] = bool(emulate)
    info["cpu"] = f"{emulate} (QEMU on {info['host_cpu']})" if emulate else info["host_cpu"]
    if emulate:
        info["emulate"] = emulation.get(emulate).name
    return info


def build_cell(cell: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Export one cell on this node -> {"row": build fields, "bundle": tar bytes or None, "node": node_info()}.

    ``settings``: the matrix config's keys (bench.matrix.MatrixConfig) for this model. A CPU cell is
    exported for its device profile; a TensorRT cell is exported with the engine build deferred to
    its GPU node. The bundle is written to a private temporary folder and travels as bytes.
    """
    from coatnet_deploy.bench.matrix import MatrixConfig, MatrixRow, export_cell, matrix_cells
    from coatnet_deploy.fleet import nodes, transport

    c = FleetCell(**cell)
    export = dict(settings.get("export") or {})
    gpu = nodes.is_gpu_device(c.device)
    if not gpu:
        export["device"] = c.device
    threads = settings.get("threads") or os.cpu_count()  # explicit: a Ray worker's OMP_NUM_THREADS=1 must not change torch's
    row = MatrixRow(c.target, c.precision)
    with tempfile.TemporaryDirectory(prefix="coatnet-fleet-build-") as tmp:
        cfg = MatrixConfig(**{**settings, "model": c.model, "export": export, "threads": threads, "output": tmp,
                              "targets": [c.target], "precisions": [c.precision]})
        known = [k for k in matrix_cells() if k.target == c.target and k.precision == c.precision]
        if not known:
            row.error(f"no cell {c.target}/{c.precision} in this installation's target table")
            manifest = None
        else:
            manifest = export_cell(cfg, row, known[0], Path(tmp), None, force_defer=gpu)
        data = transport.pack(row.bundle) if manifest is not None and row.bundle else None
    fields = {k: getattr(row, k) for k in BUILD_FIELDS}
    if manifest is not None:
        fields["runtime_versions"] = manifest.get("versions") or {}
    return {"row": fields, "bundle": data, "node": node_info()}


def _die_with_parent() -> None:
    # A force-cancelled Ray task's worker is killed; its probe (a QEMU process, maybe) must not outlive it.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


def run_probes(bundles: dict[str, Path], emulate: str | None, batches: list[int], threads: int | None,
               timeout_s: float | None) -> dict[str, dict[str, Any]]:
    """Every bundle through probe.py in child processes on this node (natively, or as the emulated CPU).

    A child that dies takes one bundle with it (status CRASH, with its exit status); the rest run in a
    new one. ``timeout_s`` bounds each child.
    """
    from coatnet_deploy.fleet import emulation

    results: dict[str, dict] = {}
    todo = list(bundles)
    args = ["-m", "coatnet_deploy.fleet.probe"] + (["--bench", ",".join(map(str, batches))] if batches else []) \
        + (["--threads", str(threads)] if threads else [])
    while todo:
        paths = [str(bundles[n]) for n in todo]
        if emulate:
            cmd, env = emulation.command(emulation.get(emulate), args + paths)
        else:
            cmd, env = [sys.executable, *args, *paths], {**os.environ, "PYTHONUNBUFFERED": "1"}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(emulation.PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_die_with_parent)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
            code: Any = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            code = f"timeout after {timeout_s:g} s"
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        done = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        for name, res in zip(todo, done):
            results[name] = res
        todo = todo[len(done):]
        if todo and code != 0:
            tail = [line for line in stderr.strip().splitlines() if "TCG doesn't support" not in line][-2:]
            results[todo[0]] = {"status": "CRASH", "message": f"process ended with {code} ({' | '.join(tail)})"}
            todo = todo[1:]
        elif todo:
            raise RuntimeError(f"probe stopped early without an error: {stderr.strip()[-300:]}")
    return results


def build_trt_engine(bundle: Path, timeout_s: float | None) -> dict[str, Any]:
    """On a GPU node: the bundle's own build_engine.sh (TensorRT for this GPU), its output's last lines."""
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(bundle / "build_engine.sh")], capture_output=True, text=True, timeout=timeout_s)
    out = {"exit_code": r.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "tail": (r.stdout + r.stderr).strip().splitlines()[-3:]}
    return out


def prove_bundles(items: list[tuple[str, bytes]], placement: dict[str, Any], batches: list[int], threads: int | None,
                  timeout_s: float | None) -> dict[str, Any]:
    """The device side, on the node the placement chose: each bundle unpacked and checked against its
    manifest.sha256 on arrival, a TensorRT bundle's engine built here, then probe.py on all of them.

    -> {"results": {name: probe result}, "node": node_info()}. An emulated node (its label, or the
    placement's ``emulate``) runs the probe under QEMU and times nothing.
    """
    from coatnet_deploy.errors import UserError
    from coatnet_deploy.fleet import transport

    node = node_info(placement.get("emulate"))
    emulate = node.get("emulate")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="coatnet-fleet-device-") as tmp:
        paths: dict[str, Path] = {}
        for i, (name, data) in enumerate(items):
            try:
                paths[name] = transport.unpack(data, Path(tmp) / f"b{i}")
            except UserError as e:
                results[name] = {"status": "ERROR", "message": f"on arrival: {e}"}
                continue
            deferred = (json.loads((paths[name] / "manifest.json").read_text()).get("engine") or {}).get("deferred")
            if deferred and not emulate:
                engine = build_trt_engine(paths[name], timeout_s)
                if engine["exit_code"] != 0:
                    results[name] = {"status": "ERROR", "message": f"build_engine.sh exit {engine['exit_code']}: "
                                     f"{' | '.join(engine['tail'])}", "engine_build": engine}
                    del paths[name]
                    continue
        results.update(run_probes(paths, emulate, [] if emulate else batches, threads, timeout_s))
    return {"results": results, "node": node}
