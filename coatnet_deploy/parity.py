"""Bundle self-test: the engine against the stored reference logits. Torch-free."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.bundle import verify_bundle
from coatnet_deploy.compare import GATE_SAMPLES, compare, gate_mask
from coatnet_deploy.errors import UserError


def load_golden(bundle: Path, manifest: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """golden.npz -> its arrays; with the bundle's ``manifest``, also checked against it (inputs float
    (N, 3, S, S), reference_logits float (N, num_classes), names N strings, all finite), so a damaged
    file that passed its checksum is one UserError here instead of a runtime's exception later."""
    try:
        with np.load(bundle / "golden.npz", allow_pickle=False) as z:
            golden = {k: z[k] for k in z.files}
        not_npy = [k for k, v in golden.items() if not isinstance(v, np.ndarray)]  # NpzFile hands those back as bytes
        if not_npy:
            raise ValueError(f"member '{not_npy[0]}' is not an .npy array")
    except Exception as e:  # noqa: BLE001 - zip and .npy parse errors of a file from outside (BadZipFile, EOFError, ...)
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"bundle '{bundle}': golden.npz cannot be read", why, "export the bundle again") from None
    if manifest is not None:
        _check_golden(bundle, manifest, golden)
    return golden


def _check_golden(bundle: Path, manifest: dict[str, Any], g: dict[str, np.ndarray]) -> None:
    def bad(what: str) -> UserError:
        return UserError(f"bundle '{bundle}': golden.npz {what}", "it does not match the manifest", "export the bundle again")

    from coatnet_deploy.preprocess import PreprocessConfig

    s = PreprocessConfig.from_dict(manifest["preprocess"]).crop
    for key in ("inputs", "reference_logits"):
        if key not in g:
            raise bad(f"has no '{key}' array")
        if g[key].dtype.kind != "f":
            raise bad(f"'{key}' has dtype {g[key].dtype}, not float")
        if not np.isfinite(g[key]).all():
            raise bad(f"'{key}' holds NaN or infinity")
    x, ref = g["inputs"], g["reference_logits"]
    if x.ndim != 4 or x.shape[1:] != (3, s, s) or len(x) == 0:
        raise bad(f"'inputs' has shape {x.shape}, not (N, 3, {s}, {s})")
    if ref.shape != (len(x), int(manifest["model"]["num_classes"])):
        raise bad(f"'reference_logits' has shape {ref.shape}, not ({len(x)}, {manifest['model']['num_classes']})")
    if "names" in g and (g["names"].dtype.kind not in "US" or g["names"].shape != (len(x),)):
        raise bad(f"'names' is {g['names'].dtype} of shape {g['names'].shape}, not {len(x)} strings")


def check_bundle(bundle: str | Path, images: str | None = None, threads: int | None = None, any_cpu: bool = False) -> dict[str, Any]:
    """Verify checksums, run the engine on golden.npz, apply the bundle's gates; returns a result dict.

    ``any_cpu``: run a bundle whose device profile needs what this CPU lacks (refused otherwise, exit 3)."""
    from coatnet_deploy.runtime.engines import open_runner

    root = Path(bundle)
    manifest = verify_bundle(root)
    golden = load_golden(root, manifest)
    max_batch = int((manifest["input"].get("batch") or {}).get("max", 1))
    runner, what = open_runner(root, manifest, threads=threads, any_cpu=any_cpu)
    with runner:
        out = np.concatenate([runner.infer(golden["inputs"][i:i + max_batch]) for i in range(0, len(golden["inputs"]), max_batch)])
        names = [str(n) for n in golden["names"]] if "names" in golden else [f"sample:{i}" for i in range(len(out))]
        which = manifest.get("gate_samples", "all")  # bundles before gate_samples gated every sample
        if which not in GATE_SAMPLES:
            raise UserError(f"bundle '{bundle}': manifest.json has gate_samples {which!r}", f"valid values: {', '.join(GATE_SAMPLES)}",
                            "export the bundle again")
        res = compare(golden["reference_logits"], out, _known_gates(bundle, manifest), gated=gate_mask(names, which), names=names,
                      gate_samples=which)
        result: dict[str, Any] = {"bundle": str(root), "runs": what, "status": "PASSED" if res.passed else "FAILED",
                                  "parity": res.to_dict(per_sample=False), "cpu": cpu_here(),
                                  "device": (manifest.get("device") or {}).get("profile"),
                                  # the engine's logits, bit for bit: two runs agree exactly when these do
                                  "outputs_sha256": hashlib.sha256(np.ascontiguousarray(out, dtype="<f4").tobytes()).hexdigest()}
        if images:
            result["images"] = _images_vs_onnx(root, manifest, runner, images, threads, max_batch)
    return result


def cpu_here() -> dict[str, Any]:
    """The CPU this check ran on, as the CPU itself answers (right under an emulator too)."""
    from coatnet_deploy import host

    return {"arch": host.machine(), "int8_isa": host.int8_isa(), "features": sorted(host.features())}


def _known_gates(bundle, manifest: dict[str, Any]) -> dict[str, float]:
    from coatnet_deploy.compare import GATE_DIRECTION

    gates = manifest.get("gates", {})
    unknown = [g for g in gates if g not in GATE_DIRECTION]
    if unknown:
        raise UserError(f"bundle '{bundle}': manifest.json has unknown gate {unknown[0]!r}", f"known gates: {', '.join(GATE_DIRECTION)}",
                        "upgrade coatnet-deploy or export the bundle again")
    return gates


def _images_vs_onnx(root: Path, manifest: dict[str, Any], runner, images: str, threads: int | None, max_batch: int) -> dict[str, Any]:
    """Extra images have no stored PyTorch outputs: compare the engine with the bundle's ONNX instead."""
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner
    from coatnet_deploy.preprocess import image_files
    from coatnet_deploy.preprocess import PreprocessConfig, load_image, preprocess_image

    cfg = PreprocessConfig.from_dict(manifest["preprocess"])
    files = image_files(images)
    arrays = []
    for f in files:
        try:
            arrays.append(preprocess_image(load_image(f), cfg))
        except UserError:
            continue
    if not arrays:
        raise UserError(f"no readable images in '{images}'", "--images needs JPEG/PNG/BMP/WebP files", "pass a folder of photographs")
    x = np.stack(arrays)
    eng = np.concatenate([runner.infer(x[i:i + max_batch]) for i in range(0, len(x), max_batch)])
    with OnnxRuntimeRunner(str(root / "model.onnx"), threads=threads) as onnx_runner:
        ref = np.concatenate([onnx_runner.infer(x[i:i + max_batch]) for i in range(0, len(x), max_batch)])
    return compare(ref, eng, {}).to_dict(per_sample=False)
