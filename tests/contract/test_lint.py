"""The code itself: ruff and mypy are clean, so a style or type regression fails CI too.
Run once per `make test` (on the SQLite pass): it does not depend on the database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    os.environ.get("TEST_DATABASE", "sqlite") != "sqlite", reason="checked on the SQLite pass"
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean(repo_root: Path) -> None:
    paths = ["server", "jobs", "scripts", "tests", "bench", "clients/python/campaign_client"]
    result = _run([str(BIN / "ruff"), "check", *paths], repo_root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean(repo_root: Path) -> None:
    result = _run([str(BIN / "mypy")], repo_root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean(repo_root: Path) -> None:
    paths = ["server", "jobs", "scripts", "tests", "bench", "clients/python/campaign_client"]
    result = _run([str(BIN / "ruff"), "format", "--check", *paths], repo_root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept(repo_root: Path) -> None:
    """The layering rules of README "Layout" (contracts in pyproject.toml, none ignored)."""
    result = _run([str(BIN / "lint-imports"), "--no-cache"], repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
