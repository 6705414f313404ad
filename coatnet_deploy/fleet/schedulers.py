"""Who runs a fleet's cells: this process, one after another (``SerialScheduler``), or a Ray cluster
(``RayScheduler``). The driver (``fleet.matrix.run_fleet``) sees one small interface:

    offered() -> resources live nodes offer    build(cell, settings, on_driver) -> job
    driver_builds() -> can pinned builds run
    bundle_bytes(build job) -> bytes           prove(job, name, placement, ...) -> job
    wait(jobs, timeout) -> done jobs           result(job) -> value (or raises CellLost)
    started_jobs() -> "kind:key" a node began  lost_node(job) -> which node had it
    cancel(job)                                close()

Both call the same functions (``fleet.cells.build_cell`` / ``prove_bundles``); Ray only decides where.
Ray is imported inside RayScheduler (and by fleet.local and cells.node_info on a node): a plain matrix never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from coatnet_deploy.errors import UserError
from coatnet_deploy.fleet import cells, nodes

#: how often Ray re-runs a cell whose node or worker died (system failures only; a cell's own error is final)
TASK_RETRIES = 2


class CellLost(Exception):
    """The node (or worker) running a cell died and no retry could finish it."""

    def __init__(self, message: str, node: str | None):
        super().__init__(message)
        self.node = node


@dataclass
class Job:
    """One submitted piece of a cell's work: a build or a device proof."""

    kind: str  # "build" | "prove"
    key: str
    resource: str
    ref: Any = None  # Ray: the ObjectRef of the result (build: of the metadata)
    bundle_ref: Any = None  # build on Ray: the ObjectRef of the bundle bytes
    value: Any = None  # serial: the result
    error: BaseException | None = None


# ------------------------------------------------------------------------------------------------
# serial: this process, in order
# ------------------------------------------------------------------------------------------------

class SerialScheduler:
    """Every cell in this process, one after another: the matrix without a cluster. This machine is
    the one node: it builds, proves its own profiles natively and, where QEMU and the sysroot are
    installed, emulates the rest (``--emulate-missing``)."""

    name = "serial"

    def __init__(self) -> None:
        self.spec = local_node_spec()

    def describe(self) -> str:
        return "serial, in this process"

    def offered(self) -> set[str]:
        return set(self.spec.resources())

    def driver_builds(self) -> bool:
        return True  # this process is the driver and the builder

    def build(self, cell: cells.FleetCell, settings: dict[str, Any], on_driver: bool) -> Job:
        job = Job("build", cell.key, nodes.BUILD)
        try:
            out = cells.build_cell(cell.to_dict(), settings)
            job.value, job.bundle_ref = out, out.pop("bundle")
        except Exception as e:  # noqa: BLE001 - recorded in the cell's row by the driver
            job.error = e
        return job

    def bundle_bytes(self, job: Job) -> bytes | None:
        return job.bundle_ref

    def prove(self, build: Job, name: str, placement: nodes.Placement, batches: list[int], threads: int | None,
              timeout_s: float | None) -> Job:
        job = Job("prove", build.key, placement.resource)
        try:
            job.value = cells.prove_bundles([(name, build.bundle_ref)], placement.to_dict(), batches, threads, timeout_s)
        except Exception as e:  # noqa: BLE001
            job.error = e
        return job

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        return list(jobs)

    def result(self, job: Job) -> Any:
        if job.error is not None:
            raise job.error
        return job.value

    def started_jobs(self) -> set[str]:
        return set()  # jobs here are done when submitted: nothing to time out

    def lost_node(self, job: Job) -> str | None:
        return None

    def cancel(self, job: Job) -> None:
        pass

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------

def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("--cluster needs Ray", "the `cluster` extra is not installed",
                        "pip install 'coatnet-deploy[cluster]' (or run the matrix without --cluster)") from None
    return ray


def _build_task(ledger, cell: dict[str, Any], settings: dict[str, Any]):
    """Ray task: the build, recorded in the ledger first (which node took it)."""
    info = cells.node_info()
    ledger.started.remote(cells.FleetCell(**cell).key, "build", info)
    out = cells.build_cell(cell, settings)
    return {k: v for k, v in out.items() if k != "bundle"}, out["bundle"]


def _prove_task(ledger, key: str, names: list[str], placement: dict[str, Any], batches, threads, timeout_s, *bundles: bytes):
    """Ray task: the device side. The bundles are top-level arguments so that Ray hands them over as bytes."""
    ledger.started.remote(key, "prove", cells.node_info(placement.get("emulate")))
    return cells.prove_bundles(list(zip(names, bundles)), placement, batches, threads, timeout_s)


class _Ledger:
    """Ray actor on the driver's node: which node started which job (to name it when that node dies)."""

    def __init__(self) -> None:
        self.log: dict[str, dict[str, Any]] = {}

    def started(self, key: str, kind: str, info: dict[str, Any]) -> None:
        self.log[f"{kind}:{key}"] = info

    def get(self) -> dict[str, dict[str, Any]]:
        return dict(self.log)


def local_node_spec() -> nodes.NodeSpec:
    """``--cluster local``: this machine as one node (builder, its own profiles, and an emulator where QEMU is ready)."""
    from coatnet_deploy.fleet import emulation

    can_emulate = all(emulation.missing(c) is None for c in emulation.CPUS.values() if c.profile)
    return nodes.NodeSpec(build=True, profiles=tuple(nodes.host_profiles()), emulator=can_emulate, gpu=nodes.gpu_facts())


class RayScheduler:
    """Cells as Ray tasks, placed by the custom resources nodes advertise (``fleet.nodes``).

    ``address``: a Ray address (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``), or ``local`` for a
    private single-node Ray on this machine (loopback only, no dashboard), shut down by ``close``.
    """

    name = "ray"

    def __init__(self, address: str, retries: int = TASK_RETRIES) -> None:
        ray = self.ray = _ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a build farm
        self.address = address
        self.retries = retries
        self.owns = not ray.is_initialized()  # a caller's own connection (notebooks, tests): use it, leave it open
        if self.owns and address == "local":
            spec = local_node_spec()
            ray.init(address="local", num_cpus=os.cpu_count(), resources=spec.resources(), labels=spec.labels(),
                     include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
        elif self.owns:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UserError(f"cannot connect to the Ray cluster at '{address}'", first,
                                "start it (`coatnet-deploy worker --head`), check the address, or use --cluster local") from None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.driver_node = ray.get_runtime_context().get_node_id()
        pin = NodeAffinitySchedulingStrategy(node_id=self.driver_node, soft=False)
        self.ledger = ray.remote(num_cpus=0)(_Ledger).options(scheduling_strategy=pin).remote()
        self._build = ray.remote(num_cpus=0, num_returns=2, max_retries=retries, retry_exceptions=False)(_build_task)
        self._prove = ray.remote(num_cpus=0, max_retries=retries, retry_exceptions=False)(_prove_task)
        self._pin = pin

    def describe(self) -> str:
        alive = [n for n in self.ray.nodes() if n.get("Alive")]
        return f"Ray {self.ray.__version__} at {self.address}: {len(alive)} node(s)"

    def offered(self) -> set[str]:
        return {k for n in self.ray.nodes() if n.get("Alive") for k, v in (n.get("Resources") or {}).items() if v > 0}

    def driver_builds(self) -> bool:
        node = next((n for n in self.ray.nodes() if n.get("NodeID") == self.driver_node), None)
        return bool(node and (node.get("Resources") or {}).get(nodes.BUILD))

    def build(self, cell: cells.FleetCell, settings: dict[str, Any], on_driver: bool) -> Job:
        opts: dict[str, Any] = {"resources": {nodes.BUILD: 1}}
        if on_driver:  # it reads files on the driver's disk (weights, images): they never leave it but inside bundles
            opts["scheduling_strategy"] = self._pin
        meta, data = self._build.options(**opts).remote(self.ledger, cell.to_dict(), settings)
        return Job("build", cell.key, nodes.BUILD, ref=meta, bundle_ref=data)

    def bundle_bytes(self, job: Job) -> bytes | None:
        return self.ray.get(job.bundle_ref)

    def prove(self, build: Job, name: str, placement: nodes.Placement, batches: list[int], threads: int | None,
              timeout_s: float | None) -> Job:
        # the bundle goes from the builder's object store to the device node: never through the driver
        return self.prove_many(build.key, [(name, build.bundle_ref)], placement, batches, threads, timeout_s)

    def prove_many(self, key: str, items: list[tuple[str, Any]], placement: nodes.Placement, batches: list[int],
                   threads: int | None, timeout_s: float | None) -> Job:
        """Several bundles (bytes or ObjectRefs) proven in one job on one node (the device check: one probe per CPU)."""
        ref = self._prove.options(resources={placement.resource: 1, nodes.SLOT: 1}).remote(
            self.ledger, key, [n for n, _ in items], placement.to_dict(), batches, threads, timeout_s, *[b for _, b in items])
        return Job("prove", key, placement.resource, ref=ref)

    def wait(self, jobs: list[Job], timeout: float) -> list[Job]:
        if not jobs:
            return []
        by_ref = {j.ref: j for j in jobs}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)
        return [by_ref[r] for r in ready]

    def _node_of(self, job: Job) -> str | None:
        try:
            info = self.ray.get(self.ledger.get.remote(), timeout=10).get(f"{job.kind}:{job.key}")
        except Exception:  # noqa: BLE001 - naming the node is best effort
            return None
        return f"{info['node_id'][:12]} ({info['host']}, {info['cpu']})" if info else None

    def result(self, job: Job) -> Any:
        ex = self.ray.exceptions
        try:
            return self.ray.get(job.ref)
        except (ex.NodeDiedError, ex.WorkerCrashedError, ex.ObjectLostError, ex.OwnerDiedError) as e:
            node = self._node_of(job)
            raise CellLost(f"{type(e).__name__} after {self.retries} retries", node) from None
        except ex.RayTaskError as e:
            raise e.as_instanceof_cause() from None

    def started_jobs(self) -> set[str]:
        """``kind:key`` of every job a node has started (the ledger)."""
        try:
            return set(self.ray.get(self.ledger.get.remote(), timeout=10))
        except Exception:  # noqa: BLE001 - the next loop asks again
            return set()

    def lost_node(self, job: Job) -> str | None:
        return self._node_of(job)

    def cancel(self, job: Job) -> None:
        for ref in (job.ref, job.bundle_ref if job.kind == "build" else None):
            if ref is not None:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass

    def close(self) -> None:
        try:
            self.ray.kill(self.ledger)
        except Exception:  # noqa: BLE001 - its node may be gone
            pass
        if self.owns:
            self.ray.shutdown()
