"""Bundle-to-bundle regression: ``coatnet-deploy compare OLD NEW`` (and ``coatnet_deploy.compare_bundles``).

The question a release pipeline asks before a new bundle replaces the one on the devices: does the
new engine still say what the old one says, is it as accurate, is it as fast, and what changed?

- Both engines run on the same inputs: the union of both golden sets (identical tensors once), plus
  ``images`` (each bundle preprocesses them its own way, as its device would).
- Between the engines: top-1 agreement (and its complement, the disagreement budget), cosine and
  max-abs, over every input and over the real images alone (the budget reads the images: seeded
  random tensors are far from what a trained model sees, as for the INT8 gates).
- Each engine against its own reference: its golden inputs against its stored PyTorch logits, under
  its own gates (the new bundle failing its own gates here fails the comparison).
- ``eval_images``: both engines' top-1 on the labelled images and the drop (budget ``max_drop``, pt).
- Latency at each batch size, both engines timed round-robin in one session (``bench.session``):
  p50 and the new/old ratio (budget ``max_slowdown``).
- Size, and what the manifests say differently: model, weights hash, recipe, runtime versions, device
  profile, preprocessing, engine settings.

Torch-free: it runs engines and reads stored reference logits, never the PyTorch model. compare.json
holds every number; compare.md and compare.html lay out one view through the report templates.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from coatnet_deploy.errors import UserError
from coatnet_deploy.fields import Field, check_fields

# Why each default is what it is: docs/GATES.md "compare".
DEFAULT_MAX_DISAGREEMENT = 0.10
DEFAULT_MAX_DROP = 1.0
DEFAULT_MAX_SLOWDOWN = 1.5
COMPARE_FIELDS = {
    "images": Field((str, type(None)), "a folder of images both engines also classify"),
    "eval_images": Field((str, type(None)), "ImageFolder tree: both engines' top-1 and the drop"),
    "max_disagreement": Field((int, float), "budget: share of real images whose top-1 differs", minimum=0),
    "max_drop": Field((int, float), "budget: top-1 accuracy drop in points (with eval_images)", minimum=0),
    "max_slowdown": Field((int, float), "budget: new p50 / old p50 at any timed batch size", minimum=0),
    "batches": Field((list,), "batch sizes timed"),
    "timing": Field((bool,), "time both engines (false: accuracy and agreement only)"),
    "threads": Field((int, type(None)), "runtime threads", minimum=1),
    "output": Field((str, type(None)), "folder for compare.json/.md/.html (None: write nothing)"),
    "min_time_s": Field((int, float), "timed seconds per batch size (both engines together)", minimum=0),
    "max_time_s": Field((int, float), "wall-clock limit per batch size (warm-up and waits included)", minimum=0),
    "warmup_s": Field((int, float), "warm-up seconds per batch size (both engines' calls together), after 5 calls each", minimum=0),
    "any_cpu": Field((bool,), "run bundles whose device profile needs what this CPU lacks"),
}


@dataclass
class CompareSpec:
    images: str | None = None
    eval_images: str | None = None
    max_disagreement: float = DEFAULT_MAX_DISAGREEMENT
    max_drop: float = DEFAULT_MAX_DROP
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN
    batches: list[int] = field(default_factory=lambda: [1, 8])
    timing: bool = True
    threads: int | None = None
    output: str | None = None
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    warmup_s: float = 0.2
    any_cpu: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any], source: str = "compare_bundles()") -> "CompareSpec":
        given = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items() if v is not None}
        check_fields(given, COMPARE_FIELDS, source)
        bad = [b for b in given.get("batches", []) if isinstance(b, bool) or not isinstance(b, int) or b < 1]
        if bad or ("batches" in given and not given["batches"]):
            raise UserError(f"{source}: batches is {given['batches']!r}", "it must list batch sizes of 1 or more", "pass e.g. [1, 8]")
        return cls(**given)


@dataclass
class CompareResult:
    """What a comparison found: ``status`` PASSED / FAILED (a budget exceeded), every figure in ``data``."""

    status: str
    data: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "PASSED"

    def __repr__(self) -> str:
        fails = ", ".join(self.data.get("failed_budgets", {})) or "none"
        return f"CompareResult({self.status}: {self.data['old']['bundle']} -> {self.data['new']['bundle']}, failed budgets: {fails})"

    def _repr_html_(self) -> str:
        from coatnet_deploy.report.render import notebook_iframe

        return notebook_iframe(render_html(self.data), "coatnet-deploy compare")


@dataclass
class _Side:
    role: str  # old | new
    path: Path
    manifest: dict[str, Any]
    golden: dict[str, np.ndarray]
    runner: Any = None
    runs: str = ""

    @property
    def max_batch(self) -> int:
        return int((self.manifest["input"].get("batch") or {}).get("max", 1))

    @property
    def min_batch(self) -> int:
        return int((self.manifest["input"].get("batch") or {}).get("min", 1))

    def names(self) -> list[str]:
        g = self.golden
        return [str(n) for n in g["names"]] if "names" in g else [f"sample:{i}" for i in range(len(g["inputs"]))]

    def infer(self, x: np.ndarray) -> np.ndarray:
        from coatnet_deploy.stages import run_batched

        return run_batched(self.runner, x, self.max_batch, self.min_batch)


def compare_bundles(old: str | os.PathLike, new: str | os.PathLike, spec: CompareSpec | None = None, progress=None) -> CompareResult:
    """Compare bundle ``new`` against bundle ``old`` (see the module docstring) -> CompareResult.

    UserError for bundles that are damaged or not of one task; TargetUnavailable when an engine cannot
    run here. A budget exceeded is a result (status FAILED), not an exception."""
    from coatnet_deploy.bundle import verify_bundle
    from coatnet_deploy.parity import load_golden
    from coatnet_deploy.runtime.engines import open_runner

    spec = spec or CompareSpec()
    sides = []
    for role, p in (("old", old), ("new", new)):
        root = Path(p)
        manifest = verify_bundle(root)
        sides.append(_Side(role, root, manifest, load_golden(root, manifest)))
    o, n = sides
    _same_task(o, n)
    for s in sides:
        s.runner, s.runs = open_runner(s.path, s.manifest, threads=spec.threads, any_cpu=spec.any_cpu)
    data: dict[str, Any] = {"schema_version": 1, "kind": "coatnet-deploy compare", "budgets": {
        "max_disagreement": spec.max_disagreement, "max_drop": spec.max_drop, "max_slowdown": spec.max_slowdown}}
    try:
        for s in sides:
            s.runner.activate()
        inputs = _union(o, n)
        if spec.images:  # a photo the golden sets already hold (same tensors) runs once
            held = {(_digest(i.x_old), _digest(i.x_new)) for i in inputs}
            inputs += [i for i in _image_inputs(spec.images, o, n) if (_digest(i.x_old), _digest(i.x_new)) not in held]
        _say(progress, f"[compare] running both engines on {len(inputs)} inputs")
        x_old = np.stack([i.x_old for i in inputs])
        x_new = np.stack([i.x_new for i in inputs])
        out_old, out_new = o.infer(x_old), n.infer(x_new)
        data["own_reference"] = {s.role: _own_reference(s, out, inputs) for s, out in ((o, out_old), (n, out_new))}
        names, images = [i.name for i in inputs], [i.is_image for i in inputs]
        if spec.eval_images:  # labelled real images: accuracy, and more images for the agreement
            _say(progress, f"[compare] accuracy on {spec.eval_images}")
            data["accuracy"], eval_names, eval_old, eval_new = _accuracy(spec.eval_images, o, n)
            out_old, out_new = np.concatenate([out_old, eval_old]), np.concatenate([out_new, eval_new])
            names, images = names + eval_names, images + [True] * len(eval_names)
        data["inputs"] = {"total": len(names), "images": sum(images),
                          "golden_old": len(o.golden["inputs"]), "golden_new": len(n.golden["inputs"]),
                          "shared_golden": sum(i.origin == "both" for i in inputs), "extra_images": sum(i.origin == "images" for i in inputs),
                          "eval_images": len(names) - len(inputs), "names": names}
        data["agreement"] = _agreement(out_old, out_new, images)
        data["latency"] = _latency(o, n, x_old, spec, progress) if spec.timing else None
    finally:
        for s in sides:
            s.runner.deactivate()
    data["old"], data["new"] = (_describe(s) for s in sides)
    data["size"] = {"old_bytes": data["old"]["bytes"], "new_bytes": data["new"]["bytes"],
                    "ratio": data["new"]["bytes"] / data["old"]["bytes"] if data["old"]["bytes"] else None}
    data["differences"] = manifest_differences(o.manifest, n.manifest)
    _judge(data, spec)
    result = CompareResult(data["status"], data)
    if spec.output:
        result.files = write_documents(data, Path(spec.output))
    return result


# ---------------------------------------------------------------- inputs


@dataclass
class _Input:
    name: str
    x_old: np.ndarray
    x_new: np.ndarray
    is_image: bool
    origin: str  # old | new | both | images
    index_old: int | None = None  # position in the old bundle's golden set
    index_new: int | None = None


def _same_task(o: _Side, n: _Side) -> None:
    mo, mn = o.manifest, n.manifest
    co, cn = int(mo["model"]["num_classes"]), int(mn["model"]["num_classes"])
    if co != cn:
        raise UserError(f"the bundles have {co} and {cn} classes", "compare needs two bundles of one task (the same classes)",
                        "compare bundles of the same classifier")
    lo, ln = mo["model"].get("labels"), mn["model"].get("labels")
    if lo and ln and list(lo) != list(ln):
        first = next(i for i, (a, b) in enumerate(zip(lo, ln)) if a != b)
        raise UserError(f"the bundles name class {first} differently ({lo[first]!r} and {ln[first]!r})",
                        "compare needs two bundles of one task (the same classes, in the same order)", "export both with the same labels")
    so, sn = tuple(mo["input"]["shape"][1:]), tuple(mn["input"]["shape"][1:])
    if so != sn:
        raise UserError(f"the bundles take inputs of {list(so)} and {list(sn)}",
                        "both engines run on the same tensors and are timed on them", "compare bundles exported at one image size")


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


def _union(o: _Side, n: _Side) -> list[_Input]:
    """Both golden sets, each tensor once (two exports of one model share theirs)."""
    out: list[_Input] = []
    seen: dict[str, _Input] = {}
    for side in (o, n):
        for i, (name, x) in enumerate(zip(side.names(), side.golden["inputs"])):
            key = _digest(x)
            if key in seen:
                seen[key].origin = "both"
                setattr(seen[key], f"index_{side.role}", i)
                continue
            item = _Input(f"{side.role}:{name}", x, x, name.startswith("image:"), side.role, **{f"index_{side.role}": i})
            seen[key] = item
            out.append(item)
    for item in out:
        if item.origin == "both":
            item.name = item.name.split(":", 1)[1]
    return out


def _image_inputs(folder: str, o: _Side, n: _Side) -> list[_Input]:
    from coatnet_deploy.preprocess import PreprocessConfig, image_files, load_image, preprocess_image

    if not Path(folder).is_dir():
        raise UserError(f"--images '{folder}' not found", "it must name an existing directory", "check the path given to --images")
    po, pn = (PreprocessConfig.from_dict(s.manifest["preprocess"]) for s in (o, n))
    out = []
    for f in image_files(folder):
        try:
            img = load_image(f)
            out.append(_Input(f"images:{Path(f).name}", preprocess_image(img, po), preprocess_image(img, pn), True, "images"))
        except UserError:
            continue
    if not out:
        raise UserError(f"no readable images in '{folder}'", "--images needs JPEG/PNG/BMP/WebP files", "pass a folder of photographs")
    return out


# ---------------------------------------------------------------- figures


def _agreement(a: np.ndarray, b: np.ndarray, images: list[bool]) -> dict[str, Any]:
    from coatnet_deploy.compare import compare

    mask = np.asarray(images, dtype=bool)

    def over(m: np.ndarray) -> dict[str, Any] | None:
        if not m.any():
            return None
        r = compare(a[m], b[m], {})
        same = a[m].argmax(1) == b[m].argmax(1)
        return {"samples": int(m.sum()), "top1_agreement": float(same.mean()), "disagreements": int((~same).sum()),
                "top5_agreement": r.top5_agreement, "cosine_min": r.cosine_min, "cosine_mean": r.cosine_mean,
                "max_abs_err": r.max_abs_err, "mean_abs_err": r.mean_abs_err}

    everything = over(np.ones(len(a), dtype=bool))
    on_images = over(mask)
    budgeted = on_images if on_images is not None else everything
    return {"all": everything, "images": on_images, "budget_reads": "images" if on_images is not None else "all",
            "disagreement": 1.0 - budgeted["top1_agreement"], "differing": np.flatnonzero(a.argmax(1) != b.argmax(1)).tolist()}


def _own_reference(side: _Side, out: np.ndarray, inputs: list[_Input]) -> dict[str, Any]:
    """The side's engine on its own golden inputs against its stored reference logits, under its own gates."""
    from coatnet_deploy.compare import compare, gate_mask

    idx = {getattr(i, f"index_{side.role}"): k for k, i in enumerate(inputs) if getattr(i, f"index_{side.role}") is not None}
    rows = [idx[j] for j in range(len(side.golden["inputs"]))]
    names = side.names()
    which = side.manifest.get("gate_samples", "all")
    res = compare(side.golden["reference_logits"], out[rows], side.manifest.get("gates", {}), gated=gate_mask(names, which),
                  names=names, gate_samples=which)
    d = res.to_dict(per_sample=False)
    return {"status": "PASSED" if res.passed else "FAILED", "gate_samples": which, **{k: d[k] for k in (
        "cosine_min", "cosine_mean", "max_abs_err", "top1_agreement", "top5_agreement", "failed_gates") if k in d}}


def _accuracy(folder: str, o: _Side, n: _Side) -> tuple[dict[str, Any], list[str], np.ndarray, np.ndarray]:
    """Both engines' top-1/top-5 on an ImageFolder tree -> (figures, names, old logits, new logits) over the
    images both could read (each preprocessed as its bundle says)."""
    from coatnet_deploy.calibration import EvalSet
    from coatnet_deploy.compare import accuracy
    from coatnet_deploy.preprocess import PreprocessConfig

    out: dict[str, Any] = {}
    logits: dict[str, dict[str, np.ndarray]] = {}
    for s in (o, n):
        ev = EvalSet(folder, PreprocessConfig.from_dict(s.manifest["preprocess"]), labels=s.manifest["model"].get("labels"))
        chunks, ys = [], []
        for xb, yb in ev.batches(s.max_batch):
            chunks.append(s.infer(xb))
            ys.append(yb)
        y, z = np.concatenate(ys), np.concatenate(chunks)
        skipped = {p for p, _ in ev.skipped}
        read = [p for p, _ in ev.samples if str(p) not in skipped]
        keys = [f"eval:{Path(p).parent.name}/{Path(p).name}" for p in read]
        logits[s.role] = dict(zip(keys, z))
        top1, top5 = accuracy(z, y)
        out[s.role] = {"images": int(len(y)), "top1": top1, "top5": top5, "skipped": len(ev.skipped)}
    out["drop_top1"] = round(out["old"]["top1"] - out["new"]["top1"], 4)
    out["drop_top5"] = round(out["old"]["top5"] - out["new"]["top5"], 4)
    both = [k for k in logits["old"] if k in logits["new"]]
    classes = int(o.manifest["model"]["num_classes"])

    def stacked(role: str) -> np.ndarray:
        return np.stack([logits[role][k] for k in both]) if both else np.zeros((0, classes), np.float32)

    return out, both, stacked("old"), stacked("new")


def _latency(o: _Side, n: _Side, x: np.ndarray, spec: CompareSpec, progress) -> dict[str, Any]:
    from coatnet_deploy.bench.harness import BenchConfig
    from coatnet_deploy.bench.session import time_interleaved

    lo, hi = max(o.min_batch, n.min_batch), min(o.max_batch, n.max_batch)
    batches = [b for b in spec.batches if lo <= b <= hi]
    skipped = [b for b in spec.batches if b not in batches]
    out: dict[str, Any] = {"mode": "latency", "threads": spec.threads, "batches": {}, "skipped_batches": skipped}
    if not batches:
        return out
    _say(progress, f"[compare] timing both engines at batch {', '.join(map(str, batches))}")
    o.runner.name, n.runner.name = "old", "new"
    config = BenchConfig(min_time_s=float(spec.min_time_s), max_time_s=float(spec.max_time_s), warmup_s=float(spec.warmup_s))
    timings = time_interleaved({"old": o.runner, "new": n.runner}, x, batches, config)
    for b, t in timings.items():
        ro, rn = t.results["old"], t.results["new"]
        out["batches"][str(b)] = {
            "old_p50_ms": ro.p50_ms, "new_p50_ms": rn.p50_ms, "slowdown": rn.p50_ms / ro.p50_ms if ro.p50_ms > 0 else None,
            "old_cv": ro.cv, "new_cv": rn.cv, "iterations": rn.iterations, "min_iterations": config.min_iters,
            "old_ips": ro.throughput_ips, "new_ips": rn.throughput_ips,
            "warnings": [f"old: {w}" for w in ro.warnings] + [f"new: {w}" for w in rn.warnings]}
    out["bench_config"] = config.to_dict()
    return out


def _describe(s: _Side) -> dict[str, Any]:
    m = s.manifest
    return {"bundle": str(s.path), "model": m["model"].get("name"), "target": m.get("target"), "precision": m.get("precision"),
            "status": m.get("status"), "runs": s.runs, "bytes": sum(int(a.get("bytes") or 0) for a in m.get("artifacts", [])),
            "engine_bytes": sum(int(a.get("bytes") or 0) for a in m.get("artifacts", [])
                                if a.get("path") in set((m.get("engine") or {}).get("files") or []) | {"model.onnx"}),
            "weights_sha256": m["model"].get("weights_sha256")}


#: manifest keys whose differences say what changed between two bundles, in the order shown
DIFF_KEYS = ("model", "target", "precision", "precision_details", "device", "preprocess", "input", "engine", "export",
             "simplify", "calibration", "gates", "gate_samples", "versions", "status", "tool")
#: keys that differ between any two exports and say nothing about the engine
NOISE = ("created", "calibration.source", "config.output", "precision_details.float_graph_sha256")


def manifest_differences(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """[{key, old, new}] for every leaf under DIFF_KEYS whose value differs (lists compared whole)."""
    a, b = {}, {}
    for k in DIFF_KEYS:
        _flatten(old.get(k), k, a)
        _flatten(new.get(k), k, b)
    keys = [k for k in dict.fromkeys([*a, *b]) if not any(k == p or k.startswith(p + ".") for p in NOISE)]
    return [{"key": k, "old": a.get(k), "new": b.get(k)} for k in keys if a.get(k) != b.get(k)]


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}", out)
    else:
        out[prefix] = value


def _judge(data: dict[str, Any], spec: CompareSpec) -> None:
    failed: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []

    def budget(name: str, limit: float, measured: float | None, what: str) -> None:
        ok = None if measured is None else measured <= limit
        checks.append({"budget": name, "limit": limit, "measured": measured, "passed": ok, "what": what})
        if ok is False:
            failed[name] = measured

    ag = data["agreement"]
    budget("max_disagreement", spec.max_disagreement, ag["disagreement"],
           f"share of {'real images' if ag['budget_reads'] == 'images' else 'inputs'} whose top-1 differs")
    if "accuracy" in data:
        budget("max_drop", spec.max_drop, data["accuracy"]["drop_top1"], "top-1 accuracy drop on --eval-images (points)")
    cut_short = []
    for b, row in ((data.get("latency") or {}).get("batches") or {}).items():
        # a median of fewer calls than the harness's minimum is noise: no verdict either way
        judged = row["iterations"] >= row["min_iterations"]
        what = f"new p50 / old p50 at batch {b}"
        if not judged:
            what += f" (not judged: {row['iterations']} calls each, fewer than {row['min_iterations']}; raise --max-time)"
        budget(f"max_slowdown@b{b}", spec.max_slowdown, row["slowdown"] if judged else None, what)
        if not judged:
            cut_short.append(b)
    own = data["own_reference"]["new"]
    checks.append({"budget": "new bundle's own gates", "limit": None, "measured": own["status"], "passed": own["status"] == "PASSED",
                   "what": "the new engine against its own stored reference logits, under its manifest's gates"})
    if own["status"] != "PASSED":
        failed["own_gates"] = own.get("failed_gates")
    data["checks"], data["failed_budgets"] = checks, failed
    data["status"] = "FAILED" if failed else "PASSED"
    data["warnings"] = []
    if data["own_reference"]["old"]["status"] != "PASSED":
        data["warnings"].append("the old bundle fails its own gates on this machine: its figures are a weak baseline")
    for b in cut_short:
        data["warnings"].append(f"batch {b}: the timing was cut short by --max-time before each engine "
                                f"had {data['latency']['batches'][b]['min_iterations']} calls: --max-slowdown was not judged there")
    for b, row in ((data.get("latency") or {}).get("batches") or {}).items():
        data["warnings"].extend(f"batch {b}: {w}" for w in row["warnings"])


def _say(progress, line: str) -> None:
    if progress is not None:
        progress(line)


# ---------------------------------------------------------------- documents


def write_documents(data: dict[str, Any], folder: Path) -> list[Path]:
    """compare.json, compare.md, compare.html into ``folder`` (each written whole, then renamed into place)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {"compare.json": json.dumps(data, indent=2, default=_jsonable) + "\n", "compare.md": render_markdown(data),
             "compare.html": render_html(data)}
    paths = []
    for name, body in texts.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, folder / name)
        paths.append(folder / name)
    return paths


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON")


def render_markdown(data: dict[str, Any]) -> str:
    from coatnet_deploy.report.compare_view import build_compare_view
    from coatnet_deploy.report.render import render_view_markdown

    return render_view_markdown(build_compare_view(data))


def render_html(data: dict[str, Any]) -> str:
    from coatnet_deploy.report.compare_view import build_compare_view
    from coatnet_deploy.report.render import render_view_html

    return render_view_html(build_compare_view(data))


def summary_lines(data: dict[str, Any]) -> Iterable[str]:
    """The CLI's text summary."""
    o, n, ag = data["old"], data["new"], data["agreement"]
    yield f"{data['status']}: {n['bundle']} against {o['bundle']}"
    a = ag["images"] or ag["all"]
    yield (f"  agreement  top-1 {a['top1_agreement']:.3f} on {a['samples']} {ag['budget_reads']} "
           f"(disagreement {ag['disagreement']:.3f}, budget {data['budgets']['max_disagreement']:g}); "
           f"cos_min {ag['all']['cosine_min']:.6f}  max_abs {ag['all']['max_abs_err']:.3g} over {ag['all']['samples']} inputs")
    for role in ("old", "new"):
        r = data["own_reference"][role]
        yield f"  {role:<4} vs own reference: {r['status']}  cos_min {r['cosine_min']:.6f}  top1 {r['top1_agreement']:.3f}  ({data[role]['runs']})"
    if "accuracy" in data:
        acc = data["accuracy"]
        yield (f"  accuracy   old {acc['old']['top1']:.2f}%  new {acc['new']['top1']:.2f}%  drop {acc['drop_top1']:+.2f} pt "
               f"(budget {data['budgets']['max_drop']:g})")
    for b, row in ((data.get("latency") or {}).get("batches") or {}).items():
        verdict = (f"budget {data['budgets']['max_slowdown']:g}" if row["iterations"] >= row["min_iterations"]
                   else f"not judged: {row['iterations']} calls each")
        yield (f"  latency b{b}  old p50 {row['old_p50_ms']:.3f} ms  new p50 {row['new_p50_ms']:.3f} ms  new/old x{row['slowdown']:.2f} "
               f"({verdict})")
    yield f"  size       old {o['bytes']:,} B  new {n['bytes']:,} B"
    diffs = data["differences"]
    shown = ", ".join(d["key"] for d in diffs[:8]) + (f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else "")
    yield f"  differs    {shown or 'nothing in the manifests'}"
    for w in data["warnings"]:
        yield f"  warning    {w}"
    if data["failed_budgets"]:
        yield f"  exceeded   {', '.join(f'{k} ({_fmt(v)})' for k, v in data['failed_budgets'].items())}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

