"""Export configuration: a YAML file (``--config``) overridden by CLI flags, validated by key and type.

Every field is listed in ``FIELDS`` with its type and meaning; ``export_configs/*.yaml`` and the README
are documented from the same table, and an unknown key or a value of the wrong type is refused naming
the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coatnet_deploy.errors import UserError
from coatnet_deploy.fields import Field, check_fields

# Why each default is what it is: docs/GATES.md.
DEFAULT_GATES: dict[str, dict[str, float]] = {
    # fp32 must say exactly what the model says; 1e-4 on logits leaves room for summation order only.
    "fp32": {"top1_agreement": 1.0, "max_abs_err": 1e-4, "cosine_min": 0.99999},
    # fp16 rounds every tensor: the direction of every photo's logits holds to 1e-3.
    "fp16": {"cosine_min": 0.999, "top1_agreement": 0.9},
    # INT8 is judged by decisions and by the logits' direction over the photos, not by the worst
    # sample: one photo's 10-class logit vector can turn while its answer holds. 0.75 on 8 photos
    # lets a random-init model (flat logits) flip two; a trained one flips none.
    "int8": {"cosine_mean": 0.98, "top1_agreement": 0.75},
    # FP8 (E4M3 Q/DQ by ModelOpt, TensorRT only) rounds to 3 mantissa bits: int8's budget holds it.
    "fp8": {"cosine_mean": 0.98, "top1_agreement": 0.75},
}
#: the INT8 top-1 gate for a seeded random init (no --weights), whose logits are near-flat
RANDOM_INIT_INT8_TOP1 = 0.5
#: with --eval-images the accuracy drop decides; the golden metrics keep only a floor a broken engine fails
DEFAULT_EVAL_GATES: dict[str, dict[str, float]] = {
    "fp32": {},
    "fp16": {"accuracy_drop": 0.5, "cosine_mean": 0.99, "top1_agreement": 0.5},
    "int8": {"accuracy_drop": 1.0, "cosine_mean": 0.9, "top1_agreement": 0.5},
    "fp8": {"accuracy_drop": 1.0, "cosine_mean": 0.9, "top1_agreement": 0.5},
}
#: which golden samples the gates read (compare.gate_mask): quantized precisions gate on the photos
DEFAULT_GATE_SAMPLES = {"fp32": "all", "fp16": "images", "int8": "images", "fp8": "images"}
GATE_KEYS = ("cosine_min", "cosine_mean", "max_abs_err", "mean_abs_err", "top1_agreement", "top5_agreement", "sqnr_db",
             "accuracy_drop")


@dataclass
class ExportConfig:
    # None: the architecture --weights names (a timm folder or train.py checkpoint), else coatnet_0_rw_224
    model: str | None = None
    weights: str | None = None
    # False (timm's validate.py default): the trained weights; the EMA copy only when asked for
    ema: bool = False
    num_classes: int | None = None
    labels: str | None = None
    image_size: int | None = None
    target: str | None = None  # None: the registry's default target
    device: str | None = None  # None: devices.DEFAULT (x86-64-v3)
    precision: str = "fp32"
    calibration: str | None = None
    calibration_samples: int = 300
    images: str | None = None
    golden_images: int = 8
    golden_random: int = 4
    batch: str = "1:1:8"
    reference: str = "auto"
    defer_build: bool = False
    output: str | None = None
    opset: int = 17
    simplify: bool = True
    seed: int = 0
    threads: int | None = None
    bench_iterations: int = 20
    eval_images: str | None = None
    sensitivity: bool = False
    max_drop: float | None = None
    int8_method: str = "auto"
    calibrate_method: str = "minmax"
    gates: dict = field(default_factory=dict)
    gate_samples: str | None = None  # None: the precision's default (DEFAULT_GATE_SAMPLES)
    #: each target's own config section, keyed by the target's name (e.g. its builder settings)
    target_options: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "ExportConfig":
        """A validated mapping (config file keys, target sections under their target's name) -> config."""
        core = {k: v for k, v in values.items() if k in FIELDS}
        sections = {k: dict(v) for k, v in values.items() if k not in FIELDS}
        return cls(**core, target_options=sections)

    def __post_init__(self) -> None:
        if self.target is None:
            from coatnet_deploy import targets

            self.target = targets.default_name()

    # -- derived -------------------------------------------------------------------------------
    def batch_range(self) -> tuple[int, int, int]:
        return parse_batch(self.batch)

    def gate_thresholds(self, random_init: bool | None = None) -> dict[str, float]:
        """The precision's default gates (with --eval-images: the accuracy drop plus floors), then the overrides.
        ``random_init``: the model has seeded random weights (default: no --weights)."""
        with_eval = DEFAULT_EVAL_GATES[self.precision] if self.eval_images else {}
        merged = dict(with_eval or DEFAULT_GATES[self.precision])
        if random_init is None:
            random_init = not self.weights
        if self.precision in ("int8", "fp8") and random_init and not with_eval:
            # seeded random weights give near-flat logits: their top-1 flips on rounding noise alone
            merged["top1_agreement"] = RANDOM_INIT_INT8_TOP1
        merged.update(self.gates.get(self.precision, {}) if _nested_gates(self.gates) else self.gates)
        return merged

    def device_profile(self):
        """The device profile the export makes its CPU-dependent choices for (``devices.Profile``)."""
        from coatnet_deploy import devices

        return devices.get(self.device)

    def gated_samples(self) -> str:
        """'all' or 'images': which golden samples the gates read."""
        return self.gate_samples or DEFAULT_GATE_SAMPLES[self.precision]

    def default_output(self, model: str | None = None) -> str:
        """bundles/<model>-<target>-<precision>; ``model``: the resolved variant when the flags name none."""
        from coatnet_deploy.models.source import DEFAULT_MODEL

        return str(Path("bundles") / f"{model or self.model or DEFAULT_MODEL}-{self.target}-{self.precision}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {**{k: v for k, v in d.items() if k != "target_options"}, **d["target_options"]}


def _nested_gates(g: dict) -> bool:
    return any(k in DEFAULT_GATES for k in g)


def _check_device(value: str | None) -> None:
    if value is not None:
        from coatnet_deploy import devices

        devices.get(value)


def parse_batch(text: str) -> tuple[int, int, int]:
    """'1:1:8' -> (1, 1, 8); a single 'N' means N:N:N."""
    parts = str(text).split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) == 1:
        nums = nums * 3
    if len(nums) != 3 or not (1 <= nums[0] <= nums[1] <= nums[2]):
        raise UserError(f"bad batch range '{text}'", "expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX", "pass e.g. --batch 1:1:8")
    return nums[0], nums[1], nums[2]


def _check_gates(gates: dict, source: str, key: str) -> None:
    """Flat {metric: threshold} or per precision {int8: {metric: threshold}}; metrics from GATE_KEYS."""
    flat = {}
    for k, v in gates.items():
        if k in DEFAULT_GATES:  # a precision's own section
            if not isinstance(v, dict):
                raise UserError(f"{source}: key '{key}.{k}' must be a mapping", f"got {v!r}", "fix the value")
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    for k, v in flat.items():
        name = str(k).split(".")[-1]
        if name not in GATE_KEYS:
            raise UserError(f"{source}: unknown gate {str(k)!r}", f"valid gates: {', '.join(GATE_KEYS)}", "remove or rename it")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UserError(f"{source}: gate {str(k)!r} must be a number", f"got {v!r}", "fix the value")


# name -> (accepted python types, help) or a Field with more rules (coatnet_deploy.fields).
# The help text documents export_configs/*.yaml. Each target's own section is added by ``fields_table``.
FIELDS: dict[str, Field | tuple[tuple[type, ...], str]] = {
    "model": ((str, type(None)), "variant name from `coatnet-deploy models`; null = the one --weights names, else coatnet_0_rw_224"),
    "weights": ((str, type(None)), ".safetensors, torch state dict or timm train.py checkpoint (weights_only), or a timm "
                                   "save_for_hf folder / its config.json; null = seeded random init"),
    "ema": ((bool,), "take the checkpoint's EMA weights (state_dict_ema, then model_ema); false = the trained weights, "
                     "as timm's validate.py without --use-ema"),
    "num_classes": ((int, type(None)), "head size; inferred from the weights when null"),
    "labels": ((str, type(None)), "text file with one class name per line"),
    "image_size": ((int, type(None)), "square input size, a multiple of 32 from 64; null = the variant's"),
    "target": ((str,), "a target from `coatnet-deploy targets`"),
    "precision": ((str,), "fp32 | fp16 | int8 | fp8 (fp8: tensorrt)"),
    "device": Field((str, type(None)), "the CPUs the bundle is made for: a profile from `coatnet-deploy targets --device NAME` "
                                       "(x86-64-v2 / v3 / v4, x86-64-v4-vnni, aarch64-v8.0, ..., host); null = x86-64-v3",
                    check=lambda value, source, key: _check_device(value)),
    "calibration": ((str, type(None)), "image folder or .npz of preprocessed batches; null = the shipped calibration photos"),
    "calibration_samples": Field((int,), "images drawn (seeded) from the calibration set for INT8", minimum=0),
    "images": ((str, type(None)), "folder of images used as golden inputs; null = the --calibration folder (or the shipped photos)"),
    "golden_images": Field((int,), "how many real images become golden inputs", minimum=0),
    "golden_random": Field((int,), "how many seeded random tensors join the golden inputs", minimum=0),
    "batch": Field((str,), "dynamic batch range MIN:OPT:MAX", check=lambda value, source, key: parse_batch(value)),
    "reference": Field((str,), "auto | cpu | cuda: where the PyTorch reference runs", choices=("auto", "cpu", "cuda")),
    "defer_build": ((bool,), "targets whose engines are built on the device: write the bundle, build there"),
    "output": ((str, type(None)), "bundle directory; null = bundles/<model>-<target>-<precision>"),
    "opset": ((int,), "ONNX opset (17 parses on TensorRT 10.x / JetPack 6)"),
    "simplify": ((bool,), "run onnxsim (checked against the plain graph)"),
    "seed": ((int,), "seed for random init, golden tensors and calibration shuffle"),
    "threads": ((int, type(None)), "runtime threads for parity and latency; null = runtime default"),
    "bench_iterations": Field((int,), "latency iterations written into the report; 0 = skip latency", minimum=0),
    "eval_images": ((str, type(None)), "ImageFolder tree: adds dataset accuracy to the report"),
    "sensitivity": ((bool,), "INT8: per-node SQNR ranking in the report"),
    "max_drop": ((float, int, type(None)), "INT8 accuracy budget: move worst layers to float until the gate holds"),
    "int8_method": Field((str,), "INT8 where a target offers several methods: auto | qdq | nncf (auto: of those that pass the gates, the faster)",
                         choices=("auto", "qdq", "nncf")),
    "calibrate_method": Field((str,), "minmax | entropy | percentile", choices=("minmax", "entropy", "percentile")),
    "gates": Field((dict,), "parity gate overrides, e.g. {cosine_mean: 0.995} or per precision {int8: {...}} (docs/GATES.md)",
                   check=_check_gates),
    "gate_samples": Field((str, type(None)), "golden samples the gates read: all | images; null = images for fp16/int8/fp8, all for fp32",
                          choices=("all", "images")),
}


def target_sections() -> dict[str, dict]:
    """{target name: its Option table} for every registered target that has options of its own."""
    from coatnet_deploy import targets

    return {t.name: t.options for t in targets.all_targets() if t.options}


def fields_table() -> dict[str, Field | tuple]:
    """FIELDS plus one section per target with options of its own (``tensorrt: {workspace_mb: ...}``)."""
    sections = {name: Field((dict,), f"{name}'s own options: {', '.join(opts)}",
                            section={k: Field(o.types, o.help, choices=tuple(o.choices) or None) for k, o in opts.items()})
                for name, opts in target_sections().items()}
    return {**FIELDS, **sections}


def config_table() -> list[str]:
    """The README's table of config keys (key, meaning, default), from FIELDS and each target's section."""
    from coatnet_deploy.fields import as_field

    defaults = ExportConfig().to_dict()
    lines = ["| key | meaning |", "|---|---|"]
    for key, f in fields_table().items():
        f = as_field(f)
        default = defaults.get(key, {})
        shown = "null" if default is None else ("true" if default is True else "false" if default is False else default)
        lines.append(f"| `{key}` | {f.help.replace('|', '&#124;')} (default: `{shown}`) |")
    return lines


def validate(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check keys and types of an export config mapping (``fields_table``); returns it unchanged when valid."""
    check_fields(values, fields_table(), source)
    return values


def read_yaml_mapping(path: str | Path, example: str) -> dict[str, Any]:
    """A YAML file that must hold one mapping -> that mapping (UserError naming the file otherwise)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file '{path}' not found", "the path does not name a file", f"pass an existing file, e.g. {example}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"config file '{path}' is not valid YAML", first, "fix the syntax") from None
    except RecursionError:
        # PyYAML parses recursively: thousands of nested brackets exhaust the stack.
        raise UserError(f"config file '{path}' is nested too deeply", "a config is a flat mapping with small sections",
                        f"see {example}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must be a mapping of keys to values", f"got a {type(data).__name__}", f"see {example}")
    return data


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and validate an export config YAML; returns the mapping of keys it sets."""
    return validate(read_yaml_mapping(path, "export_configs/onnxruntime-fp32.yaml"), str(path))


def make_config(config_file: str | None, overrides: dict[str, Any], source: str = "command line") -> ExportConfig:
    """The config file's values, then every CLI flag (or API argument, ``source`` "export()") that was given
    (None = not given)."""
    values = load_config_file(config_file) if config_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    validate(given, source)
    values.update(given)
    return ExportConfig.from_mapping(values)
