"""Reliability: bundles are replaced atomically (even under SIGKILL), failed exports keep the old bundle,
every reader refuses a bundle that does not match its manifest, and weight files cannot run code."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bundle_helpers import REPO, cli_in_process, config_file, copy_bundle, export_tiny
from coatnet_deploy.bundle import verify_bundle, write_manifest_sum
from coatnet_deploy.cli import _register, cli
from coatnet_deploy.errors import UserError

PHOTO = sorted((REPO / "calibration").glob("*.jpg"))[0]


_cli = cli_in_process


def _assert_old_bundle(d: Path, created: str) -> None:
    m = verify_bundle(d, check_reports=True)
    assert m["created"] == created
    # Nothing but the bundle itself and (after a kill) hidden staging dirs sits beside it.
    others = [p.name for p in d.parent.iterdir() if p != d and not p.name.endswith(".yaml")]
    assert all(n.startswith(f".{d.name}.partial-") for n in others), others


# -- atomic replacement ---------------------------------------------------------------------------

def _start_export(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coatnet_deploy", "export", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=str(REPO))


def _kill_when(proc: subprocess.Popen, after_s: float | None, line: str | None) -> str:
    """SIGKILL ``proc`` after ``after_s`` seconds or as soon as ``line`` starts a stderr line."""
    seen: list[str] = []
    hit = threading.Event()

    def read() -> None:
        for ln in proc.stderr:
            seen.append(ln)
            if line is not None and ln.startswith(line):
                proc.send_signal(signal.SIGKILL)
                hit.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if after_s is not None:
        time.sleep(after_s)
        proc.send_signal(signal.SIGKILL)
    else:
        assert hit.wait(240), "".join(seen)
    proc.wait(60)
    return "".join(seen)


def test_sigkill_at_any_point_keeps_the_old_bundle(tmp_path):
    # Stage lines, not wall-clock times: a timed kill can land after the commit on a fast machine.
    points = [(None, "[reference model] ..."), (None, "[ONNX export] ..."), (None, "[simplify] ..."), (None, "[bundle] ...")]
    runs = []
    for i, (after, line) in enumerate(points):
        d = copy_bundle(tmp_path / f"p{i}" / "bundle")
        created = verify_bundle(d)["created"]
        cfg = config_file(d.parent, output=str(d))
        runs.append((d, created, after, line, _start_export(cfg)))
    # Killed concurrently: four processes at different stages at once keep the test short.
    threads = []
    logs: dict[int, str] = {}
    for i, (d, created, after, line, proc) in enumerate(runs):
        t = threading.Thread(target=lambda i=i, p=proc, a=after, ln=line: logs.__setitem__(i, _kill_when(p, a, ln)))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(300)
    for i, (d, created, after, line, proc) in enumerate(runs):
        assert proc.returncode == -signal.SIGKILL, (after, line, logs.get(i))
        if line == "[bundle] ...":
            # killed while the staging dir is being written: whichever bundle is at d is whole.
            # (The swap itself is one rename; a kill a moment after it leaves the new, complete one.)
            m = verify_bundle(d, check_reports=True)
            assert m["created"] >= created
        else:
            _assert_old_bundle(d, created)
    # The next export into a killed-into place cleans the dead staging dir and commits normally.
    d = runs[-1][0]
    new = export_tiny(d)
    assert verify_bundle(new)["created"] >= runs[-1][1]
    assert [p.name for p in d.parent.iterdir() if not p.name.endswith(".yaml")] == ["bundle"]


def test_failed_late_export_keeps_old_bundle(tmp_path):
    import torch

    from coatnet_deploy.models import build_model

    d = copy_bundle(tmp_path / "out" / "bundle")
    created = verify_bundle(d)["created"]
    # A labels file with the wrong count is refused before anything is staged.
    bad = tmp_path / "labels.txt"
    bad.write_text("only\nthree\nnames\n")
    with pytest.raises(UserError, match="3 names"):
        export_tiny(d, labels=str(bad))
    _assert_old_bundle(d, created)
    # Weights that do not fit are found while the reference model is built, inside the staged export.
    sd = build_model("coatnet_tiny", num_classes=10).state_dict()
    sd.pop("stem.conv1.weight")
    torch.save(sd, tmp_path / "short.pth")
    with pytest.raises(UserError, match="do not fit"):
        export_tiny(d, weights=str(tmp_path / "short.pth"))
    _assert_old_bundle(d, created)


def test_failed_calibration_keeps_old_bundle(tmp_path):
    d = copy_bundle(tmp_path / "out" / "bundle")
    created = verify_bundle(d)["created"]
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        (calib / f"c{i}.jpg").write_bytes(PHOTO.read_bytes())
    with pytest.raises(UserError, match="need at least"):
        export_tiny(d, precision="int8", calibration=str(calib), simplify=False)
    _assert_old_bundle(d, created)


# -- integrity ------------------------------------------------------------------------------------

def _readers() -> list[list[str]]:
    _register()
    cmds = [["predict", "{b}", str(PHOTO)], ["parity", "{b}"], ["inspect", "{b}"]]
    if "bench" in cli.commands:
        cmds.append(["bench", "{b}", "--iterations", "1", "--warmup", "0"])
    return cmds


def _tamper_size(b: Path) -> str:
    with open(b / "model.ort.onnx", "ab") as f:
        f.write(b"\0")
    return "'model.ort.onnx' has"


def _tamper_bytes(b: Path) -> str:
    data = bytearray((b / "golden.npz").read_bytes())
    data[100] ^= 0x80
    (b / "golden.npz").write_bytes(bytes(data))
    return "'golden.npz' does not match its SHA-256"


def _tamper_manifest_hash(b: Path) -> str:
    # resealed (manifest.sha256 redone), so the artifact check is what must catch it
    m = json.loads((b / "manifest.json").read_text())
    for a in m["artifacts"]:
        if a["path"] == "model.onnx":
            a["sha256"] = "0" * 64
    (b / "manifest.json").write_text(json.dumps(m))
    write_manifest_sum(b)
    return "'model.onnx' does not match its SHA-256"


def _tamper_manifest_path(b: Path) -> str:
    m = json.loads((b / "manifest.json").read_text())
    m["artifacts"].append({"path": "../../etc/passwd", "sha256": "0" * 64, "bytes": 1})
    (b / "manifest.json").write_text(json.dumps(m))
    write_manifest_sum(b)
    return "points outside the bundle"


def _tamper_manifest_edit(b: Path) -> str:
    m = json.loads((b / "manifest.json").read_text())
    m["preprocess"]["mean"] = [0.0, 0.0, 0.0]  # not an artifact: only manifest.sha256 can tell
    (b / "manifest.json").write_text(json.dumps(m))
    return "manifest.json does not match its SHA-256 in manifest.sha256"


def _tamper_manifest_downgrade(b: Path) -> str:
    m = json.loads((b / "manifest.json").read_text())
    m["schema_version"] = 1  # claiming to predate the checksum file must not skip it
    (b / "manifest.json").write_text(json.dumps(m))
    return "manifest.json does not match its SHA-256 in manifest.sha256"


def _drop_manifest_sum(b: Path) -> str:
    (b / "manifest.sha256").unlink()
    return "manifest.sha256 is missing"


def _tamper_manifest_json(b: Path) -> str:
    (b / "manifest.json").write_text('{"schema_version": 1, "model": ')
    return "manifest.json is not valid JSON"


@pytest.mark.parametrize("tamper", [_tamper_size, _tamper_bytes, _tamper_manifest_hash, _tamper_manifest_path, _tamper_manifest_json,
                                    _tamper_manifest_edit, _tamper_manifest_downgrade, _drop_manifest_sum])
def test_every_reader_refuses_a_bundle_that_does_not_match(capsys, tmp_path, tamper):
    from coatnet_deploy.runtime import Classifier

    b = copy_bundle(tmp_path / "b")
    expect = tamper(b)
    for cmd in _readers():
        rc, out, lines = _cli(capsys, *[c.format(b=b) for c in cmd])
        assert rc == 1 and out == "", (cmd, lines)
        assert len(lines) == 1 and expect in lines[0] and str(b) in lines[0], (cmd, lines)
    with pytest.raises(UserError, match=expect.replace("'", ".").replace("(", ".")):
        Classifier.load(b)


# -- safe loading ---------------------------------------------------------------------------------

class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickle_payload_is_refused_and_never_runs(capsys, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Payload(str(marker))}, f)
    out_dir = tmp_path / "out"
    rc, out, lines = _cli(capsys, "export", "--model", "coatnet_tiny", "--weights", evil, "--json", "--output", out_dir)
    assert rc == 1 and out == ""
    assert len(lines) == 1 and "refusing to load" in lines[0] and "evil.pth" in lines[0]
    assert not marker.exists()
    assert not out_dir.exists()
    # The library entry point refuses it too.
    from coatnet_deploy import build_model

    with pytest.raises(UserError, match="refusing to load"):
        build_model("coatnet_tiny", weights=str(evil))
    assert not marker.exists()
