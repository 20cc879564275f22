"""The version lives in exporter.__version__; the copies that cannot read it must agree with it.

pyproject.toml reads it (setuptools' dynamic version). The Dockerfile's image label and the Helm
chart's version and appVersion have to be literals, so they are checked here.
"""

from __future__ import annotations

import re
import tomllib

import yaml

from exporter import __version__
from tests.conftest import REPO


def test_dockerfile_version_is_the_package_version() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    defaults = re.findall(r"^ARG VERSION=(\S*)$", text, re.MULTILINE)
    assert defaults == [__version__]
    assert 'org.opencontainers.image.version="${VERSION}"' in text


def test_chart_version_and_app_version_are_the_package_version() -> None:
    chart = yaml.safe_load((REPO / "deploy/helm/macie-exporter/Chart.yaml").read_text(
        encoding="utf-8"))
    assert (chart["version"], chart["appVersion"]) == (__version__, __version__)


def test_pyproject_reads_the_version_from_the_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "exporter.__version__"}
