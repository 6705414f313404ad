"""Property tests over the export config loader: whatever the file or mapping holds, the loader either
accepts it or raises UserError (one line for the CLI), and it never hangs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coatnet_deploy.config import FIELDS, ExportConfig, load_config_file, make_config, target_sections, validate
from coatnet_deploy.errors import UserError

SETTINGS = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.sampled_from(["gates", "tensorrt", "fp32", "int8", "cosine_min"]),
                 st.text(max_size=12), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=True))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["1:1:8", "8:1:1", "0", "x:y:z", "onnxruntime", "int8", "auto"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
                      max_leaves=12)
mappings = st.dictionaries(keys, values, max_size=8)


def _accepts_or_user_error(fn, *args):
    try:
        return fn(*args)
    except UserError as e:
        assert "\n" not in str(e)
        return None


@SETTINGS
@given(mappings)
def test_validate_random_mappings(m):
    _accepts_or_user_error(validate, m, "fuzz.yaml")


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), values, max_size=8))
def test_make_config_from_random_flags(m):
    cfg = _accepts_or_user_error(make_config, None, m)
    assert cfg is None or isinstance(cfg, ExportConfig)


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(target_sections()["tensorrt"]) + ["bogus"]), values, max_size=4),
       st.dictionaries(st.one_of(st.sampled_from(["fp32", "fp16", "int8", "cosine_min", "max_abs_err"]), st.integers()), values, max_size=4))
def test_nested_sections(trt, gates):
    _accepts_or_user_error(validate, {"tensorrt": trt, "gates": gates}, "fuzz.yaml")


_yaml_tokens = st.sampled_from([
    "model", "target", "precision", "gates", "tensorrt", "image_size", "batch", "opset", ":", ": ", "-", " ", "  ", "\n",
    "\t", "{", "}", "[", "]", ",", "'", '"', "&a", "*a", "<<", "!!python/object:os.system", "!!binary", "!!str", "? ",
    "|", ">", "#", "---", "...", "%YAML 1.2", "1e309", "-0", "0x1F", "~", "null", "true", "no", "1:1:8", "64", "0.5",
    "fp32:", "cosine_min", "\x00", "\ufeff", "é",
])
yaml_text = st.one_of(st.lists(_yaml_tokens, max_size=40).map("".join), st.text(max_size=200))


@SETTINGS
@given(yaml_text)
def test_load_config_file_random_text(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        _accepts_or_user_error(load_config_file, p)


@SETTINGS
@given(st.binary(max_size=200))
def test_load_config_file_random_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_bytes(data)
        _accepts_or_user_error(load_config_file, p)


def test_deep_nesting_does_not_crash(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("gates: " + "[" * 5000 + "]" * 5000 + "\n")
    _accepts_or_user_error(load_config_file, p)
    p.write_text("a: &a [*a]\n")  # a self-referencing alias
    _accepts_or_user_error(load_config_file, p)


def test_readme_config_table_is_the_fields_table():
    from coatnet_deploy.config import config_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert "\n".join(config_table()) in readme
