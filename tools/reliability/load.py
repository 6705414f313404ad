"""Under load: one Classifier shared by 8 threads, and 4 processes with a Classifier each, classify the
same generated images as a serial run; every logits row must be bit-identical (the same bytes).

    .venv/bin/python tools/reliability/load.py                 # 2,000 images, all six CPU bundles; writes docs/RELIABILITY.md
    .venv/bin/python tools/reliability/load.py --images 200 --bundles onnxruntime-fp32 --no-doc   # CI's short run

No wait is unbounded: thread joins and the process pool's results have a deadline (--timeout); a hang
ends the run as a failure naming what did not finish (exit 1). Exit 0 when every bundle passes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ALL_BUNDLES, export_bundles, finish, machine_note, make_images, scratch  # noqa: E402

THREADS, PROCESSES = 8, 4


class Hang(Exception):
    pass


def _logits(c, path: Path) -> bytes:
    return c.logits(c.preprocess(path)[None]).tobytes()


def serial(bundle: Path, paths: list[Path], runtime_threads: int) -> list[bytes]:
    from coatnet_deploy.runtime import Classifier

    with Classifier.load(bundle, threads=runtime_threads) as c:
        return [_logits(c, p) for p in paths]


def shared_threads(bundle: Path, paths: list[Path], runtime_threads: int, timeout: float, n: int = THREADS) -> list[bytes]:
    """``n`` threads pull images from one queue and classify them with one shared Classifier."""
    from coatnet_deploy.runtime import Classifier

    out: list[bytes | None] = [None] * len(paths)
    errors: list[BaseException] = []
    todo: queue.Queue = queue.Queue()
    for i in range(len(paths)):
        todo.put(i)
    start = threading.Barrier(n)
    c = Classifier.load(bundle, threads=runtime_threads)

    def work() -> None:
        try:
            start.wait(max(timeout, 60.0))  # not the pass deadline: a short one must end in Hang, not here
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                out[i] = _logits(c, paths[i])
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    # Daemon threads: a hung one cannot keep the process alive after the failure is reported.
    threads = [threading.Thread(target=work, daemon=True, name=f"load-{t}") for t in range(n)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    alive = [th.name for th in threads if th.is_alive()]
    if alive:
        # The Classifier stays open: closing it under threads still inside the runtime could crash.
        raise Hang(f"{len(alive)} of {n} threads still running after {timeout:g} s "
                   f"({sum(x is not None for x in out)} of {len(paths)} images done)")
    c.close()
    if errors:
        raise errors[0]
    return out  # type: ignore[return-value]


def _process_part(args: tuple) -> list[bytes]:
    bundle, paths, runtime_threads = args
    return serial(Path(bundle), [Path(p) for p in paths], runtime_threads)


def processes(bundle: Path, paths: list[Path], runtime_threads: int, timeout: float, n: int = PROCESSES) -> list[bytes]:
    """``n`` spawned processes, each with its own Classifier, take every n-th image."""
    parts = [(str(bundle), [str(p) for p in paths[k::n]], runtime_threads) for k in range(n)]
    ctx = multiprocessing.get_context("spawn")  # no forked copy of this process's runtime threads
    pool = ctx.Pool(n)
    try:
        results = pool.map_async(_process_part, parts).get(timeout)
    except multiprocessing.TimeoutError:
        raise Hang(f"{n} processes had not all finished after {timeout:g} s") from None
    finally:
        pool.terminate()
        pool.join()
    out: list[bytes] = [b""] * len(paths)
    for k, res in enumerate(results):
        out[k::n] = res
    return out


def check_bundle(name: str, bundle: Path, paths: list[Path], runtime_threads: int, timeout: float, say=print) -> dict:
    row = {"bundle": name, "images": len(paths)}
    t = time.monotonic()
    ref = serial(bundle, paths, runtime_threads)
    row["serial_s"] = time.monotonic() - t
    for mode, fn in (("threads", shared_threads), ("processes", processes)):
        t = time.monotonic()
        try:
            got = fn(bundle, paths, runtime_threads, timeout)
        except Hang as e:
            row[mode] = f"HANG: {e}"
            continue
        finally:
            row[f"{mode}_s"] = time.monotonic() - t
        diff = [i for i, (a, b) in enumerate(zip(ref, got)) if a != b]
        row[mode] = "identical" if not diff and len(got) == len(ref) else \
            f"DIFFERENT: {len(diff)} of {len(ref)} images (first: {paths[diff[0]].name})"
    row["passed"] = row["threads"] == "identical" and row["processes"] == "identical"
    say(f"{name:<18} {row['images']:>6}  serial {row['serial_s']:6.1f} s  8 threads: {row['threads']} "
        f"({row['threads_s']:.1f} s)  4 processes: {row['processes']} ({row['processes_s']:.1f} s)")
    return row


def markdown(rows: list[dict], seconds: float, runtime_threads: int) -> str:
    lines = [f"Last full run: `tools/reliability/load.py`, {rows[0]['images']:,} images, runtime threads "
             f"{runtime_threads}, {seconds / 60:.1f} min in all on {machine_note()}.", "",
             "| bundle | images | 8 threads, one Classifier | 4 processes | serial s | threads s | processes s |",
             "|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['bundle']} | {r['images']:,} | {r['threads']} | {r['processes']} | {r['serial_s']:.1f} | "
                     f"{r['threads_s']:.1f} | {r['processes_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--bundles", default=",".join(ALL_BUNDLES), help="comma-separated target-precision names")
    ap.add_argument("--bundle-dir", type=Path, default=None, help="where the tiny bundles are kept (reused)")
    ap.add_argument("--runtime-threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900, help="seconds each threaded / multi-process pass may take")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/RELIABILITY.md")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    work = scratch("reliability-load-")
    bundles = export_bundles(a.bundles.split(","), a.bundle_dir or work / "bundles")
    paths = make_images(a.images, work / "images", a.seed)
    rows = [check_bundle(n, b, paths, a.runtime_threads, a.timeout) for n, b in bundles.items()]
    seconds = time.monotonic() - t0
    return finish("load", markdown(rows, seconds, a.runtime_threads), [r["bundle"] for r in rows if not r["passed"]],
                  not a.no_doc)


if __name__ == "__main__":
    sys.exit(main())
