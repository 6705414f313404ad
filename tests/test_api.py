"""The Python API as a training script or notebook calls it (README "Python API"): a variant name, a
checkpoint path, an in-memory timm model and a non-CoAtNet classifier; wrong arguments give the CLI's
one-line errors; the bundles of a module work with parity, predict and the C++ device app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import coatnet_deploy
from bundle_helpers import REPO, run_cli, stderr_lines
from coatnet_deploy import UserError
from timm_fixtures import EXPECTED, META, PHOTOS, unpacked

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
FAST = {"bench_iterations": 0, "golden_images": 2, "golden_random": 1}


class SmallResNet(nn.Module):
    """Not a CoAtNet: a two-block residual CNN with BatchNorm and a linear head, as a user's own classifier."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)) for _ in range(2))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.head(x.mean((2, 3)))


def small_resnet(seed: int = 0) -> SmallResNet:
    torch.manual_seed(seed)
    m = SmallResNet()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return m


def timm_model_object():
    """The timm-trained fixture as timm.create_model + load hands it over: the architecture with timm's weights
    and the ``pretrained_cfg`` dict timm sets on the object (here from the config.json timm's save_for_hf wrote:
    timm itself does not import beside torch 2.13, see README "Set up")."""
    from coatnet_deploy.models import resolve_model_source

    folder = unpacked()["folder"]
    hf = json.loads((folder / "config.json").read_text())
    model = resolve_model_source(weights=str(folder)).build()
    model.pretrained_cfg = {**hf["pretrained_cfg"], "architecture": hf["architecture"], "label_names": hf["label_names"]}
    return model.train()  # a training script's model is usually in train mode: export must not care (or change it)


# ----------------------------------------------------------------------------- the four ways in


def test_export_a_variant_by_name(tmp_path):
    res = coatnet_deploy.export("coatnet_tiny", target="onnxruntime", image_size=64, num_classes=10,
                                output=str(tmp_path / "b"), **FAST)
    assert res.passed and res.status == "PASSED" and res.bundle == tmp_path / "b"
    assert res.manifest["model"]["name"] == "coatnet_tiny" and res.manifest["model"]["provenance"]["name"] == "flag"
    assert res.report["parity"]["cosine_min"] > 0.99999
    assert "PASSED: coatnet_tiny -> onnxruntime/fp32" in repr(res)
    page = res._repr_html_()
    assert page.startswith("<iframe") and "srcdoc=" in page and "&lt;!DOCTYPE html&gt;" in page  # escaped whole page
    with res.load() as clf:
        top = clf.classify([REPO / "calibration" / "chelsea.jpg"], topk=3)[0]
    assert len(top) == 3


def test_export_a_checkpoint_path(tmp_path):
    """A timm train.py checkpoint path, as `--weights` takes it: the architecture and classes come with it."""
    res = coatnet_deploy.export(unpacked()["checkpoint"], target="onnxruntime", output=tmp_path / "b", **FAST)
    m = res.manifest["model"]
    assert res.passed and m["name"] == "coatnet_pico_rw_224" and m["weights_format"] == "timm train.py checkpoint"
    assert m["provenance"]["name"] == "checkpoint" and m["weights_sha256"] == META["sha256"]["model_best.pth.tar"]


def test_export_an_in_memory_timm_model(tmp_path):
    """A timm model object: preprocessing, labels and name from its pretrained_cfg; the bundle says timm's outputs."""
    model = timm_model_object()
    res = coatnet_deploy.export(model, target="onnxruntime", output=tmp_path / "b", **FAST)
    assert res.passed and model.training  # the caller's module was not put in eval mode
    m = res.manifest
    assert m["model"]["name"] == "coatnet_pico_rw_224" and m["model"]["timm_name"] == "coatnet_pico_rw_224"
    assert m["model"]["labels"] == META["labels"] and m["model"]["weights_format"] == "in-memory torch.nn.Module"
    prov = m["model"]["provenance"]
    assert {prov[k] for k in ("image_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "labels", "name")} == {"pretrained_cfg"}
    assert prov["num_classes"] == "module"
    assert m["preprocess"] == {"resize": 73, "crop": 64, "mean": list(IMAGENET["mean"]), "std": list(IMAGENET["std"]),
                               "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"}
    assert res.report["warnings"] == [] or not any("preprocessing" in w for w in res.report["warnings"])
    with coatnet_deploy.load(res.bundle) as clf:  # the device path against timm's own transform + model
        y = clf.logits(np.stack([clf.preprocess(p) for p in PHOTOS]))
    assert np.abs(y - EXPECTED["hf_logits"]).max() <= 1e-4


def test_explicit_arguments_override_the_pretrained_cfg(tmp_path):
    res = coatnet_deploy.export(timm_model_object(), target="onnxruntime", output=tmp_path / "b", image_size=64, crop_pct=0.8,
                                interpolation="bilinear", labels=["a", "b", "c"], name="my_net", **FAST)
    m = res.manifest
    assert m["model"]["name"] == "my_net" and m["model"]["labels"] == ["a", "b", "c"]
    assert (m["preprocess"]["resize"], m["preprocess"]["interpolation"]) == (80, "bilinear")
    prov = m["model"]["provenance"]
    assert (prov["image_size"], prov["crop_pct"], prov["mean"], prov["name"]) == ("argument", "argument", "pretrained_cfg", "argument")
    # a size the module cannot take is its own error, in one line
    with pytest.raises(UserError) as e:
        coatnet_deploy.export(timm_model_object(), image_size=96, output=tmp_path / "c")
    assert "the module failed on a (1, 3, 96, 96) batch" in _one_line(e) and not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------- a non-CoAtNet classifier


@pytest.fixture(scope="module")
def resnet_bundles(tmp_path_factory):
    """The small ResNet to every CPU target (fp32), and to INT8 on ONNX Runtime and OpenVINO."""
    root = tmp_path_factory.mktemp("resnet")
    model = small_resnet()
    out = {}
    for target, precision in (("onnx", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8"),
                              ("openvino", "int8")):
        res = coatnet_deploy.export(model, target=target, precision=precision, image_size=64, output=root / f"{target}-{precision}",
                                    calibration_samples=16, golden_random=2, bench_iterations=0, **IMAGENET)
        out[(target, precision)] = res
    return out


@pytest.mark.parametrize("case", [("onnx", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8"),
                                  ("openvino", "int8")], ids=lambda c: "-".join(c))
def test_a_non_coatnet_classifier_exports_to_each_cpu_target(resnet_bundles, case):
    res = resnet_bundles[case]
    assert res.passed, res.report["parity"]
    m = res.manifest["model"]
    assert m["name"] == "small_res_net" and m["module_class"].endswith("SmallResNet") and m["num_classes"] == 5
    # interpolation / crop_pct / crop_mode were not stated: timm's defaults, recorded and warned about
    assert {m["provenance"][k] for k in ("interpolation", "crop_pct", "crop_mode")} == {"default"}
    assert any("timm's defaults taken" in w for w in res.report["warnings"])
    proc = run_cli("parity", res.bundle, "--json")  # the device's self-test, torch-free, in a fresh process
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "PASSED"


def test_the_state_dict_hash_tells_weights_apart(resnet_bundles):
    from coatnet_deploy.models.module import state_dict_sha256

    recorded = resnet_bundles[("onnx", "fp32")].manifest["model"]["weights_sha256"]
    assert recorded == state_dict_sha256(small_resnet(0)) != state_dict_sha256(small_resnet(1))
    assert all(r.manifest["model"]["weights_sha256"] == recorded for r in resnet_bundles.values())


def test_predict_on_a_module_bundle_matches_the_module(resnet_bundles):
    from coatnet_deploy.preprocess import PreprocessConfig, preprocess_image

    res = resnet_bundles[("onnxruntime", "fp32")]
    photo = REPO / "calibration" / "chelsea.jpg"
    x = preprocess_image(photo, PreprocessConfig.from_dict(res.manifest["preprocess"]))
    with torch.inference_mode():
        want = small_resnet().eval()(torch.from_numpy(x[None])).numpy()
    proc = run_cli("predict", res.bundle, photo, "--topk", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["predictions"][0]["topk"][0]["index"] == int(want.argmax())


@pytest.fixture(scope="module")
def cpp_app() -> Path:
    proc = subprocess.run(["make", "cpp-app", f"VENV={sys.prefix}"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"`make cpp-app` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return REPO / "build" / "cpp" / "coatnet-classify"


@pytest.mark.parametrize("case", [("openvino", "fp32"), ("onnxruntime", "fp32"), ("openvino", "int8")], ids=lambda c: "-".join(c))
def test_the_cpp_device_app_runs_a_module_bundle(cpp_app, resnet_bundles, case):
    res = resnet_bundles[case]
    proc = subprocess.run([str(cpp_app), "selftest", str(res.bundle), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "PASSED"
    photo = REPO / "calibration" / "chelsea.jpg"
    proc = subprocess.run([str(cpp_app), "classify", str(res.bundle), str(photo), "--topk", "1", "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with coatnet_deploy.load(res.bundle) as clf:
        py_top = clf.classify([photo], topk=1)[0][0]
    assert json.dumps(json.loads(proc.stdout)).count(f'"index": {py_top.index}') >= 1


def test_bench_reference_refuses_a_module_bundle_in_one_line(resnet_bundles):
    proc = run_cli("bench", resnet_bundles[("onnxruntime", "fp32")].bundle, "--reference", "--batch", "1")
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "in-memory" in lines[0] and "cannot be rebuilt" in lines[0], lines


# ----------------------------------------------------------------------------- wrong arguments


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.endswith(".")
    return msg


def test_a_module_without_preprocessing_is_refused_never_guessed(tmp_path):
    with pytest.raises(UserError) as e:
        coatnet_deploy.export(small_resnet(), target="onnxruntime", output=tmp_path / "b")
    msg = _one_line(e)
    assert "image_size, mean, std" in msg and "never guesses" in msg and "export(model, image_size=" in msg
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("kwargs, words", [
    ({"target": "nope"}, ["unknown target 'nope'"]),
    ({"precision": "int4"}, ["precision", "int4"]),
    ({"bench_iteratons": 0}, ["export(): unknown key 'bench_iteratons'"]),
    ({"seed": "x"}, ["export(): key 'seed' must be"]),
], ids=["target", "precision", "unknown-key", "type"])
def test_wrong_arguments_give_the_clis_one_line_errors(tmp_path, kwargs, words):
    with pytest.raises(UserError) as e:
        coatnet_deploy.export("coatnet_tiny", output=tmp_path / "b", **kwargs)
    msg = _one_line(e)
    for w in words:
        assert w in msg, msg
    flag = {"target": ["--target", "nope"], "precision": ["--precision", "int4"]}.get(next(iter(kwargs)))
    if flag:  # the CLI says the same sentence
        proc = run_cli("export", "--model", "coatnet_tiny", *flag, "--output", tmp_path / "c")
        assert proc.returncode == 1 and stderr_lines(proc) == [f"error: {msg}"]


@pytest.mark.parametrize("model, kwargs, words", [
    (42, {}, ["model is a int", "torch.nn.Module"]),
    ("coatnet_tiny", {"mean": (0.5, 0.5, 0.5)}, ["got mean", "only an in-memory module"]),
    ("runs/w.safetensors", {"weights": "runs/other.safetensors"}, ["got both", "weights="]),
    ("not_a_variant", {}, ["unknown model 'not_a_variant'"]),
    ("missing/weights.safetensors", {}, ["not found"]),
], ids=["type", "mean-for-variant", "twice", "unknown-variant", "missing-path"])
def test_wrong_models_are_one_line(tmp_path, model, kwargs, words):
    with pytest.raises(UserError) as e:
        coatnet_deploy.export(model, output=tmp_path / "b", **kwargs)
    msg = _one_line(e)
    for w in words:
        assert w in msg, msg


class TupleOut(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x


class Broken(nn.Module):
    def forward(self, x):
        return x.view(7, -1)


@pytest.mark.parametrize("module, words", [(TupleOut(), ["maps a (1, 3, 64, 64) batch to tuple"]),
                                           (Broken(), ["failed on a (1, 3, 64, 64) batch", "RuntimeError"])],
                         ids=["tuple", "raises"])
def test_modules_that_are_not_classifiers_are_one_line(tmp_path, module, words):
    with pytest.raises(UserError) as e:
        coatnet_deploy.export(module, image_size=64, output=tmp_path / "b", **IMAGENET)
    msg = _one_line(e)
    for w in words:
        assert w in msg, msg


def test_import_stays_torch_free_and_the_api_is_typed():
    code = "import sys, coatnet_deploy; assert callable(coatnet_deploy.export) and callable(coatnet_deploy.load); " \
           "print('torch' in sys.modules, 'onnx' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
    assert (REPO / "coatnet_deploy" / "py.typed").is_file()
    import inspect

    sig = inspect.signature(coatnet_deploy.export)
    assert list(sig.parameters)[:4] == ["model", "target", "precision", "calibration"]
    assert sig.return_annotation == "ExportResult"


USER_SCRIPT = '''
import coatnet_deploy
from coatnet_deploy import UserError

res = coatnet_deploy.export("coatnet_tiny", target="onnxruntime", precision="int8", calibration="imgs/")
report_path = res.bundle / "report.json"
ok: bool = res.passed
clf = coatnet_deploy.load(res.bundle, threads=2)
label: str = clf.classify(["a.jpg"], topk=3)[0][0].label
diff = coatnet_deploy.compare_bundles("released", res.bundle, max_drop=0.5)
within: bool = diff.passed
try:
    coatnet_deploy.load(res.bundle)
except UserError as e:
    code: int = e.exit_code
'''


def test_a_type_checker_reads_the_api(tmp_path):
    """py.typed: mypy follows the package's annotations in a user's script, and catches a misuse of them."""
    pytest.importorskip("mypy", reason="mypy is a dev dependency")
    good = tmp_path / "good.py"
    good.write_text(USER_SCRIPT)
    bad = tmp_path / "bad.py"
    bad.write_text(USER_SCRIPT + "wrong: int = res.bundle\nclf.classify(3)\n")
    cmd = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent", "--no-incremental",
           "--cache-dir", str(tmp_path / "cache")]
    env = {**__import__("os").environ, "MYPYPATH": str(REPO)}
    proc = subprocess.run([*cmd, str(good)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout
    proc = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1 and 'expression has type "Path", variable has type "int"' in proc.stdout, proc.stdout
    assert "classify" in proc.stdout and "Sequence" in proc.stdout, proc.stdout
