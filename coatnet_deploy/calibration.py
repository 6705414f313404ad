"""Calibration and evaluation images, streamed as preprocessed float32 batches.

- :class:`CalibrationSet`: INT8 calibration data from a folder of images (searched recursively,
  sorted) or an ``.npz`` of already preprocessed batches; seeded selection, a minimum size,
  unreadable files listed and skipped, a SHA-256 of exactly what was used (for the manifest).
- :class:`EvalSet`: ``--eval-images DIR`` in ImageFolder layout (one subfolder per class).
- :func:`default_calibration_dir`: the shipped photos (the repository's ``calibration/`` folder).

NumPy + Pillow only (no torch, no onnx): images go through :func:`preprocess_image`, the
project's only preprocessing, and are decoded batch by batch, never all held at once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np

from coatnet_deploy.errors import UserError
from coatnet_deploy.preprocess import PreprocessConfig, image_files, load_image, preprocess_image
from coatnet_deploy.shipped import calibration_dir as default_calibration_dir  # noqa: F401  (callers import it here)

# Fewer images than this give activation ranges that depend on which few were picked;
# ORT and NNCF accept fewer without complaint, so the guard lives here.
MIN_CALIBRATION_IMAGES = 8

PathLike = Union[str, os.PathLike]

_FIX_CALIB = "Point --calibration at a folder with more images"


class CalibrationSet:
    """Preprocessed calibration inputs from a folder of images or an ``.npz``.

    ``CalibrationSet(path, cfg)`` lists what is there; ``select(n, seed)`` picks the samples
    (checking that they decode); ``batches(bs)`` / ``iter_arrays()`` stream float32
    ``(n, 3, crop, crop)`` arrays; ``sha256()`` identifies the selection; ``skipped`` lists
    ``(path, reason)`` for files that could not be read.
    """

    def __init__(self, source: PathLike, cfg: PreprocessConfig,
                 expected_shape: Sequence[int] | None = None):
        self.source = Path(source)
        self.cfg = cfg
        self.expected_shape = tuple(expected_shape) if expected_shape else (3, cfg.crop, cfg.crop)
        self.skipped: list[tuple[str, str]] = []
        self._files: list[Path] = []
        self._array: np.ndarray | None = None
        self._selected: list[int] | None = None  # indices into _files / _array, in use order

        if not self.source.exists():
            raise UserError(f"calibration data {self.source} not found", "no such file or folder",
                            "Pass --calibration DIR (images) or FILE.npz (preprocessed batches)")
        if self.source.is_dir():
            self.kind = "folder"
            self._files = image_files(self.source)
            if not self._files:
                raise UserError(f"calibration folder {self.source} has no image files",
                                "found no .jpg/.jpeg/.png/.bmp/.webp/.gif/.tif files in it or below",
                                _FIX_CALIB)
        elif self.source.suffix.lower() == ".npz":
            self.kind = "npz"
            self._array = _load_npz(self.source, self.expected_shape)
        else:
            raise UserError(f"calibration data {self.source} is neither a folder nor an .npz",
                            None, "Pass a folder of images or an .npz with an 'images' array (N,3,H,W)")

    # ------------------------------------------------------------------ selection

    @property
    def available(self) -> int:
        """Candidates found (image files by extension, or npz rows), before any decoding."""
        return len(self._files) if self.kind == "folder" else int(self._array.shape[0])

    def select(self, n_samples: int | None = None, seed: int = 0,
               min_images: int = MIN_CALIBRATION_IMAGES) -> "CalibrationSet":
        """Pick up to ``n_samples`` (None = all) in a seeded random order; returns self.

        Files are decoded while picking; unreadable ones go to ``skipped`` and the next
        candidate takes their place. Raises UserError when fewer than ``min_images`` remain.
        """
        if n_samples is not None and (isinstance(n_samples, bool) or int(n_samples) <= 0):
            raise UserError(f"calibration sample count is {n_samples!r}", "it must be a positive integer")
        if n_samples is not None and n_samples < min_images:
            raise UserError(f"asked for {n_samples} calibration samples",
                            f"INT8 calibration needs at least {min_images}",
                            f"Use {min_images} or more samples")
        want = self.available if n_samples is None else min(int(n_samples), self.available)
        order = np.random.default_rng(seed).permutation(self.available).tolist()

        self.skipped = []
        if self.kind == "npz":
            chosen = order[:want]
        else:
            chosen = []
            for i in order:
                if len(chosen) == want:
                    break
                path = self._files[i]
                try:
                    load_image(path)  # decode fully now so a bad file is skipped, not fatal later
                except UserError as exc:
                    self.skipped.append((str(path), exc.why or str(exc)))
                    continue
                chosen.append(i)

        if len(chosen) < min_images:
            what = "readable images" if self.kind == "folder" else "samples"
            why = None
            if self.skipped:
                first = self.skipped[0]
                why = (f"{len(self.skipped)} unreadable skipped (first: {Path(first[0]).name}: "
                       f"{first[1].rstrip('.')})")
            raise UserError(
                f"calibration set {self.source} has only {len(chosen)} {what}, need at least {min_images}",
                why,
                _FIX_CALIB,
            )
        self._selected = chosen
        return self

    def _selection(self) -> list[int]:
        if self._selected is None:
            self.select()
        return self._selected  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._selection())

    @property
    def files(self) -> list[Path]:
        """Selected image files in use order (empty for an npz)."""
        return [self._files[i] for i in self._selection()] if self.kind == "folder" else []

    # ------------------------------------------------------------------ data

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        """Yield float32 (b, 3, H, W) arrays over the selection; only one batch decoded at a time."""
        if batch_size <= 0:
            raise UserError(f"calibration batch size is {batch_size}", "it must be >= 1")
        sel = self._selection()
        for start in range(0, len(sel), batch_size):
            idx = sel[start:start + batch_size]
            if self.kind == "npz":
                yield np.ascontiguousarray(self._array[idx], dtype=np.float32)
            else:
                yield np.stack([preprocess_image(self._files[i], self.cfg) for i in idx])

    def iter_arrays(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        """Yield one (batch_size, 3, H, W) float32 array per step: the shape ORT readers / nncf.Dataset take."""
        return self.batches(batch_size)

    def data_reader(self, input_name: str, batch_size: int = 1) -> "FeedReader":
        """-> an ONNX Runtime ``CalibrationDataReader``-compatible object ({input_name: batch} per get_next())."""
        return FeedReader(self, input_name, batch_size)

    def sha256(self) -> str:
        """Hex SHA-256 of the selection: relative file names + file bytes, or the npz rows' float32 bytes."""
        h = hashlib.sha256()
        if self.kind == "npz":
            h.update(f"npz{self.expected_shape}".encode())
            for i in self._selection():
                h.update(np.ascontiguousarray(self._array[i], dtype=np.float32).tobytes())
        else:
            for path in self.files:
                h.update(path.relative_to(self.source).as_posix().encode() + b"\0")
                fh = hashlib.sha256(path.read_bytes()).digest()
                h.update(fh)
        return h.hexdigest()

    def describe(self) -> dict:
        """-> JSON-ready summary for the manifest / report."""
        return {
            "source": str(self.source),
            "kind": self.kind,
            "samples": len(self),
            "available": self.available,
            "sha256": self.sha256(),
            "files": [p.relative_to(self.source).as_posix() for p in self.files],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


class FeedReader:
    """Duck-typed ``onnxruntime.quantization.CalibrationDataReader`` (no onnxruntime import here)."""

    def __init__(self, calib: CalibrationSet, input_name: str, batch_size: int = 1):
        self.calib, self.input_name, self.batch_size = calib, input_name, batch_size
        self._it: Iterator[np.ndarray] | None = None

    def get_next(self) -> dict | None:
        if self._it is None:
            self._it = self.calib.batches(self.batch_size)
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return -(-len(self.calib) // self.batch_size)


def _load_npz(path: Path, expected: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not z.files:
                raise UserError(f"calibration file {path} holds no arrays", None,
                                "Save preprocessed batches with np.savez(path, images=array)")
            key = "images" if "images" in z.files else z.files[0]
            arr = z[key]
            if not isinstance(arr, np.ndarray):  # NpzFile hands back a member that is not .npy as bytes
                raise ValueError(f"member '{key}' is not an .npy array")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/npy parse errors of a user file
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read calibration file {path}", f"not a valid .npz ({why})",
                        "Save preprocessed batches with np.savez(path, images=array), or pass a folder of images") from exc
    if arr.dtype.kind != "f":
        raise UserError(f"calibration array '{key}' in {path} has dtype {arr.dtype}",
                        "it must hold preprocessed float images (float32)",
                        "Save the output of preprocess_batch, or pass a folder of images instead")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(expected):
        raise UserError(
            f"calibration array '{key}' in {path} has shape {tuple(arr.shape)}",
            f"the model expects (N, {', '.join(map(str, expected))})",
            "Preprocess the images at the export's --image-size, or pass a folder of images",
        )
    if arr.shape[0] == 0:
        raise UserError(f"calibration array '{key}' in {path} is empty", None, _FIX_CALIB)
    if not np.isfinite(arr).all():
        raise UserError(f"calibration array '{key}' in {path} contains NaN or infinity",
                        "every value must be finite")
    return arr.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------- evaluation


def read_labels(path: PathLike) -> list[str]:
    """Labels file (one class name per line; blank lines ignored) -> names in order."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read labels file {p}", str(exc), "Give a UTF-8 text file, one class name per line") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UserError(f"labels file {p} is empty", None, "Write one class name per line")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise UserError(f"labels file {p} repeats class name(s) {', '.join(dups[:5])}",
                        "each class must appear once")
    return names


class EvalSet:
    """Labelled images in ImageFolder layout (``DIR/<class>/<image>``) for ``--eval-images``.

    Class index = position in ``labels`` (a labels file or list: every class folder must be
    named there; extra labels without a folder are fine) or, without labels, in the sorted
    folder names. ``batches(bs)`` yields ``(float32 (b,3,H,W), int64 (b,))``; unreadable images
    are skipped and listed in ``skipped``.
    """

    def __init__(self, root: PathLike, cfg: PreprocessConfig,
                 labels: PathLike | Sequence[str] | None = None):
        self.root = Path(root)
        self.cfg = cfg
        self.skipped: list[tuple[str, str]] = []
        if not self.root.is_dir():
            raise UserError(f"evaluation folder {self.root} not found", "no such directory",
                            "Pass --eval-images DIR with one subfolder of images per class")
        folders = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            kind = "is empty" if not any(self.root.iterdir()) else "has no class subfolders"
            raise UserError(f"evaluation folder {self.root} {kind}",
                            "expected ImageFolder layout: DIR/<class name>/<images>",
                            "Make one subfolder per class, named as in the labels file")
        label_src = ""
        if labels is None:
            self.classes = folders
        else:
            if isinstance(labels, (str, os.PathLike)):
                label_src = f" ({labels})"
                self.classes = read_labels(labels)
            else:
                self.classes = [str(x) for x in labels]
            unknown = [f for f in folders if f not in self.classes]
            if unknown:
                raise UserError(
                    f"evaluation class folder(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                    f"in {self.root} are not in the labels{label_src}",
                    "each folder name must be one of the class names",
                    f"Rename the folders to class names (first labels: {', '.join(self.classes[:5])})",
                )
        index = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for f in folders:
            for p in image_files(self.root / f):
                self.samples.append((p, index[f]))
        if not self.samples:
            raise UserError(f"evaluation folder {self.root} has no images",
                            f"its {len(folders)} class folder(s) hold no .jpg/.png/... files")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def batches(self, batch_size: int = 8) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (float32 (b,3,H,W), int64 (b,)) batches in folder order; unreadable files skipped."""
        if batch_size <= 0:
            raise UserError(f"evaluation batch size is {batch_size}", "it must be >= 1")
        self.skipped = []
        xs: list[np.ndarray] = []
        ys: list[int] = []
        for path, y in self.samples:
            try:
                xs.append(preprocess_image(path, self.cfg))
            except UserError as exc:
                self.skipped.append((str(path), exc.why or str(exc)))
                continue
            ys.append(y)
            if len(xs) == batch_size:
                yield np.stack(xs), np.asarray(ys, dtype=np.int64)
                xs, ys = [], []
        if xs:
            yield np.stack(xs), np.asarray(ys, dtype=np.int64)
        if len(self.skipped) == len(self.samples):
            raise UserError(f"evaluation folder {self.root} has no readable images",
                            f"all {len(self.samples)} failed to decode (first: {self.skipped[0][1]})")
