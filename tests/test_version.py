"""The version: from the git tags through setuptools-scm into the package metadata, and out through ``--version``."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Final

import pytest

import gateway
from gateway.cli import main

REPO: Final = Path(__file__).resolve().parent.parent


def test_version_option_prints_the_installed_packages_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    installed = importlib.metadata.version("bms-gateway")
    assert capsys.readouterr().out.strip() == f"bms-gateway {installed}"
    assert gateway.__version__ == installed  # the status document, the HA device and export-dbc say the same


def test_the_version_comes_from_the_git_tags_with_a_fallback_without_git() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"], "a version written by hand goes stale at the next tag"
    assert "version" in pyproject["project"]["dynamic"]
    assert any(req.startswith("setuptools-scm") for req in pyproject["build-system"]["requires"])
    # An unpacked archive has no .git: it must still build, and say it does not know its version.
    assert pyproject["tool"]["setuptools_scm"]["fallback_version"] == "0.0.0+unknown"
