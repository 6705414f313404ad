"""`coatnet-deploy models` and `models --json`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from coatnet_deploy.cli import cli
import coatnet_deploy.cli.models_cmd  # noqa: F401  (registers the command)
from coatnet_deploy.models import list_models

from _golden import FIXTURES


def test_models_json():
    result = CliRunner().invoke(cli, ["models", "--json"], standalone_mode=False)
    assert result.exit_code == 0, result.output
    assert result.return_value == 0
    rows = json.loads(result.stdout)["models"]
    assert [r["name"] for r in rows] == list_models()
    timm = json.loads((FIXTURES / "timm_param_counts.json").read_text())["params"]
    by = {r["name"]: r for r in rows}
    for name, count in timm.items():
        assert by[name]["timm_name"] == name
        assert abs(by[name]["params_m"] * 1e6 - count) <= 0.02 * count
    assert by["coatnet_4_224"]["gmacs"] > by["coatnet_0_224"]["gmacs"] > 1
    assert by["coatnet_tiny"]["image_size"] == 64 and by["coatnet_seed"]["timm_name"] is None
    assert set(by["coatnet_0_rw_224"]["preprocess"]) == {"resize", "crop", "crop_pct", "interpolation", "mean",
                                                          "std"}


def test_models_table():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "params", "(M)"]
    assert any(line.startswith("coatnet_4_224") and "275.43" in line for line in lines)
