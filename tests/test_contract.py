"""The contract itself: buf lint (STANDARD + COMMENTS) and format are clean, and the checked-in
generated Python matches the .proto files (no drift)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean(repo_root: Path) -> None:
    result = _run([str(BIN / "buf"), "lint"], repo_root / "proto")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_is_clean(repo_root: Path) -> None:
    result = _run([str(BIN / "buf"), "format", "-d", "--exit-code"], repo_root / "proto")
    assert result.returncode == 0, "run 'make format':\n" + result.stdout


def test_generated_code_matches_protos(repo_root: Path, tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(repo_root / "proto"))
                    for p in (repo_root / "proto").rglob("*.proto"))
    env_path = f"{BIN}:{Path('/usr/bin')}"
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--mypy_out={tmp_path}",
         f"--mypy_grpc_out={tmp_path}", *protos],
        cwd=repo_root / "proto", capture_output=True, text=True, env={"PATH": env_path},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    generated = tmp_path / "campaigns" / "v1"
    checked_in = repo_root / "clients" / "python" / "campaigns" / "v1"
    names = sorted(p.name for p in generated.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(generated, checked_in, names, shallow=False)
    assert not mismatch and not errors, f"run 'make generate': stale {mismatch + errors}"
