"""Build hook for what pyproject.toml cannot say: the packages plus the shipped data folders.

The repository keeps the INT8 calibration photos and the export configs in the top-level folders
``calibration/`` and ``export_configs/``: the one copy. The build maps each into the package as
``coatnet_deploy/_data/<folder>`` (``DATA``), so the wheel and the sdist carry them and an installed
package finds them with importlib.resources (``coatnet_deploy.shipped``). Which files go is set in
pyproject.toml (``[tool.setuptools.package-data]``); everything else about the project is there too.
"""

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

# package name -> folder in the checkout; coatnet_deploy.shipped.DATA_FOLDERS names the same folders
DATA = {
    "coatnet_deploy._data.calibration": "calibration",
    "coatnet_deploy._data.export_configs": "export_configs",
}


class BuildPyDataOnly(build_py):
    """build_py that takes no modules from the data folders.

    calibration/ holds the script that made the photos (make_calibration_set.py, a one-time tool
    that needs scikit-image); it is part of the repository, not of the installed package.
    """

    def find_package_modules(self, package, package_dir):
        if package in DATA:
            return []
        return super().find_package_modules(package, package_dir)


setup(
    # Namespace discovery: data-only folders such as coatnet_deploy/report/templates/ count as
    # packages, so their files are package data rather than a deprecated implicit inclusion.
    packages=find_namespace_packages(include=["coatnet_deploy", "coatnet_deploy.*"],
                                     exclude=["*.__pycache__", "coatnet_deploy._data*"]) + list(DATA),
    package_dir=DATA,
    cmdclass={"build_py": BuildPyDataOnly},
)
