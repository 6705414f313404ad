"""`coatnet-deploy bench` on the shared tiny bundle: JSON keys, batch lists, the rebuilt PyTorch
reference, an interleaved baseline, --update-report, and the refusals (tampered bundle, batch out of
range, weights that do not match the manifest)."""

from __future__ import annotations

import json

import pytest

from bundle_helpers import copy_bundle, tiny_bundle
from coatnet_deploy.bundle import read_manifest, verify_bundle
from coatnet_deploy.errors import UserError

ROW_KEYS = {"runner", "role", "bundle", "target", "precision", "runs", "batch", "warmup", "iterations", "p50_ms", "p90_ms", "p99_ms",
            "mean_ms", "std_ms", "cv", "noisy", "throughput_ips", "settings", "threads", "warnings", "speedup_vs_reference",
            "speedup_vs_baseline", "samples_ms", "mode"}
FAST = ["--iterations", "3", "--min-time", "0", "--warmup", "1", "--warmup-time", "0", "--threads", "1"]


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the real CLI entry in this process (torch stays imported between tests) -> (exit code, stdout, stderr)."""
    from coatnet_deploy.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One interleaved run: a copy of the tiny bundle, a second copy as --baseline, the reference,
    batches 1 and 3, --update-report. Shared by the assertions below (each CLI run costs seconds)."""
    tmp = tmp_path_factory.mktemp("bench")
    engine = copy_bundle(tmp / "engine")
    baseline = copy_bundle(tmp / "base")
    return engine, baseline, tmp


def test_bench_json_reference_baseline_and_report(bench_run, capsys):
    engine, baseline, _ = bench_run
    code, out, err = cli(capsys, "bench", engine, "--batch", "1,3", "--reference", "--baseline", baseline, "--update-report", "--json", *FAST)
    assert code == 0, err
    res = json.loads(out)  # stdout holds the JSON and nothing else
    assert res["batches"] == [1, 3] and res["mode"] == "latency"
    rows = res["rows"]
    assert {(r["runner"], r["batch"]) for r in rows} == {(n, b) for n in ("engine", "baseline:base", "pytorch") for b in (1, 3)}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["p50_ms"] > 0 and r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / r["p50_ms"])
        assert r["speedup_vs_reference"] == pytest.approx(res_p50(rows, "pytorch", r["batch"]) / r["p50_ms"])
        assert r["speedup_vs_baseline"] == pytest.approx(res_p50(rows, "baseline:base", r["batch"]) / r["p50_ms"])
    for b in (1, 3):
        at_b = [r for r in rows if r["batch"] == b]
        # interleaved: every runner got the same warm-up and measured iteration counts in the same run
        assert len({(r["iterations"], r["warmup"]) for r in at_b}) == 1
    by = {(r["runner"], r["batch"]): r for r in rows}
    assert by[("pytorch", 1)]["speedup_vs_reference"] == 1.0
    # both bundles passed their gates: the faster one at each batch size is named; the reference never is
    for b in (1, 3):
        expected = min(("engine", "baseline:base"), key=lambda n: by[(n, b)]["p50_ms"])
        assert res["fastest_passing"][str(b)] == expected
    assert set(res["session"]) == {"1", "3"} and all(s["rounds"] >= 1 + 3 for s in res["session"].values())
    assert by[("engine", 1)]["settings"]["intra_op_num_threads"] == 1  # the speed-changing settings travel with the numbers
    assert by[("engine", 1)]["role"] == "engine" and by[("baseline:base", 1)]["role"] == "baseline"
    # the rebuilt model (seeded random init from the manifest) reproduces the bundle's stored reference logits
    assert res["reference"]["matches_golden"] is True, res["reference"]
    assert res["reference"]["max_abs_err"] < 1e-4

    # --update-report: report.json has the new latency, and the bundle still verifies with its reports
    report = json.loads((engine / "report.json").read_text())
    assert report["latency"]["batch"] == 1 and report["latency"]["p50_ms"] == pytest.approx(by[("engine", 1)]["p50_ms"])
    assert [d["batch"] for d in report["latency_by_batch"]] == [1, 3]
    assert report["reference_latency"]["p50_ms"] == pytest.approx(by[("pytorch", 1)]["p50_ms"])
    assert "latency" in (engine / "report.md").read_text().lower()
    verify_bundle(engine, check_reports=True)


def res_p50(rows, runner, batch):
    return next(r["p50_ms"] for r in rows if r["runner"] == runner and r["batch"] == batch)


def test_bench_table_text(bench_run, capsys):
    engine, _, _ = bench_run
    code, out, err = cli(capsys, "bench", engine, "--batch", "2", *FAST)
    assert code == 0, err
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.startswith("runner"))
    for col in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "cv", "img/s", "vs ref", "vs baseline"):
        assert col in header
    row = next(ln for ln in lines if ln.startswith("engine "))
    assert row.split()[1] == "2"
    assert "fastest passing engine: b2 engine" in out


def test_bench_refuses_tampered_bundle(tmp_path, capsys):
    b = copy_bundle(tmp_path / "t")
    data = bytearray((b / "model.ort.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "model.ort.onnx").write_bytes(bytes(data))
    code, out, err = cli(capsys, "bench", b, *FAST)
    assert code == 1 and out == ""
    assert "model.ort.onnx" in err and "SHA-256" in err


def test_bench_refuses_batch_outside_bundle_range(capsys):
    code, _, err = cli(capsys, "bench", tiny_bundle(), "--batch", "1,16", *FAST)
    assert code == 1 and "takes batch 1..8" in err and "16" in err
    code, _, err = cli(capsys, "bench", tiny_bundle(), "--batch", "1,x")
    assert code == 1 and "bad batch list" in err


def test_reference_weights_must_match_manifest(tmp_path):
    from coatnet_deploy.bench.reference import reference_model

    manifest = read_manifest(tiny_bundle())
    w = tmp_path / "w.safetensors"
    w.write_bytes(b"not the weights")
    with pytest.raises(UserError, match="exported without weights"):
        reference_model(manifest, str(w))
    with_weights = json.loads(json.dumps(manifest))
    with_weights["model"]["weights_sha256"] = "ab" * 32
    with pytest.raises(UserError, match="(?i)pass --weights"):
        reference_model(with_weights, None)
    with pytest.raises(UserError, match="not the ones this bundle was exported from"):
        reference_model(with_weights, str(w))


def test_bench_weights_without_reference_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "bench", tiny_bundle(), "--weights", tmp_path / "x.pt", *FAST)
    assert code == 1 and "--reference" in err


def test_progress_quiet_when_not_a_terminal(capsys):
    from coatnet_deploy.progress import ProgressLine

    p = ProgressLine()  # pytest captures stderr: not a terminal
    assert not p.enabled and p.bench_callback() is None
    p.say("hidden", force=True)
    p.done()
    assert capsys.readouterr().err == ""
    import io

    s = io.StringIO()
    shown = ProgressLine(enabled=True, stream=s, min_interval_s=0)
    shown.bench_callback("b1: ")("engine", "measure", 3)
    shown.done()
    assert "b1: engine: measure 3" in s.getvalue() and s.getvalue().endswith("\r")
    assert not ProgressLine(enabled=True, quiet=True).enabled  # --json wins


def test_stdout_to_stderr_moves_python_and_c_level_writes(capfd):
    import os

    from coatnet_deploy.progress import stdout_to_stderr

    print("before")
    with stdout_to_stderr():
        print("python-level chatter")
        os.write(1, b"fd-level chatter\n")  # what a C extension or an early-bound log handler writes
    print("after")
    out, err = capfd.readouterr()
    assert out == "before\nafter\n"
    assert "python-level chatter" in err and "fd-level chatter" in err
