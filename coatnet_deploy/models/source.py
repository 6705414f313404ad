"""Where the model comes from: flags, a timm folder or checkpoint, and the variant's defaults.

``resolve_model_source(cfg)`` (or keyword arguments) -> :class:`ModelSource`: the variant name, head
size, labels, square input size and preprocessing to export with, each value with where it came from
(``provenance``), and the weights, read once. ``--weights`` may name:

- a ``.safetensors`` file or a torch state dict (``weights_only=True``);
- a timm ``train.py`` checkpoint (``{epoch, arch, state_dict, state_dict_ema?, optimizer, version,
  args, metric}``): ``args`` (an ``argparse.Namespace``) gives ``model``, ``num_classes``, ``img_size`` /
  ``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct`` (``crop_mode``) when set, as timm's
  ``train.py`` resolved them with ``resolve_data_config(vars(args), model=...)``;
- a folder written by timm's ``save_for_hf`` (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``), or that ``config.json``: ``architecture``, ``num_classes``, ``label_names``,
  ``model_args.img_size`` and ``pretrained_cfg`` {``input_size``, ``mean``, ``std``, ``interpolation``,
  ``crop_pct``, ``crop_mode``}.

Precedence for each value: a flag (the command line or the ``--config`` file), then what the folder or
checkpoint states, then the weights themselves (the head's size), then the variant's default. A flag
that contradicts the architecture the weights name is refused, naming both; so is a folder or checkpoint
whose statements disagree with each other or with the tensors, or asks for something the exported
bundle cannot do (a non-square input, another crop mode or filter). Torch is imported only to read
weights.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from coatnet_deploy.errors import UserError
from coatnet_deploy.preprocess import CROP_MODES, INTERPOLATIONS, PreprocessConfig

DEFAULT_MODEL = "coatnet_0_rw_224"

# provenance values: where a value came from
FLAG = "flag"  # a command-line flag or the --config file
CONFIG_JSON = "config.json"  # the save_for_hf folder's config.json
CHECKPOINT = "checkpoint"  # the train.py checkpoint (its args or arch)
WEIGHTS = "weights"  # the tensors themselves (the head's size)
VARIANT = "variant default"  # the variant's facts (models/<family>.py default_cfgs)
DEFAULT = "default"  # nothing named a model: DEFAULT_MODEL
IN_MEMORY = "in-memory torch.nn.Module"  # weights_format of a module exported from memory (models/module.py)

SAFE_NAME, BIN_NAME, CONFIG_NAME = "model.safetensors", "pytorch_model.bin", "config.json"
PREPROCESS_FIELDS = ("mean", "std", "interpolation", "crop_pct", "crop_mode")
# model_args a save_for_hf config may carry that leave the inference graph as the registered config builds it
_EVAL_NEUTRAL_ARGS = ("drop_rate", "drop_path_rate", "proj_drop_rate", "attn_drop_rate", "pretrained_cfg_overlay")


@dataclass
class _Stated:
    """What a folder's config.json or a checkpoint states (None: not stated)."""

    origin: str  # CONFIG_JSON | CHECKPOINT
    where: str  # the file, for messages
    architecture: Optional[str] = None
    num_classes: Optional[int] = None
    labels: Optional[List[str]] = None
    image_size: Optional[int] = None
    preprocess: Dict[str, Any] = field(default_factory=dict)
    config_file: Optional[str] = None


@dataclass
class ModelSource:
    """The model to export and where each fact about it came from (see the module docstring).

    ``provenance`` maps name, num_classes, labels, image_size, mean, std, interpolation, crop_pct and
    crop_mode to FLAG, CONFIG_JSON, CHECKPOINT, WEIGHTS, VARIANT or DEFAULT. ``state_dict_key`` is the
    checkpoint entry the weights came from (``state_dict``, ``state_dict_ema``, ...; None for a flat file).
    """

    name: str
    num_classes: int
    labels: Optional[List[str]]
    image_size: int
    preprocess: PreprocessConfig
    provenance: Dict[str, str]
    weights: Optional[str] = None  # as given (file, folder or config.json)
    weights_file: Optional[str] = None  # the file the tensors were read from
    weights_format: Optional[str] = None
    state_dict_key: Optional[str] = None
    ema: bool = False
    weights_sha256: Optional[str] = None
    config_sha256: Optional[str] = None
    stated_in: Optional[str] = None  # the config.json or checkpoint that named facts, for messages
    _state_dict: Optional[dict] = field(default=None, repr=False, compare=False)

    @property
    def info(self):
        """The variant's ModelInfo."""
        from coatnet_deploy.models import model_info

        return model_info(self.name)

    @property
    def timm_name(self) -> Optional[str]:
        return self.info.timm_name

    @property
    def random_init(self) -> bool:
        """True when the export builds seeded random weights (no --weights)."""
        return self.weights is None

    def warnings(self) -> List[str]:
        """What the report should tell about where the model's facts came from (nothing, for files and variants)."""
        return []

    def build(self, seed: int = 0):
        """-> the ``nn.Module`` in eval mode: seeded random init, then the weights (strict) when given."""
        from coatnet_deploy.models import _construct
        from coatnet_deploy.models.weights import load_into, read_weights

        model = _construct(self.name, self.num_classes, self.image_size, seed)
        if self.weights_file is not None:
            sd = self._state_dict
            if sd is None:  # built before: read again rather than keep a second copy alive
                sd = read_weights(self.weights_file, self.ema if self.state_dict_key else False).state_dict
            self._state_dict = None
            fix = "pass weights saved from the same variant (see 'coatnet-deploy models')"
            if self.provenance["name"] in (CONFIG_JSON, CHECKPOINT):
                key = "'architecture' in config.json" if self.provenance["name"] == CONFIG_JSON else "the checkpoint's args.model"
                fix = f"{key} says {self.name}: check it names the variant the weights were trained as"
            load_into(model, sd, name=f"{self.name} at {self.image_size}px", source=f"weights {self.weights_file}", fix=fix)
        return model.eval()

    def manifest_model(self, seed: int = 0) -> Dict[str, Any]:
        """-> the manifest's ``model`` block: the contract's keys plus weights format, state dict and provenance."""
        return {
            "name": self.name,
            "timm_name": self.timm_name,
            "num_classes": self.num_classes,
            "labels": self.labels,
            "weights_sha256": self.weights_sha256,
            "weights_note": None if self.weights else f"random init, seed {seed}",
            "image_size": self.image_size,
            "weights_format": self.weights_format,
            "weights_file": os.path.basename(self.weights_file) if self.weights_file else None,
            "state_dict": self.state_dict_key,
            "ema": self.ema,
            "config_sha256": self.config_sha256,
            "provenance": dict(self.provenance),
        }


def resolve_model_source(cfg: Any = None, *, model: Optional[str] = None, weights=None,
                         num_classes: Optional[int] = None, labels: Optional[str] = None,
                         image_size: Optional[int] = None, ema: Optional[bool] = None) -> ModelSource:
    """Flags (an ExportConfig-like ``cfg`` with model, weights, num_classes, labels, image_size, ema, and/or
    the keywords, which win) -> :class:`ModelSource`. Reads config.json and the weights once; raises
    UserError (one line: what, why, fix) for every contradiction or unsupported request."""
    from coatnet_deploy.models import list_models, model_info, validate_image_size

    def pick(key, given):
        return given if given is not None else getattr(cfg, key, None)

    model, weights = pick("model", model), pick("weights", weights)
    num_classes, labels = pick("num_classes", num_classes), pick("labels", labels)
    image_size, ema = pick("image_size", image_size), bool(pick("ema", ema))
    if model is not None:
        model_info(model)  # unknown names: the registry's message
    prov: Dict[str, str] = {}
    stated = None
    loaded = None
    fmt = config_sha = None
    if weights is None:
        if ema:
            raise UserError("--ema needs --weights", "there are no weights to take EMA weights from",
                            "drop --ema, or pass --weights CHECKPOINT")
    else:
        weights = os.fspath(weights)
        folder = _folder_of(weights)
        if folder is not None:
            stated, tensor_file = _read_folder(folder)
            fmt = "timm save_for_hf folder"
            if ema:
                raise UserError(f"--ema given, but {folder} has no EMA weights",
                                "a save_for_hf folder holds one state dict", "drop --ema")
            config_sha = _sha256(stated.config_file)
        else:
            tensor_file = weights
        from coatnet_deploy.models.weights import read_weights

        loaded = read_weights(tensor_file, ema)
        if folder is None:
            if loaded.is_training_checkpoint:
                fmt = "timm train.py checkpoint"
                stated = _read_checkpoint_meta(loaded.meta, weights, list_models())
            else:
                fmt = "safetensors" if weights.endswith(".safetensors") else "torch state dict"

    # -- architecture
    named = _variant_name(stated.architecture) if stated is not None and stated.architecture else None
    if stated is not None and stated.architecture and named is None:
        if model is not None:
            raise UserError(f"--model {model} contradicts the weights",
                            f"{stated.where} names architecture {stated.architecture!r}",
                            f"drop --model, or fix {_arch_key(stated)} if it is {model} under another name")
        raise UserError(f"{stated.where} names architecture {stated.architecture!r}, which coatnet-deploy does not build",
                        f"the variants are: {', '.join(list_models())}",
                        f"export one of those, or fix {_arch_key(stated)} if it is one under another name")
    if model is not None and named is not None and named != model:
        raise UserError(f"--model {model} contradicts the weights", f"{stated.where} names architecture {named}",
                        f"drop --model, or pass --model {named}")
    if model is not None:
        name, prov["name"] = model, FLAG
    elif named is not None:
        name, prov["name"] = named, stated.origin
    else:
        name, prov["name"] = DEFAULT_MODEL, DEFAULT
    info = model_info(name)

    # -- classes
    head = None
    if loaded is not None:
        from coatnet_deploy.models.weights import infer_num_classes

        head = infer_num_classes(loaded.state_dict)
    if stated is not None and stated.num_classes is not None and head is not None and stated.num_classes != head:
        raise UserError(f"{stated.where} says num_classes {stated.num_classes}",
                        f"the head in {os.path.basename(loaded.path)} has {head} classes",
                        f"fix num_classes there to {head} (or re-save the folder with save_for_hf)"
                        if stated.origin == CONFIG_JSON else "re-save the checkpoint: its args do not describe its weights")
    if num_classes is not None:
        if head is not None and num_classes != head:
            raise UserError(f"--num-classes {num_classes} does not match the weights",
                            f"the head in {weights} has {head} classes", f"drop --num-classes or pass {head}")
        prov["num_classes"] = FLAG
    elif stated is not None and stated.num_classes is not None:
        num_classes, prov["num_classes"] = stated.num_classes, stated.origin
    elif head is not None:
        num_classes, prov["num_classes"] = head, WEIGHTS
    else:
        num_classes, prov["num_classes"] = info.num_classes, VARIANT
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"invalid number of classes {num_classes!r}", "it must be a positive integer")

    # -- labels
    if labels is not None:
        names, prov["labels"] = read_labels(labels, num_classes), FLAG
    elif stated is not None and stated.labels is not None:
        if len(stated.labels) != num_classes:
            raise UserError(f"{stated.where} has {len(stated.labels)} label_names", f"the model has {num_classes} classes",
                            "fix label_names there, or pass --labels FILE with one name per class")
        names, prov["labels"] = stated.labels, stated.origin
    else:
        names, prov["labels"] = None, "none"

    # -- input size
    if image_size is not None:
        size, prov["image_size"] = validate_image_size(image_size), FLAG
    elif stated is not None and stated.image_size is not None:
        size, prov["image_size"] = stated.image_size, stated.origin
        try:
            validate_image_size(size)
        except UserError:
            raise UserError(f"{stated.where} gives input size {size}",
                            "the relative-position tables need a multiple of 32 from 64 up",
                            "pass --image-size S (e.g. 224): the tables are resized") from None
    else:
        size, prov["image_size"] = validate_image_size(info.default_image_size), VARIANT

    # -- preprocessing
    facts = {"mean": info.mean, "std": info.std, "interpolation": info.interpolation, "crop_pct": info.crop_pct,
             "crop_mode": "center"}
    for key in PREPROCESS_FIELDS:
        if stated is not None and stated.preprocess.get(key) is not None:
            facts[key], prov[key] = stated.preprocess[key], stated.origin
        else:
            prov[key] = VARIANT
    pp = PreprocessConfig.for_size(size, facts["crop_pct"], facts["interpolation"], facts["mean"], facts["std"],
                                   facts["crop_mode"])
    return ModelSource(
        name=name, num_classes=num_classes, labels=names, image_size=size, preprocess=pp, provenance=prov,
        weights=weights, weights_file=loaded.path if loaded else None, weights_format=fmt,
        state_dict_key=loaded.key if loaded else None, ema=ema,
        weights_sha256=_sha256(loaded.path) if loaded else None, config_sha256=config_sha,
        stated_in=stated.where if stated else None, _state_dict=loaded.state_dict if loaded else None,
    )


def weights_file_of(weights) -> str:
    """``--weights`` value -> the file its tensors are read from (for a folder or its config.json: the
    safetensors or .bin beside config.json), without reading anything."""
    weights = os.fspath(weights)
    folder = _folder_of(weights)
    if folder is None:
        return weights
    return _tensor_file(folder)


def read_labels(path, num_classes: int) -> List[str]:
    """Labels file (one class name per line, blank lines skipped) -> names; UserError unless one per class."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"labels file '{path}' not found", "--labels must name a text file", "pass a file with one class name per line")
    try:
        names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise UserError(f"labels file '{path}' is not UTF-8 text", "it could not be decoded", "save it as UTF-8, one class name per line") from None
    if len(names) != num_classes:
        raise UserError(f"labels file '{path}' has {len(names)} names", f"the model has {num_classes} classes",
                        "give one name per class, or pass --num-classes to match")
    return names


def rebuild_reference(manifest: Dict[str, Any], weights=None):
    """A bundle's manifest (+ the weights it was exported from) -> (``nn.Module``, note): the PyTorch
    reference as at export. The weights must be the file the manifest records (SHA-256 of the tensor file;
    for a folder, the one inside); without weights the seeded random init of the export config is rebuilt."""
    m = manifest["model"]
    if m.get("weights_format") == IN_MEMORY:
        raise UserError(f"the bundle was exported from an in-memory {m.get('module_class') or 'module'}",
                        "its PyTorch reference cannot be rebuilt from the manifest",
                        "drop --reference: the bundle's golden reference logits still check the engine (parity, compare)")
    recorded = m.get("weights_sha256")
    seed = int((manifest.get("config") or {}).get("seed") or 0)
    image_size = int(m.get("image_size") or manifest["input"]["shape"][2])
    if weights:
        if not Path(weights).exists():
            raise UserError(f"weights file '{weights}' not found", "the path does not exist", "pass the weights the bundle was exported from")
        if recorded is None:
            raise UserError(f"--weights {weights} given, but the bundle was exported without weights",
                            "its manifest records a seeded random init (weights_sha256 null)", "drop --weights")
        got = _sha256(weights_file_of(weights))
        if got != recorded:
            raise UserError(f"weights '{weights}' are not the ones this bundle was exported from",
                            f"sha256 {got[:16]}... != manifest {recorded[:16]}...", "pass the same weights file as at export")
        # bundles written before --ema record no choice: they took the EMA weights when present
        ema = m.get("ema") if "ema" in m else None
        note = f"weights {Path(weights).name} (sha256 {got[:12]})"
    else:
        if recorded is not None:
            raise UserError("--reference needs the bundle's weights", f"the bundle was exported from weights with sha256 {recorded[:16]}...",
                            "pass --weights PATH (the same file as at export)")
        ema, note = False, f"random init, seed {seed} (as at export)"
    if ema is None:
        from coatnet_deploy.models.weights import read_weights

        w = read_weights(weights_file_of(weights), ema=None)
        ema = w.key in ("state_dict_ema", "model_ema")
    source = resolve_model_source(model=m["name"], weights=weights or None, num_classes=m.get("num_classes"),
                                  image_size=image_size, ema=ema)
    if source.state_dict_key:
        note += f", {source.state_dict_key}"
    return source.build(seed=seed), note


# -- folders ----------------------------------------------------------------------------------------

def _folder_of(weights: str) -> Optional[str]:
    p = Path(weights)
    if p.is_dir():
        return str(p)
    if p.name == CONFIG_NAME:
        return str(p.parent)
    if not p.exists():
        raise UserError(f"--weights '{weights}' not found",
                        "it must name a weights file, a folder saved by timm's save_for_hf, or its config.json",
                        "check the path given to --weights")
    return None


def _tensor_file(folder: str) -> str:
    if not (Path(folder) / CONFIG_NAME).is_file():
        raise UserError(f"--weights folder {folder} has no {CONFIG_NAME}",
                        f"a timm save_for_hf folder holds {CONFIG_NAME} and {SAFE_NAME} (or {BIN_NAME})",
                        "pass the weights file itself, or the folder timm wrote")
    for fn in (SAFE_NAME, BIN_NAME):  # timm's own preference: safetensors first
        if (Path(folder) / fn).is_file():
            return str(Path(folder) / fn)
    raise UserError(f"--weights folder {folder} has {CONFIG_NAME} but no {SAFE_NAME} or {BIN_NAME}",
                    "the weights are not beside config.json", "copy the weights file timm saved into the folder")


def _read_folder(folder: str) -> Tuple[_Stated, str]:
    cfg_path = str(Path(folder) / CONFIG_NAME)
    tensor_file = _tensor_file(folder)
    try:
        cfg = json.loads(Path(cfg_path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{cfg_path} is malformed", "it is not UTF-8 text", "re-save the folder with timm's save_for_hf") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path} is not valid JSON", f"{e.msg} at line {e.lineno} column {e.colno}",
                        "re-save the folder with timm's save_for_hf") from None
    except RecursionError:  # json's decoder recurses once per nesting level
        raise UserError(f"{cfg_path} is nested too deeply to read", "timm's save_for_hf writes a flat config",
                        "re-save the folder with timm's save_for_hf") from None
    return _parse_hf_config(cfg, cfg_path), tensor_file


class _Malformed(Exception):
    pass


def _parse_hf_config(cfg: Any, where: str) -> _Stated:
    """save_for_hf's config.json (current or timm's legacy single-dict form) -> what it states."""
    try:
        return _parse_hf_config_or_raise(cfg, where)
    except _Malformed as e:
        raise UserError(f"{where} is malformed", str(e), "re-save the folder with timm's save_for_hf, or fix that key") from None


def _parse_hf_config_or_raise(cfg: Any, where: str) -> _Stated:
    if not isinstance(cfg, dict):
        raise _Malformed(f"it holds a {type(cfg).__name__}, not an object")
    if "pretrained_cfg" not in cfg:  # legacy: one dict, as timm's _parse_model_cfg still reads
        pcfg = dict(cfg)
        cfg = {"architecture": pcfg.pop("architecture", None), "pretrained_cfg": pcfg}
        if "labels" in pcfg:
            cfg["label_names"] = pcfg.pop("labels")
    pcfg = cfg["pretrained_cfg"]
    if not isinstance(pcfg, dict):
        raise _Malformed(f"'pretrained_cfg' is {pcfg!r}, not an object")
    arch = cfg.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise _Malformed(f"'architecture' is {arch!r}, not a model name")
    st = _Stated(CONFIG_JSON, where, architecture=arch, config_file=where)
    n = cfg.get("num_classes", pcfg.get("num_classes"))
    if n is not None:
        st.num_classes = _pos_int("num_classes", n)
    args = cfg.get("model_args") or {}
    if not isinstance(args, dict):
        raise _Malformed(f"'model_args' is {args!r}, not an object")
    for key, value in args.items():
        if key == "num_classes":
            if st.num_classes is not None and _pos_int("model_args.num_classes", value) != st.num_classes:
                raise _Malformed(f"model_args.num_classes {value} differs from num_classes {st.num_classes}")
        elif key == "in_chans":
            _rgb(value, where)
        elif key == "global_pool":
            if value not in ("avg", None):
                raise UserError(f"{where} sets model_args.global_pool = {value!r}",
                                "coatnet-deploy builds CoAtNet heads with average pooling only",
                                "export a model with global_pool 'avg'")
        elif key == "img_size":
            st.image_size = _square(value, "model_args.img_size", where)
        elif key not in _EVAL_NEUTRAL_ARGS:
            raise UserError(f"{where} sets model_args.{key} = {value!r}",
                            "coatnet-deploy builds the registered configs as they are and cannot apply it",
                            "export a model saved without that argument")
    if st.image_size is None and pcfg.get("input_size") is not None:
        size = pcfg["input_size"]
        if not isinstance(size, (list, tuple)) or len(size) != 3:
            raise _Malformed(f"pretrained_cfg.input_size is {size!r}, expected [channels, height, width]")
        _rgb(size[0], where)
        st.image_size = _square(list(size[1:]), "pretrained_cfg.input_size", where)
    labels = cfg.get("label_names")
    if labels is not None:
        st.labels = _label_list(labels, st.num_classes)
    st.preprocess = _preprocess_facts(pcfg, where, "pretrained_cfg.")
    return st


def _read_checkpoint_meta(meta: Dict[str, Any], where: str, known: List[str]) -> _Stated:
    """A train.py checkpoint's non-tensor entries -> what it states (args.model, sizes, preprocessing)."""
    import argparse

    st = _Stated(CHECKPOINT, where)
    args = meta.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if args is not None and not isinstance(args, dict):
        raise UserError(f"{where} is malformed", f"its 'args' is a {type(args).__name__}",
                        "re-save it with timm's train.py, or pass a state dict")
    args = args or {}
    try:
        arch = args.get("model") or meta.get("arch")
        if arch is not None and not isinstance(arch, str):
            raise _Malformed(f"args.model is {arch!r}, not a model name")
        if not args and arch not in known:
            arch = None  # without args, CheckpointSaver writes the class name ("maxxvit") as arch
        st.architecture = arch
        if args.get("num_classes") is not None:
            st.num_classes = _pos_int("args.num_classes", args["num_classes"])
        if args.get("input_size") is not None:
            size = args["input_size"]
            if not isinstance(size, (list, tuple)) or len(size) != 3:
                raise _Malformed(f"args.input_size is {size!r}, expected [channels, height, width]")
            _rgb(size[0], where)
            st.image_size = _square(list(size[1:]), "args.input_size", where)
        elif args.get("img_size") is not None:
            st.image_size = _square(args["img_size"], "args.img_size", where)
        st.preprocess = _preprocess_facts(args, where, "args.")
    except _Malformed as e:
        raise UserError(f"{where} is malformed", str(e), "re-save it with timm's train.py, or pass a state dict") from None
    return st


def _preprocess_facts(d: Dict[str, Any], where: str, prefix: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in ("mean", "std"):
        v = d.get(key)
        if v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, (list, tuple)) or len(v) not in (1, 3) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            raise _Malformed(f"{prefix}{key} is {v!r}, expected 3 numbers (R, G, B)")
        v = tuple(float(x) for x in v) * (3 if len(v) == 1 else 1)
        if key == "std" and min(v) <= 0:
            raise _Malformed(f"{prefix}std is {list(v)}, every std must be > 0")
        out[key] = v
    interp = d.get("interpolation")
    if interp:  # train.py's default is '' (= the model's)
        if not isinstance(interp, str) or interp not in INTERPOLATIONS:
            raise UserError(f"{where} asks for interpolation {interp!r}",
                            f"coatnet-deploy (and the device runtimes) resize with {', '.join(INTERPOLATIONS)} only",
                            "set interpolation to one of those there (bicubic is timm's usual choice)")
        out["interpolation"] = interp
    pct = d.get("crop_pct")
    if pct is not None:
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not math.isfinite(pct) or pct <= 0:
            raise _Malformed(f"{prefix}crop_pct is {pct!r}, expected a number in (0, 1]")
        if pct > 1:
            raise UserError(f"{where} asks for crop_pct {pct}",
                            "a crop larger than the resized image (padding around it) is not supported",
                            "set crop_pct to at most 1.0 there")
        out["crop_pct"] = float(pct)
    mode = d.get("crop_mode")
    if mode:
        if not isinstance(mode, str) or mode not in CROP_MODES:
            raise UserError(f"{where} asks for crop_mode {mode!r}",
                            f"coatnet-deploy does timm's eval crop modes {', '.join(CROP_MODES)} only",
                            "set crop_mode to one of those there")
        out["crop_mode"] = mode
    return out


def _pos_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _Malformed(f"{key} is {v!r}, expected a positive integer")
    return v


def _rgb(channels: Any, where: str) -> None:
    if channels != 3:
        raise UserError(f"{where} describes a {channels!r}-channel input", "coatnet-deploy exports RGB models (3 channels)",
                        "export a model with in_chans 3")


def _square(v: Any, key: str, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        raise _Malformed(f"{key} is {v!r}, expected a size in pixels")
    if v[0] != v[1]:
        raise UserError(f"{where} gives input size {v[0]}x{v[1]} ({key})",
                        "coatnet-deploy exports square inputs only",
                        "pass --image-size S to export at S x S (relative-position tables are resized)")
    return int(v[0])


def _label_list(labels: Any, num_classes: Optional[int]) -> List[str]:
    # save_for_hf writes a list, or a dict {index: name} when there are gaps
    if isinstance(labels, (list, tuple)) and all(isinstance(x, str) for x in labels):
        return [str(x) for x in labels]
    if isinstance(labels, dict):
        try:
            by_index = {int(k): v for k, v in labels.items()}
        except (TypeError, ValueError):
            raise _Malformed("label_names keys must be class indices") from None
        if not all(isinstance(v, str) for v in by_index.values()) or min(by_index, default=0) < 0:
            raise _Malformed("label_names must map class indices to names")
        n = num_classes if num_classes is not None else max(by_index, default=-1) + 1
        return [by_index.get(i, f"class_{i}") for i in range(n)]
    raise _Malformed(f"label_names is {labels!r}, expected a list of names")


def _arch_key(st: _Stated) -> str:
    return "'architecture' in config.json" if st.origin == CONFIG_JSON else "args.model in the checkpoint"


def _variant_name(arch: str) -> Optional[str]:
    """timm architecture name (maybe 'hf-hub:org/name.tag' or 'name.tag') -> registered variant, or None."""
    from coatnet_deploy.models import list_models, model_info

    base = arch.split(":", 1)[-1].rsplit("/", 1)[-1].split(".", 1)[0]
    names = list_models()
    if base in names:
        return base
    by_timm = {model_info(n).timm_name: n for n in names if model_info(n).timm_name}
    return by_timm.get(base)


def _sha256(path) -> str:
    from coatnet_deploy.models.weights import weights_sha256

    return weights_sha256(path)
