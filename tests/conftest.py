"""Fixtures shared across test modules (the bundles are built once per session by bundle_helpers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bundle_helpers, for test modules and fixtures alike

import bundle_helpers  # noqa: E402

OLD_BUNDLES = Path(__file__).resolve().parent / "fixtures" / "old_bundles"
SLOW_TIMEOUT_S = 3600  # full-size models: an INT8 export of coatnet_0 with its checks takes minutes


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The shared tiny onnxruntime fp32 bundle (read-only: copy it before changing it)."""
    return bundle_helpers.tiny_bundle()


@pytest.fixture(scope="session")
def openvino_bundle() -> Path:
    """A tiny openvino fp32 bundle made by a real export (read-only)."""
    return bundle_helpers.openvino_bundle_from()


@pytest.fixture(params=sorted(p.name for p in OLD_BUNDLES.iterdir() if (p / "manifest.json").is_file()))
def old_bundle(request, tmp_path) -> Path:
    """A copy of one bundle written by the code at 27c6d7f (schema 1)."""
    import shutil

    return Path(shutil.copytree(OLD_BUNDLES / request.param, tmp_path / request.param))
