"""The target x precision matrix: a real run on a subset (coatnet_tiny at 64 px) where one cell fails a
gate (an impossible gate from the config's `export:` section), INT8 cells error (their calibration
folder does not exist), TensorRT is deferred, and everything still ends in one table; the JSON and
Markdown tables agree; config validation; exit codes; the fastest passing engine per batch size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coatnet_deploy.errors import UserError
from coatnet_deploy.bench.matrix import MatrixConfig, MatrixResult, MatrixRow, make_matrix_config, matrix_cells, run_matrix

REPO = Path(__file__).resolve().parent.parent
TINY = {"model": "coatnet_tiny", "image_size": 64, "num_classes": 10, "threads": 1,
        "bench": {"warmup_iters": 1, "warmup_s": 0.0, "min_iters": 3, "min_time_s": 0.0, "max_time_s": 20.0, "async_batches": 1}}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    cfg = make_matrix_config(None, {**TINY, "targets": ["onnxruntime", "tensorrt"], "precisions": ["fp32", "int8"], "output": str(tmp / "m"),
                                    "export": {"golden_images": 2, "golden_random": 2, "calibration": str(tmp / "no-such-dir"),
                                               "gates": {"fp32": {"cosine_min": 1.5}}}})
    return run_matrix(cfg)


def _row(result, key):
    return next(r for r in result["rows"] if f"{r['target']}-{r['precision']}" == key)


def test_matrix_records_every_cell_and_keeps_going(matrix):
    d = json.loads((matrix.output / "matrix.json").read_text())
    assert [f"{r['target']}-{r['precision']}" for r in d["rows"]] == ["pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "tensorrt-fp32", "tensorrt-int8"]
    ort = _row(d, "onnxruntime-fp32")
    # a cosine of 1.5 cannot be reached: the cell is exported, written, FAILED, and still timed
    assert ort["status"] == "FAILED" and ort["failed_gates"] == ["cosine_min"]
    assert (matrix.output / "onnxruntime-fp32" / "report.json").is_file()
    assert ort["cosine_min"] > 0.9999 and ort["top1_agreement"] == 1.0 and ort["size_mb"] > 0
    assert ort["p50_ms"] > 0 and ort["throughput_ips"] > 0 and ort["speedup_latency"] > 0
    assert ort["latency"]["batch"] == 1 and ort["throughput"]["batch"] == 8 and ort["throughput"]["mode"] == "throughput"
    ref = _row(d, "pytorch-fp32")
    assert ref["status"] == "REFERENCE" and ref["speedup_latency"] == 1.0 and ref["p50_ms"] > 0
    assert ort["speedup_latency"] == pytest.approx(ref["p50_ms"] / ort["p50_ms"])
    # no GPU here: the TensorRT engine build is deferred, parity is ONNX-level, nothing is timed
    trt = _row(d, "tensorrt-fp32")
    if trt["deferred"]:
        assert trt["status"] == "FAILED" and "deferred: ONNX-level parity" in trt["status_text"] and trt["p50_ms"] is None
    for key in ("onnxruntime-int8", "tensorrt-int8"):
        row = _row(d, key)
        assert row["status"] == "ERROR" and row["status_text"].startswith("ERROR: ") and "\n" not in row["reason"]
    assert d["exit_code"] == matrix.exit_code == 1  # an errored cell outranks a failed gate
    # nothing passed its gates (FAILED, ERROR, deferred and untimed): no engine to recommend at either batch size
    assert d["fastest_passing"] == {"1": None, "8": None}
    # the timing kept to its budget: one session per batch size, each under max_time_s (plus one round)
    assert set(d["session"]) == {"1", "8"}
    assert all(s["wall_s"] < 20.0 + 5 and s["rounds"] >= 1 + 3 for s in d["session"].values())


def test_matrix_json_and_markdown_tables_agree(matrix):
    d = json.loads((matrix.output / "matrix.json").read_text())
    md = (matrix.output / "matrix.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == d["columns"]
    body = [[c.strip().replace("\\|", "|") for c in ln.strip("|").split(" | ")] for ln in table[2:]]
    assert body == d["table"]
    assert len(d["table"]) == len(d["rows"])
    for cells, row in zip(d["table"], d["rows"]):
        assert cells[0] == row["target"] and cells[1] == row["precision"]
        assert cells[2] == row["status_text"][:72] or cells[2].endswith("...")
        assert cells[7] == ("-" if row["p50_ms"] is None else f"{row['p50_ms']:.2f}")
        assert cells[8] == ("-" if row["throughput_ips"] is None else f"{row['throughput_ips']:.1f}")


def test_matrix_cli_text_and_exit_code(matrix, tmp_path):
    from coatnet_deploy.bench.matrix import format_matrix

    text = format_matrix(matrix)
    assert "onnxruntime" in text and "FAILED (cosine_min)" in text and "x PyTorch b1" in text
    assert "fastest passing engine: b1 none, b8 none" in text
    assert "fastest passing engine: b1 none, b8 none" in (matrix.output / "matrix.md").read_text()


def test_exit_codes_follow_the_worst_cell(tmp_path):
    cfg = MatrixConfig(model="coatnet_tiny")
    ok = MatrixRow("onnx", "fp32", status="PASSED")
    na = MatrixRow("tensorrt", "fp32", status="UNAVAILABLE", reason="no GPU")
    ref = MatrixRow("pytorch", "fp32", status="REFERENCE")
    assert MatrixResult(cfg, [ok, na], ref, tmp_path).exit_code == 0
    assert MatrixResult(cfg, [ok, MatrixRow("onnx", "int8", status="FAILED")], ref, tmp_path).exit_code == 2
    assert MatrixResult(cfg, [MatrixRow("onnx", "int8", status="FAILED"), MatrixRow("onnx", "fp16", status="ERROR")], ref, tmp_path).exit_code == 1
    assert na.status_text() == "not available here: no GPU"


def _timed(target, precision, status, p50_b1, p50_b8):
    return MatrixRow(target, precision, status=status, latency={"batch": 1, "p50_ms": p50_b1}, throughput={"batch": 8, "p50_ms": p50_b8})


def test_fastest_passing_engine_per_batch_size(tmp_path):
    cfg = MatrixConfig(model="coatnet_tiny")
    ref = _timed("pytorch", "fp32", "REFERENCE", 0.1, 0.1)  # the fastest of all, but the reference is no candidate
    rows = [_timed("onnxruntime", "fp32", "PASSED", 3.0, 20.0),
            _timed("openvino", "int8", "PASSED", 4.0, 12.0),
            _timed("onnxruntime", "int8", "FAILED", 1.0, 5.0),  # faster, but failed its gates
            MatrixRow("tensorrt", "fp32", status="PASSED", deferred=True)]  # not timed
    res = MatrixResult(cfg, rows, ref, tmp_path)
    assert res.fastest_passing() == {"1": "onnxruntime-fp32", "8": "openvino-int8"}
    assert res.to_dict()["fastest_passing"] == {"1": "onnxruntime-fp32", "8": "openvino-int8"}
    from coatnet_deploy.bench.matrix import format_matrix

    assert "fastest passing engine: b1 onnxruntime-fp32, b8 openvino-int8" in format_matrix(res)
    assert MatrixResult(cfg, rows[2:], ref, tmp_path).fastest_passing() == {"1": None, "8": None}


def test_matrix_cells_are_the_target_registry():
    from coatnet_deploy import targets

    cells = matrix_cells()
    assert [(c.target, c.precision) for c in cells] == [(c.target, c.precision) for c in targets.cells()]
    for c in cells:
        ok, reason, deferred = c.availability()
        t = targets.get(c.target)
        direct = t.availability(c.precision)
        assert reason and ok == (direct.ok or deferred)
        assert not deferred or (not direct.ok and t.can_defer)


def test_matrix_config_file_and_validation(tmp_path):
    cfg = make_matrix_config(str(REPO / "export_configs" / "matrix.yaml"), {"model": "coatnet_tiny", "targets": ["onnx"]})
    assert cfg.model == "coatnet_tiny" and cfg.targets == ["onnx"] and cfg.precisions == ["fp32", "fp16", "int8"]
    assert cfg.bench_config("throughput").mode == "throughput"
    for bad, match in (({"targets": ["tpu"]}, "unknown target 'tpu'"), ({"colour": 1}, "unknown key 'colour'"),
                       ({"export": {"target": "onnx"}}, "set per cell"), ({"export": {"opset": "x"}}, "opset"),
                       ({"bench": {"min_iters": 0}}, "min_iters"), ({"precisions": []}, "empty"),
                       ({"targets": "onnx"}, "key 'targets' must be a list"), ({"latency_batch": 0}, "latency_batch' is 0: it must be at least 1"),
                       ({"bench": {"mode": "latency"}}, "unknown key 'bench.mode'"), ({"bench": {"min_iters": "x"}}, "'bench.min_iters' must be integer"),
                       ({"bench": {"min_time_s": 5, "max_time_s": 1}}, "max_time_s"), ({"latencybatch": 1}, "did you mean 'latency_batch'"),
                       ({"export": {"tensorrt": {"opt_level": True}}}, "'tensorrt.opt_level' must be integer")):
        with pytest.raises(UserError, match=match):
            make_matrix_config(None, bad)


def test_matrix_cli_refuses_bad_config(tmp_path, capsys):
    from coatnet_deploy.cli import main

    p = tmp_path / "m.yaml"
    p.write_text("targets: [onnx, tpu]\n")
    with pytest.raises(SystemExit) as e:
        main(["matrix", "--config", str(p)])
    assert e.value.code == 1 and "unknown target 'tpu'" in capsys.readouterr().err


@pytest.mark.slow
def test_full_matrix_tiny(tmp_path):
    """Every target x precision for coatnet_tiny through the CLI (minutes on 2 cores)."""
    import subprocess
    import sys

    out = tmp_path / "full"
    proc = subprocess.run([sys.executable, "-m", "coatnet_deploy", "matrix", "--config", str(REPO / "export_configs" / "matrix.yaml"),
                           "--model", "coatnet_tiny", "--image-size", "64", "--output", str(out), "--iterations", "5", "--json"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=3600)
    d = json.loads(proc.stdout)
    assert len(d["rows"]) == 13 and proc.returncode == d["exit_code"]
    statuses = {r["status"] for r in d["rows"][1:]}
    expected = 1 if "ERROR" in statuses else 2 if "FAILED" in statuses else 0
    assert proc.returncode == expected
    assert json.loads((out / "matrix.json").read_text())["table"] == d["table"]
