"""Runs the C++ app's libFuzzer targets (examples/cpp/fuzz): `make fuzz` and the long campaign.

    python tools/fuzz/run.py --seconds 60                 # make fuzz: each target ~60 s, one after another
    python tools/fuzz/run.py --cpu-minutes 30 --parallel 4 --json build/fuzz/campaign.json   # the campaign
    python tools/fuzz/run.py --replay                     # one pass over the seeds and regressions (tests)
    python tools/fuzz/run.py --coverage build/fuzz-campaign/corpus   # line coverage of our sources by a corpus

First every regression input (examples/cpp/fuzz/regressions/<target>/, inputs that once crashed) is run
once: a regression fails at once. Then each target fuzzes a working copy of its committed seed corpus
(build/fuzz/corpus/<target>, kept between runs so a later run starts where the last one stopped) in
libFuzzer's fork mode, which keeps going after a crash and saves each one under
build/fuzz/artifacts/<target>/. A target stops after --seconds of wall time, or once its process tree
has used --cpu-minutes of CPU (utime + stime of libFuzzer and its children: the figure the campaign
promises, whatever else the machine runs). Exit 1 if anything crashed, timed out or ran out of memory;
the table says which inputs to turn into regressions (docs/RELIABILITY.md, "Fuzzing").

Standard library only: it runs before anything is installed but clang.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "examples" / "cpp" / "fuzz"
TARGETS = ("image", "npy", "manifest", "resample")
# Per-input limits: a 4 Mpixel image (the fuzz build's limit) decodes and resizes in well under a second.
TIMEOUT_S = 10
RSS_LIMIT_MB = 2048
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children, reaped (cutime, cstime) or alive."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK  # utime stime cutime cstime
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        pass
    return total


def build(build_dir: Path) -> Path:
    if not (build_dir / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(FUZZ), "-B", str(build_dir), "-DCMAKE_CXX_COMPILER=clang++"], check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2)], check=True,
                   stdout=subprocess.DEVNULL)
    return build_dir


def replay(build_dir: Path) -> list[str]:
    """Every committed seed and regression input once, no mutation."""
    failed = []
    for t in TARGETS:
        dirs = [str(d) for d in (FUZZ / "corpus" / t, FUZZ / "regressions" / t) if d.is_dir()]
        r = subprocess.run([str(build_dir / f"fuzz_{t}"), "-runs=0", f"-timeout={TIMEOUT_S}", *dirs],
                           capture_output=True, text=True)
        n = sum(1 for d in dirs for p in Path(d).iterdir() if p.is_file() and p.name != "README.md")
        print(f"replay {t}: {n} inputs {'ok' if r.returncode == 0 else 'FAILED'}")
        if r.returncode:
            failed.append(t)
            sys.stderr.write(r.stderr[-4000:])
    return failed


SOURCES = ("image.cpp", "preprocess.cpp", "resample.cpp", "npy.cpp", "bundle.cpp")


def coverage(corpus_root: Path, build_dir: Path) -> list[dict]:
    """Source-based coverage of the app's parser files when every target replays its corpus
    (corpus_root/<target>, plus the committed seeds and regressions)."""
    cov_dir = build_dir.parent / (build_dir.name + "-cov")
    if not (cov_dir / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(FUZZ), "-B", str(cov_dir), "-DCMAKE_CXX_COMPILER=clang++",
                        "-DCOATNET_FUZZ_COVERAGE=ON"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(cov_dir), "--parallel", str(os.cpu_count() or 2)], check=True,
                   stdout=subprocess.DEVNULL)
    profiles = []
    for t in TARGETS:
        dirs = [str(d) for d in (corpus_root / t, FUZZ / "corpus" / t, FUZZ / "regressions" / t) if d.is_dir()]
        prof = cov_dir / f"{t}.profraw"
        subprocess.run([str(cov_dir / f"fuzz_{t}"), "-runs=0", *dirs], capture_output=True,
                       env={**os.environ, "LLVM_PROFILE_FILE": str(prof)}, check=True)
        profiles.append(str(prof))
    tool = lambda name: shutil.which(f"{name}-14") or shutil.which(name) or name  # noqa: E731
    merged = cov_dir / "all.profdata"
    subprocess.run([tool("llvm-profdata"), "merge", "-sparse", *profiles, "-o", str(merged)], check=True)
    objects = [str(cov_dir / f"fuzz_{TARGETS[0]}")] + [a for t in TARGETS[1:] for a in ("-object", str(cov_dir / f"fuzz_{t}"))]
    out = subprocess.run([tool("llvm-cov"), "export", "-summary-only", f"-instr-profile={merged}", *objects,
                          *[str(FUZZ.parent / "src" / f) for f in SOURCES]], check=True, capture_output=True, text=True)
    rows = []
    for f in json.loads(out.stdout)["data"][0]["files"]:
        lines, regions = f["summary"]["lines"], f["summary"]["regions"]
        rows.append({"file": Path(f["filename"]).name, "lines": lines["count"], "lines_covered": lines["covered"],
                     "line_pct": round(lines["percent"], 1), "regions": regions["count"],
                     "region_pct": round(regions["percent"], 1)})
    return sorted(rows, key=lambda r: SOURCES.index(r["file"]) if r["file"] in SOURCES else 99)


def regressions(build_dir: Path) -> list[str]:
    failed = []
    for t in TARGETS:
        inputs = sorted(p for p in (FUZZ / "regressions" / t).glob("*") if p.is_file() and p.name != "README.md")
        if not inputs:
            continue
        r = subprocess.run([str(build_dir / f"fuzz_{t}"), f"-timeout={TIMEOUT_S}", *map(str, inputs)],
                           capture_output=True, text=True)
        status = "ok" if r.returncode == 0 else "FAILED"
        print(f"regressions {t}: {len(inputs)} inputs {status}")
        if r.returncode:
            failed.append(t)
            sys.stderr.write(r.stderr[-4000:])
    return failed


STATS = re.compile(r"#(\d+):?\s+\w*\s*cov: (\d+) ft: (\d+) corp: (\d+)")
FAILED_JOBS = re.compile(r"oom/timeout/crash: (\d+)/(\d+)/(\d+)")


def start(t: str, build_dir: Path, seconds: float | None) -> tuple[subprocess.Popen, Path]:
    corpus = build_dir / "corpus" / t
    artifacts = build_dir / "artifacts" / t
    corpus.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(artifacts, ignore_errors=True)  # this run's findings only
    artifacts.mkdir(parents=True)
    log = build_dir / f"fuzz_{t}.log"
    cmd = [str(build_dir / f"fuzz_{t}"), "-fork=1", "-ignore_crashes=1", "-ignore_timeouts=1", "-ignore_ooms=1",
           f"-timeout={TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}", f"-artifact_prefix={artifacts}/",
           "-print_final_stats=1"]
    if seconds:
        cmd.append(f"-max_total_time={int(seconds)}")
    d = FUZZ / f"{t}.dict"
    if d.exists():
        cmd.append(f"-dict={d}")
    # The first corpus folder is the one new inputs go to; the seeds are read from the repository.
    cmd += [str(corpus), str(FUZZ / "corpus" / t)]
    if (FUZZ / "regressions" / t).is_dir():
        cmd.append(str(FUZZ / "regressions" / t))
    # Fork mode keeps each job's corpus and log under TMPDIR: a private one, so that nothing that tidies /tmp
    # while a campaign runs for hours can make every later job fail.
    tmp = build_dir / "tmp" / t
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp)},
                            preexec_fn=lambda: os.nice(int(os.environ.get("FUZZ_NICE", "0"))))
    return proc, log


def summary(t: str, log: Path, cpu: float, wall: float, build_dir: Path) -> dict:
    text = log.read_text(errors="replace")
    last = STATS.findall(text)
    execs, cov, ft, corp = (int(x) for x in last[-1]) if last else (0, 0, 0, 0)
    total = re.search(r"Loaded \d+ modules\s+\((\d+) inline 8-bit counters\)", text)
    found = sorted(p.name for p in (build_dir / "artifacts" / t).glob("*") if p.is_file())
    # libFuzzer's own count of fork-mode jobs that ended in an OOM, a timeout or a crash. A count above the
    # saved inputs means jobs died without saving one (killed from outside): the run proves less than it says.
    jobs = FAILED_JOBS.findall(text)
    failed_jobs = sum(int(x) for x in jobs[-1]) if jobs else 0
    return {"target": t, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "execs": execs, "cov_edges": cov,
            "edges_instrumented": int(total.group(1)) if total else None, "features": ft, "corpus": corp,
            "findings": found, "failed_jobs": failed_jobs, "unsaved_failures": max(0, failed_jobs - len(found))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, help="wall-clock seconds per target")
    ap.add_argument("--cpu-minutes", type=float, help="stop each target after this much CPU time")
    ap.add_argument("--parallel", type=int, default=1, help="targets at once")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--build-dir", type=Path, default=REPO / "build" / "fuzz")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--replay", action="store_true", help="only run every seed and regression input once")
    ap.add_argument("--coverage", type=Path, metavar="CORPUS_ROOT",
                    help="line coverage of src/ when each target replays CORPUS_ROOT/<target> (a coverage build)")
    a = ap.parse_args(argv)
    if a.coverage:
        rows = coverage(a.coverage.resolve(), a.build_dir.resolve())
        print(f"{'file':16} {'lines':>6} {'covered':>8} {'lines %':>8} {'regions %':>9}")
        for r in rows:
            print(f"{r['file']:16} {r['lines']:6d} {r['lines_covered']:8d} {r['line_pct']:8.1f} {r['region_pct']:9.1f}")
        if a.json:
            a.json.write_text(json.dumps({"coverage": rows}, indent=2) + "\n")
        return 0
    if not (a.seconds or a.cpu_minutes or a.replay):
        ap.error("give --seconds, --cpu-minutes or --replay")
    build_dir = build(a.build_dir.resolve())
    if a.replay:
        return 1 if replay(build_dir) else 0
    failed = regressions(build_dir)
    results, pending = [], list(a.targets)
    running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    stopping: set[str] = set()
    while pending or running:
        while pending and len(running) < a.parallel:
            t = pending.pop(0)
            proc, log = start(t, build_dir, a.seconds)
            running[t] = (proc, log, time.monotonic())
        time.sleep(2)
        for t, (proc, log, t0) in list(running.items()):
            if a.cpu_minutes and t not in stopping and cpu_seconds(proc.pid) >= a.cpu_minutes * 60:
                # A fork-mode parent ends on SIGTERM and stops its job. SIGINT to the group would only kill the
                # running job, which libFuzzer counts as a crash before it starts the next one.
                os.kill(proc.pid, signal.SIGTERM)
                stopping.add(t)
            pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # a job the parent left behind
                except ProcessLookupError:
                    pass
                # wait4's rusage: libFuzzer's own CPU time plus that of the children it reaped
                results.append(summary(t, log, usage.ru_utime + usage.ru_stime, time.monotonic() - t0, build_dir))
                proc.returncode = 0  # reaped here, not by Popen
                del running[t]
    results.sort(key=lambda r: TARGETS.index(r["target"]))
    print(f"{'target':10} {'CPU min':>8} {'wall min':>8} {'execs':>11} {'exec/CPU-s':>10} {'edges':>6} {'of':>6} {'corpus':>6}  findings")
    for r in results:
        rate = r["execs"] / r["cpu_s"] if r["cpu_s"] else 0
        print(f"{r['target']:10} {r['cpu_s'] / 60:8.1f} {r['wall_s'] / 60:8.1f} {r['execs']:11,d} {rate:10,.0f} "
              f"{r['cov_edges']:6d} {r['edges_instrumented'] or 0:6d} {r['corpus']:6d}  {', '.join(r['findings']) or 'none'}"
              + (f" (+{r['unsaved_failures']} failed jobs without a saved input: see {r['target']}'s log)" if r["unsaved_failures"] else ""))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"results": results, "regressions_failed": failed}, indent=2) + "\n")
    bad = failed + [r["target"] for r in results if r["findings"] or r["unsaved_failures"]]
    if bad:
        print(f"fuzz: findings in {', '.join(sorted(set(bad)))}: inputs under {build_dir}/artifacts/; reproduce with "
              f"{build_dir}/fuzz_<target> <input>, fix, and add the input to examples/cpp/fuzz/regressions/<target>/",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
