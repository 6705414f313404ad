#!/usr/bin/env python3
"""Classify images with a coatnet-deploy bundle on a device: the runtime's own API, NumPy and Pillow.

This file does not import coatnet_deploy on purpose: it is what you copy onto a device next to
the bundle directory. It reads manifest.json, checks the model file's SHA-256, preprocesses as
manifest["preprocess"] says and prints the top-k classes.

    pip install onnxruntime numpy pillow        # or: pip install openvino numpy pillow
    python classify.py BUNDLE_DIR IMAGE... [--topk 5] [--threads N]
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def preprocess(path, pp):
    """Image file -> float32 (3, crop, crop): timm's eval transform, as coatnet-deploy applies it."""
    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray: scale to 8 bit, not clip
        img = Image.fromarray(((np.asarray(img, dtype=np.int64) * 255 + 32767) // 65535).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:  # transparency shows as white
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("RGB")
    resize, crop = pp["resize"], pp["crop"]
    w, h = img.size
    nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    img = img.resize((nw, nh), INTERPOLATION[pp.get("interpolation", "bicubic")])
    left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(pp["mean"], np.float32)) / np.asarray(pp["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def verified_file(bundle, manifest, name):
    """The path of ``name`` after checking its size and SHA-256 against the manifest."""
    entry = next((a for a in manifest["artifacts"] if a["path"] == name), None)
    path = bundle / name
    if entry is None or not path.is_file():
        sys.exit(f"error: {path} is missing or not listed in manifest.json: copy the whole bundle again")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if path.stat().st_size != entry["bytes"] or h.hexdigest() != entry["sha256"]:
        sys.exit(f"error: {path} does not match its size/SHA-256 in manifest.json: copy the bundle again")
    return path


def open_model(bundle, manifest, threads):
    """-> a function float32 NCHW batch -> logits, on the runtime the bundle was built for."""
    target = manifest["target"]
    if target == "openvino":
        import openvino as ov

        xml = verified_file(bundle, manifest, "model.xml")
        verified_file(bundle, manifest, "model.bin")
        config = {"INFERENCE_PRECISION_HINT": manifest.get("engine", {}).get("inference_precision_hint", "f32")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        request = ov.Core().compile_model(str(xml), "CPU", config).create_infer_request()
        return lambda x: request.infer({0: x})[0].copy()
    import onnxruntime as ort

    name = "model.ort.onnx" if target == "onnxruntime" else "model.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    if name == "model.ort.onnx":  # already optimized at export: do not optimize it again
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(verified_file(bundle, manifest, name)), opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda x: session.run(None, {input_name: x})[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    args = ap.parse_args()

    bundle = Path(args.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    run = open_model(bundle, manifest, args.threads)
    classes = manifest["model"]["num_classes"]
    labels = manifest["model"].get("labels") or [f"class_{i}" for i in range(classes)]
    max_batch = manifest["input"]["batch"]["max"]

    out = []
    for start in range(0, len(args.images), max_batch):
        names = args.images[start:start + max_batch]
        logits = run(np.stack([preprocess(p, manifest["preprocess"]) for p in names])).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for name, p in zip(names, probs):
            top = np.argsort(-p, kind="stable")[: min(args.topk, classes)]
            out.append({"image": name, "topk": [{"label": labels[i], "index": int(i), "prob": float(p[i])} for i in top]})
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in out:
            print(r["image"])
            for t in r["topk"]:
                print(f"  {t['prob']:8.4f}  {t['index']:>5d}  {t['label']}")


if __name__ == "__main__":
    main()
