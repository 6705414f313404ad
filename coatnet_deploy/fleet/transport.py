"""Bundles as bytes: what travels through Ray's object store between the builder, the device and the driver.

A bundle is packed as an uncompressed tar of its regular files (sorted, no owners, no times), unpacked
with the standard library's ``data`` filter (no links, no device files, nothing outside the folder),
and checked against its own ``manifest.sha256`` and artifact checksums on arrival, before anything
opens it. No shared disk is assumed anywhere.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from coatnet_deploy.errors import UserError


def pack(bundle: str | Path) -> bytes:
    """The bundle folder -> tar bytes (regular files only; symlinks and other kinds are refused)."""
    root = Path(bundle)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise UserError(f"bundle '{root}' holds '{rel}', which is not a regular file", "only files travel to a device",
                                "export the bundle again")
            info = tarfile.TarInfo(rel)
            info.mode = 0o755 if path.is_dir() or (path.stat().st_mode & 0o111) else 0o644
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = path.stat().st_size
            with path.open("rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def unpack(data: bytes, dest: str | Path) -> Path:
    """Tar bytes -> ``dest`` (created, or an empty folder), then checked: manifest.sha256 and every artifact's
    checksum. Returns the bundle path; UserError when the bytes are not a whole, unchanged bundle."""
    from coatnet_deploy.bundle import verify_bundle

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise UserError(f"cannot unpack a bundle into '{dest}'", "the folder is not empty", "choose an empty one")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise UserError("a bundle arrived damaged", f"its tar does not unpack ({e})", "run the cell again") from None
    verify_bundle(dest)  # manifest.sha256 (every schema-2 bundle has one), then each artifact's size and SHA-256
    return dest
