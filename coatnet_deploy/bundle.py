"""The bundle on disk: written into a temporary directory and swapped into place only when complete;
read back only after its manifest and checksums are verified. Torch-free (the device runtime uses it).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from coatnet_deploy.errors import UserError

# 2: manifest.sha256 beside the manifest; golden .npy files for device apps.
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
#: sha256sum format ("<hex>  manifest.json"), so `sha256sum -c manifest.sha256` checks it too
MANIFEST_SUM = "manifest.sha256"
# Reports are rewritten by `parity`/`bench` runs; they are listed but not part of the integrity set.
UNCHECKED = ("report.json", "report.md", "report.html")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def artifact_entries(root: Path) -> list[dict[str, Any]]:
    """sha256 and size of every file in the bundle except the manifest and its checksum, sorted by path."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).as_posix() not in (MANIFEST, MANIFEST_SUM):
            rel = p.relative_to(root).as_posix()
            out.append({"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# -- writing ------------------------------------------------------------------------------------

def check_output_path(output: str | Path) -> Path:
    """Refuse outputs that cannot hold a bundle before any work is done."""
    out = Path(output).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"--output '{output}' is a file", "a bundle is a directory", "pass a directory path")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(f"--output '{output}' is a non-empty directory that is not a coatnet-deploy bundle",
                        "replacing it would delete files this tool did not write", "choose another --output or empty it")
    parent = out.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"--output '{output}' cannot be created", f"'{probe}' is a file", "choose another --output")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--output '{output}' is not writable", f"no write permission on '{probe}'", "choose another --output")
    return out


class BundleWriter:
    """Stage a bundle in ``.<name>.partial-<pid>-*`` beside the target; ``commit`` swaps it in.

    A failed or killed export leaves the previous bundle at the target untouched: the target is only
    ever changed by one rename (or an atomic exchange where the kernel offers renameat2).
    """

    def __init__(self, output: str | Path):
        self.target = check_output_path(output)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(self.target)
            self.dir = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-{os.getpid()}-", dir=self.target.parent))
        except OSError as e:
            # os.access() says yes to root everywhere; read-only and virtual file systems still refuse.
            raise UserError(f"--output '{output}' is not writable", f"cannot create a directory in '{self.target.parent}' ({e.strerror or e})",
                            "choose another --output") from None
        # mkdtemp makes 0700; a bundle is meant to be copied and read by others, like any new directory.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.dir, 0o777 & ~umask)
        self.committed = False

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        manifest = dict(manifest)
        manifest["schema_version"] = SCHEMA_VERSION
        manifest["artifacts"] = artifact_entries(self.dir)
        _write_json(self.dir / MANIFEST, manifest)
        write_manifest_sum(self.dir)
        return manifest

    def commit(self) -> Path:
        _fsync_tree(self.dir)
        if self.target.exists():
            if not _exchange(self.dir, self.target):
                old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
                os.rmdir(old)
                os.rename(self.target, old)
                os.rename(self.dir, self.target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)  # now holds the old bundle
        else:
            os.rename(self.dir, self.target)
        self.committed = True
        return self.target

    def abort(self) -> None:
        if not self.committed:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise UserError(f"could not write the bundle next to '{self.target}'", f"{os.strerror(exc.errno)}",
                            "free disk space (or raise the file size limit) and export again; the previous bundle is untouched") from None


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json(path: str | Path, data: Any) -> None:
    _write_json(Path(path), data)


def write_manifest_sum(root: Path) -> None:
    """(Re)write manifest.sha256 for the manifest as it is on disk now."""
    tmp = root / (MANIFEST_SUM + ".tmp")
    tmp.write_text(f"{sha256_file(root / MANIFEST)}  {MANIFEST}\n", encoding="ascii")
    os.replace(tmp, root / MANIFEST_SUM)


def check_manifest_sum(bundle: str | Path) -> None:
    """Refuse a schema-2 manifest that was edited after export (UserError naming the file)."""
    root = Path(bundle)
    path = root / MANIFEST_SUM
    if not path.is_file():
        raise UserError(f"bundle '{bundle}': {MANIFEST_SUM} is missing", f"schema {SCHEMA_VERSION} bundles carry the checksum of {MANIFEST}",
                        "copy the whole bundle directory, or export again")
    text = path.read_text(encoding="ascii", errors="replace").split()
    if len(text) != 2 or text[1] != MANIFEST or len(text[0]) != 64:
        raise UserError(f"bundle '{bundle}': {MANIFEST_SUM} is not a checksum line for {MANIFEST}", "it was edited or damaged",
                        "copy the bundle again or export again")
    if sha256_file(root / MANIFEST) != text[0].lower():
        raise UserError(f"bundle '{bundle}': {MANIFEST} does not match its SHA-256 in {MANIFEST_SUM}",
                        "the manifest was changed after export", "copy the bundle again or export again")


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return rc == 0


def _remove_stale_partials(target: Path) -> None:
    """Delete staging directories left by killed exports (their pid no longer runs)."""
    for p in target.parent.glob(f".{target.name}.partial-*"):
        try:
            pid = int(p.name.split(".partial-")[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- reading ------------------------------------------------------------------------------------

def read_manifest(bundle: str | Path) -> dict[str, Any]:
    root = Path(bundle)
    if not root.is_dir():
        raise UserError(f"bundle '{bundle}' not found", "the path is not a directory", "pass the directory that `export --output` wrote")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise UserError(f"'{bundle}' is not a bundle", f"{MANIFEST} is missing", "pass the directory that `export --output` wrote, or export again")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"bundle '{bundle}': {MANIFEST} is not valid JSON", str(e).splitlines()[0], "export the bundle again") from None
    except RecursionError:  # json's decoder recurses once per nesting level
        raise UserError(f"bundle '{bundle}': {MANIFEST} is nested too deeply to read", "no manifest coatnet-deploy writes nests so",
                        "export the bundle again") from None
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        raise UserError(f"bundle '{bundle}': {MANIFEST} has no schema_version", "it was not written by coatnet-deploy", "export the bundle again")
    sv = manifest["schema_version"]
    if not isinstance(sv, int) or isinstance(sv, bool) or sv > SCHEMA_VERSION:
        raise UserError(f"bundle '{bundle}' has schema version {sv}", f"this coatnet-deploy reads up to version {SCHEMA_VERSION}",
                        "upgrade coatnet-deploy (pip install -U coatnet-deploy)")
    # The checksum file is checked wherever it exists: editing schema_version down must not skip it.
    if sv >= 2 or (root / MANIFEST_SUM).exists():
        check_manifest_sum(root)
    for key in ("model", "input", "preprocess", "target", "precision", "artifacts"):
        if key not in manifest:
            raise UserError(f"bundle '{bundle}': {MANIFEST} lacks '{key}'", "the manifest is incomplete or was edited", "export the bundle again")
    _check_shapes(bundle, manifest)
    return manifest


# What the readers (runtime, parity, inspect, bench, the target plug-ins) take from a manifest, by
# type: a value of another type would surface later as a TypeError deep in a reader (found by
# tests/test_fuzz_readers.py). None: the key may be absent or null. The rest of each value (preprocess
# keys, gate names, engine files) is checked where it is used.
def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _batch_dim(v: Any) -> bool:
    return _pos_int(v) or (isinstance(v, list) and len(v) == 2 and all(_pos_int(x) for x in v))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_SHAPES: list[tuple[tuple[str, ...], str, Any, bool]] = [
    # (path, what it must be, test, may be absent/null)
    (("model",), "an object", lambda v: isinstance(v, dict), False),
    (("model", "num_classes"), "a positive integer", _pos_int, False),
    (("model", "name"), "a model name", lambda v: isinstance(v, str), True),
    (("model", "image_size"), "a positive integer", _pos_int, True),
    (("model", "labels"), "a list of names", _str_list, True),
    (("model", "provenance"), "an object", lambda v: isinstance(v, dict), True),
    (("input",), "an object", lambda v: isinstance(v, dict), False),
    (("input", "shape"), "[batch, 3, size, size]",
     lambda v: isinstance(v, list) and len(v) == 4 and _batch_dim(v[0]) and all(_pos_int(x) for x in v[1:]), True),
    (("input", "batch"), "an object", lambda v: isinstance(v, dict), True),
    (("input", "batch", "min"), "a positive integer", _pos_int, True),
    (("input", "batch", "max"), "a positive integer", _pos_int, True),
    (("preprocess",), "an object", lambda v: isinstance(v, dict), False),
    (("target",), "a target name", lambda v: isinstance(v, str), False),
    (("precision",), "a precision name", lambda v: isinstance(v, str), False),
    (("artifacts",), "a list of {path, sha256, bytes}", lambda v: isinstance(v, list) and all(
        isinstance(e, dict) and isinstance(e.get("path"), str) and e["path"] and isinstance(e.get("sha256"), str)
        and _size(e.get("bytes")) for e in v), False),
    (("engine",), "an object", lambda v: isinstance(v, dict), True),
    (("engine", "files"), "a list of file names", lambda v: _str_list(v) and all(v), True),
    *((("engine", k), "a name", lambda v: isinstance(v, str), True)
      for k in ("saved_optimization", "load_optimization", "inference_precision_hint", "int8_method")),
    (("engine", "static_batch"), "true or false", lambda v: isinstance(v, bool), True),
    (("engine", "nchwc_block"), "a positive integer", _pos_int, True),
    (("device",), "an object", lambda v: isinstance(v, dict), True),
    (("device", "profile"), "a profile name", lambda v: isinstance(v, str), True),
    (("device", "arch"), "an architecture name", lambda v: isinstance(v, str), True),
    (("device", "needs"), "a list of names", _str_list, True),
    (("device", "features"), "a list of names", _str_list, True),
    (("gates",), "an object of gate: number", lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()), True),
    (("gate_samples",), "a name", lambda v: isinstance(v, str), True),
    (("versions",), "an object", lambda v: isinstance(v, dict), True),
]


def _check_shapes(bundle: str | Path, manifest: dict[str, Any]) -> None:
    for path, what, ok, optional in _SHAPES:
        v: Any = manifest
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if v is None and optional:
            continue
        if not ok(v):
            shown = repr(v)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise UserError(f"bundle '{bundle}': {MANIFEST} has {'.'.join(path)} = {shown}", f"expected {what}",
                            "the manifest was edited or damaged; export the bundle again")
    batch = manifest["input"].get("batch") or {}
    if isinstance(batch.get("min"), int) and isinstance(batch.get("max"), int) and batch["min"] > batch["max"]:
        raise UserError(f"bundle '{bundle}': {MANIFEST} has input.batch min {batch['min']} above max {batch['max']}",
                        "the batch range is empty", "the manifest was edited or damaged; export the bundle again")


def verify_bundle(bundle: str | Path, check_reports: bool = False) -> dict[str, Any]:
    """Read the manifest and check every artifact's presence, size and SHA-256; returns the manifest.

    Raises UserError naming the first file that is missing or does not match.
    """
    root = Path(bundle)
    manifest = read_manifest(root)
    for entry in manifest["artifacts"]:
        rel = entry.get("path", "")
        if not check_reports and rel in UNCHECKED:
            continue
        p = (root / rel).resolve()
        if root.resolve() not in p.parents:
            raise UserError(f"bundle '{bundle}': artifact path '{rel}' points outside the bundle", "the manifest was tampered with", "export the bundle again")
        if not p.is_file():
            raise UserError(f"bundle '{bundle}': '{rel}' is missing", "the manifest lists it", "copy the whole bundle directory, or export again")
        size = p.stat().st_size
        if size != entry.get("bytes"):
            raise UserError(f"bundle '{bundle}': '{rel}' has {size} bytes, the manifest says {entry.get('bytes')}",
                            "the file was truncated or changed after export", "copy the bundle again or export again")
        if sha256_file(p) != entry.get("sha256"):
            raise UserError(f"bundle '{bundle}': '{rel}' does not match its SHA-256 in the manifest",
                            "the file was changed after export", "copy the bundle again or export again")
    return manifest


def rewrite_reports(bundle: Path, manifest: dict[str, Any]) -> None:
    """Refresh the report entries' checksums after `parity`/`bench` rewrote reports in place."""
    entries = {e["path"]: e for e in manifest["artifacts"]}
    for name in UNCHECKED:
        p = bundle / name
        if p.is_file():
            entries[name] = {"path": name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest["artifacts"] = sorted(entries.values(), key=lambda e: e["path"])
    tmp = bundle / (MANIFEST + ".tmp")
    _write_json(tmp, manifest)
    os.replace(tmp, bundle / MANIFEST)
    if int(manifest.get("schema_version", 1)) >= 2 or (bundle / MANIFEST_SUM).exists():
        write_manifest_sum(bundle)
