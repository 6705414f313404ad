"""The package as pip installs it: what the sdist and wheel carry, their metadata, and the lookups
of the shipped data (calibration photos, export configs) from the wheel's layout and from this
editable checkout.

The sdist and the wheel are built once per run (``python -m build --no-isolation``, the wheel from
the sdist, as pip does; a few seconds). Installing the wheel into a fresh venv and running the main
job is `.ci/wheel-smoke.sh` (minutes: pip installs every dependency).
"""

from __future__ import annotations

import email
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata, resources
from pathlib import Path

import pytest

from bundle_helpers import REPO, cli_in_process
from coatnet_deploy.errors import UserError
from coatnet_deploy.shipped import DATA_FOLDERS, calibration_dir, resolve_config, shipped_configs, shipped_dir

PYPROJECT_VERSION = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
# The one file in a data folder that is not data: the script that made the photos.
NOT_DATA = {"calibration/make_calibration_set.py"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def _checkout_files(folder: str) -> list[str]:
    """Files under a folder of the checkout, as 'folder/rel/path', skipping caches and bytecode."""
    root = REPO / folder
    return sorted(str(p.relative_to(REPO)) for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _fresh_clone_of_the_worktree(dst: Path) -> Path:
    """The checkout's files as a fresh clone would have them, plus files not yet committed.

    Built in place, setuptools would also take every file listed in a leftover
    coatnet_deploy.egg-info/SOURCES.txt, hiding a package-data rule that no longer matches.
    """
    import shutil

    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the worktree is gone from the clone too
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    src = _fresh_clone_of_the_worktree(tmp_path_factory.mktemp("src"))
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, ("python -m build failed (is the venv from `make install`, with the dev extras?)",
                                  proc.stdout[-3000:], proc.stderr[-3000:])
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "dir": out}


@pytest.fixture(scope="module")
def wheel_names(dist) -> set[str]:
    with zipfile.ZipFile(dist["wheel"]) as z:
        return set(z.namelist())


@pytest.fixture(scope="module")
def unpacked_wheel(dist, tmp_path_factory) -> Path:
    """The wheel's files as pip lays them into site-packages (a wheel is a zip of that tree)."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(dist["wheel"]) as z:
        z.extractall(site)
    return site


# -- what the wheel and the sdist carry ------------------------------------------------------------

def test_wheel_carries_every_module_and_package_file(wheel_names):
    """Every file of coatnet_deploy/ (modules, templates, any non-Python file it reads) is in the wheel."""
    package = _checkout_files("coatnet_deploy")
    assert package and "coatnet_deploy/shipped.py" in package
    missing = [f for f in package if f not in wheel_names]
    assert not missing, f"files of coatnet_deploy/ left out of the wheel: {missing} (see [tool.setuptools.package-data])"
    # When the report templates exist they are among these files; so is any later data file.
    assert [f for f in package if not f.endswith(".py")] == sorted(f for f in wheel_names if f.startswith("coatnet_deploy/")
                                                                   and not f.startswith("coatnet_deploy/_data/")
                                                                   and not f.endswith(".py"))


@pytest.mark.parametrize("folder", DATA_FOLDERS)
def test_wheel_carries_the_data_folders(wheel_names, folder):
    data = [f for f in _checkout_files(folder) if f not in NOT_DATA]
    in_wheel = sorted(f[len("coatnet_deploy/_data/"):] for f in wheel_names if f.startswith(f"coatnet_deploy/_data/{folder}/"))
    assert in_wheel == data


def test_wheel_carries_the_photos_with_their_licences(wheel_names):
    photos = [f for f in wheel_names if f.startswith("coatnet_deploy/_data/calibration/") and Path(f).suffix in IMAGE_SUFFIXES]
    assert len(photos) >= 24
    sources = (REPO / "calibration" / "SOURCES.md").read_text(encoding="utf-8")
    assert all(Path(p).name in sources for p in photos)
    assert "coatnet_deploy/_data/calibration/SOURCES.md" in wheel_names


def test_wheel_holds_no_tests_fixtures_benchmarks_or_tools(wheel_names):
    tops = {n.split("/")[0] for n in wheel_names}
    assert tops == {"coatnet_deploy", f"coatnet_deploy-{PYPROJECT_VERSION}.dist-info"}, tops
    for word in ("tests", "test_", "fixtures", "benchmarks", "conftest", "examples", "make_calibration_set"):
        assert not [n for n in wheel_names if word in n], word
    assert not [n for n in wheel_names if "__pycache__" in n or n.endswith(".pyc")]


def test_sdist_builds_the_same_wheel_contents(dist):
    """The sdist has the data folders at the top (setup.py maps them again) and no test suite."""
    with tarfile.open(dist["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for f in ("pyproject.toml", "setup.py", "LICENSE", "README.md", "calibration/SOURCES.md",
              "export_configs/openvino-int8.yaml", "export_configs/matrix.yaml", "coatnet_deploy/shipped.py"):
        assert f in names, f
    assert {f for f in _checkout_files("calibration") if f not in NOT_DATA} <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]


# -- metadata ---------------------------------------------------------------------------------------

def test_wheel_metadata_version_licence_entry_point(dist, wheel_names):
    info = f"coatnet_deploy-{PYPROJECT_VERSION}.dist-info"
    with zipfile.ZipFile(dist["wheel"]) as z:
        meta = email.message_from_bytes(z.read(f"{info}/METADATA"))
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        licence = z.read(f"{info}/licenses/LICENSE").decode()
    assert meta["Name"] == "coatnet-deploy" and meta["Version"] == PYPROJECT_VERSION
    assert meta["License-Expression"] == "Apache-2.0" and meta["License"] is None
    assert set(meta.get_all("License-File")) == {"LICENSE", "calibration/SOURCES.md"}
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "torch==2.13.0" in meta.get_all("Requires-Dist")
    assert re.search(r"^coatnet-deploy = coatnet_deploy\.cli:main$", entry_points, re.M)
    assert f"{info}/licenses/calibration/SOURCES.md" in wheel_names


def test_twine_accepts_both(dist):
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, (dist["wheel"], dist["sdist"]))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_version_is_the_installed_metadata(capsys):
    import coatnet_deploy

    assert coatnet_deploy.__version__ == metadata.version("coatnet-deploy") == PYPROJECT_VERSION
    rc, out, _ = cli_in_process(capsys, "--version")
    assert rc == 0 and out.strip() == f"coatnet-deploy, version {PYPROJECT_VERSION}"


def test_version_of_a_never_installed_source_tree(tmp_path):
    """No metadata to read (python -S: no site-packages): the version pyproject.toml declares."""
    (tmp_path / "coatnet_deploy").mkdir()
    for name in ("__init__.py", "api.py", "errors.py"):  # what `import coatnet_deploy` reads (the public API's surface)
        (tmp_path / "coatnet_deploy" / name).write_bytes((REPO / "coatnet_deploy" / name).read_bytes())
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "coatnet-deploy"\nversion = "9.8.7"\n')
    proc = subprocess.run([sys.executable, "-S", "-c", "import coatnet_deploy; print(coatnet_deploy.__version__)"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "9.8.7", proc.stderr


# -- lookups from the wheel's layout ----------------------------------------------------------------

def _python_in(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run code with ``site`` first on sys.path, so its coatnet_deploy wins over this checkout's."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


LOOKUPS = """
import json, coatnet_deploy
from coatnet_deploy.calibration import default_calibration_dir
from coatnet_deploy.shipped import resolve_config, shipped_configs
print(json.dumps({"package": coatnet_deploy.__file__, "calibration": str(default_calibration_dir()),
                  "photos": len(list(default_calibration_dir().glob("*.jpg"))),
                  "openvino-int8": str(resolve_config("openvino-int8", "export")),
                  "matrix": str(resolve_config("matrix.yaml", "matrix")), "export": list(shipped_configs("export"))}))
"""


def test_installed_layout_finds_its_own_data(unpacked_wheel, tmp_path):
    proc = _python_in(unpacked_wheel, LOOKUPS, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    data = unpacked_wheel / "coatnet_deploy" / "_data"
    assert got["package"] == str(unpacked_wheel / "coatnet_deploy" / "__init__.py")
    assert got["calibration"] == str(data / "calibration") and got["photos"] >= 24
    assert got["openvino-int8"] == str(data / "export_configs" / "openvino-int8.yaml")
    assert got["matrix"] == str(data / "export_configs" / "matrix.yaml")
    assert got["export"] == sorted(p.stem for p in (REPO / "export_configs").glob("*.yaml") if not p.stem.startswith("matrix"))


def test_installed_package_without_its_photos_names_where_it_looked(unpacked_wheel, tmp_path):
    """A broken install (photos deleted): INT8 on the defaults says where it looked, in one line."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(unpacked_wheel, site)
    shutil.rmtree(site / "coatnet_deploy" / "_data" / "calibration")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "coatnet_deploy", "export", "--model", "coatnet_tiny", "--precision", "int8",
                           "--json", "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: no default calibration folder: looked for ")
    assert str(site / "coatnet_deploy" / "_data" / "calibration") in lines[0] and "--calibration" in lines[0]
    assert not (tmp_path / "out").exists()


# -- lookups in this editable checkout --------------------------------------------------------------

def test_editable_install_reads_the_checkout_folders():
    package = resources.files("coatnet_deploy")
    assert Path(str(package)) == REPO / "coatnet_deploy"
    assert not (REPO / "coatnet_deploy" / "_data").exists(), "the checkout keeps one copy: the top-level folders"
    assert calibration_dir() == REPO / "calibration"
    assert shipped_dir("export_configs") == REPO / "export_configs"
    assert shipped_configs("matrix") == {"matrix": REPO / "export_configs" / "matrix.yaml",
                                         "matrix-fleet": REPO / "export_configs" / "matrix-fleet.yaml"}
    assert "openvino-int8" in shipped_configs("export") and not any(n.startswith("matrix") for n in shipped_configs("export"))


@pytest.mark.parametrize("value", ["openvino-int8", "openvino-int8.yaml"])
def test_config_by_name(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config(value, "export") == REPO / "export_configs" / "openvino-int8.yaml"


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "openvino-int8").write_text("model: coatnet_tiny\n")
    assert resolve_config("openvino-int8", "export") == Path("openvino-int8")
    mine = tmp_path / "mine.yaml"
    mine.write_text("model: coatnet_tiny\n")
    assert resolve_config(str(mine), "export") == mine


@pytest.mark.parametrize("value, kind, listed", [
    ("openvino-int9", "export", "openvino-int8"),
    ("export_configs/openvino-int8.yaml", "export", "onnxruntime-fp32"),  # a path, not a name: it must exist
    ("matrix", "export", "openvino-int8"),        # the matrix config is not an export config
    ("openvino-int8", "matrix", "matrix"),
])
def test_unknown_config_lists_the_shipped_ones(value, kind, listed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        resolve_config(value, kind)
    msg = str(e.value)
    assert msg.startswith(f"config file '{value}' not found: ") and listed in msg
    assert str(REPO / "export_configs") in msg


def test_export_and_matrix_configs_load_by_name(tmp_path, monkeypatch):
    from coatnet_deploy.bench.matrix import make_matrix_config
    from coatnet_deploy.config import make_config

    monkeypatch.chdir(tmp_path)
    cfg = make_config(resolve_config("openvino-int8", "export"), {"model": "coatnet_tiny"})
    assert (cfg.target, cfg.precision, cfg.model) == ("openvino", "int8", "coatnet_tiny")
    mcfg = make_matrix_config(resolve_config("matrix", "matrix"), {"model": "coatnet_tiny"})
    assert mcfg.model == "coatnet_tiny" and "onnxruntime" in mcfg.targets


def test_matrix_command_takes_a_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, lines = cli_in_process(capsys, "matrix", "--config", "matrix-nope", "--json")
    assert rc == 1 and out == "" and len(lines) == 1
    assert "config file 'matrix-nope' not found" in lines[0] and "one of matrix-fleet, matrix (shipped in" in lines[0]


def test_targets_says_where_the_shipped_configs_are(capsys):
    rc, out, _ = cli_in_process(capsys, "targets")
    assert rc == 0
    assert f"in {REPO / 'export_configs'}" in out and "openvino-int8" in out
    assert f"default calibration photos: {REPO / 'calibration'}" in out
