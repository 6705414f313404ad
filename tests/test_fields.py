"""The one key/type validator (coatnet_deploy.fields) that the export config, the matrix config and the
benchmark settings share: each rule, nested section names, and that export and matrix say the same thing."""

from __future__ import annotations

import pytest

from coatnet_deploy.errors import UserError
from coatnet_deploy.fields import Field, check_fields, type_name

TABLE = {
    "name": ((str,), "a plain (types, help) entry"),
    "count": Field((int,), "at least 1", minimum=1),
    "size": Field((int, type(None)), "non-negative or null", minimum=0),
    "mode": Field((str,), "a choice", choices=("fast", "slow")),
    "colors": Field((list,), "items from a set", items=("red", "blue"), nonempty=True),
    "ratio": ((float, int), "a number"),
    "flag": ((bool,), "true/false"),
    "sub": Field((dict,), "a nested section", section={"depth": Field((int,), "", minimum=0), "label": ((str,), "")}),
    "even": Field((int,), "custom check", check=lambda v, source, key: _even(v, source, key)),
}


def _even(v, source, key):
    if v % 2:
        raise UserError(f"{source}: key '{key}' is odd", None, "pass an even number")


def refuses(values, *needles):
    with pytest.raises(UserError) as e:
        check_fields(values, TABLE, "f.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("f.yaml: ")
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_valid_values_pass_unchanged():
    values = {"name": "x", "count": 1, "size": None, "mode": "slow", "colors": ["red"], "ratio": 2, "flag": False,
              "sub": {"depth": 0, "label": "y"}, "even": 4}
    assert check_fields(values, TABLE, "f.yaml") is values


def test_each_rule_refuses_with_its_message():
    refuses({"nmae": "x"}, "unknown key 'nmae'", "valid keys: name, count")
    refuses({"co-unt": 1}, "unknown key 'co-unt'", "did you mean 'count'?")
    refuses({"name": 3}, "key 'name' must be string: got 3. Fix the value.")
    refuses({"count": True}, "key 'count' must be integer: got True")  # bool is an int subclass, still refused
    refuses({"ratio": "1"}, "key 'ratio' must be number")
    refuses({"flag": 1}, "key 'flag' must be true/false")
    refuses({"count": 0}, "key 'count' is 0: it must be at least 1")
    refuses({"size": -1}, "key 'size' is -1: it cannot be negative")
    refuses({"mode": "medium"}, "key 'mode' is 'medium': valid values: fast, slow")
    refuses({"colors": "red"}, "key 'colors' must be a list")
    refuses({"colors": ["red", "green"]}, "unknown color 'green'", "valid colors: red, blue")
    refuses({"colors": []}, "'colors' is empty", "List at least one of red, blue")
    refuses({"even": 3}, "key 'even' is odd")


def test_nested_sections_name_the_full_key():
    refuses({"sub": {"depht": 1}}, "unknown key 'sub.depht'", "did you mean 'sub.depth'?")
    refuses({"sub": {"depth": -2}}, "key 'sub.depth' is -2: it cannot be negative")
    refuses({"sub": {"label": 1}}, "key 'sub.label' must be string")
    refuses({"sub": [1]}, "key 'sub' must be a mapping")


def test_type_names():
    assert type_name((int, type(None))) == "integer or null"
    assert type_name((float, int)) == "number or integer"
    assert type_name((dict,)) == "a mapping" and type_name((list,)) == "a list"


def test_export_and_matrix_configs_share_the_messages():
    """The same mistake in an export config and in a matrix config's `export:` section reads the same."""
    from coatnet_deploy.bench.matrix import make_matrix_config
    from coatnet_deploy.config import make_config

    for bad, needle in (({"opset": "seventeen"}, "key 'opset' must be integer: got 'seventeen'"),
                        ({"imagesize": 64}, "unknown key 'imagesize': did you mean 'image_size'?"),
                        ({"golden_images": -1}, "key 'golden_images' is -1: it cannot be negative"),
                        ({"reference": "gpu"}, "key 'reference' is 'gpu': valid values: auto, cpu, cuda"),
                        ({"tensorrt": {"workspace": 1}}, "unknown key 'tensorrt.workspace'"),
                        ({"gates": {"cosine": 0.9}}, "unknown gate 'cosine'"),
                        ({"batch": "8:1:1"}, "bad batch range '8:1:1'")):
        with pytest.raises(UserError, match=needle) as export_err:
            make_config(None, bad)
        with pytest.raises(UserError, match=needle) as matrix_err:
            make_matrix_config(None, {"export": bad})
        assert str(matrix_err.value).replace("command line (export): ", "command line: ") == str(export_err.value)


def test_bench_config_is_checked_by_the_same_table():
    from coatnet_deploy.bench import BenchConfig

    with pytest.raises(UserError, match="benchmark settings: key 'async_batches' is 0: it must be at least 1"):
        BenchConfig(async_batches=0)
    with pytest.raises(UserError, match="benchmark settings: key 'min_iters' must be integer: got 'ten'"):
        BenchConfig(min_iters="ten")
