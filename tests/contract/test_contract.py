"""The contract itself: buf lint (STANDARD + COMMENTS) and format are clean, the checked-in
generated Python matches the .proto files (no drift), and nothing breaks the released contract
(contract/campaigns-v1.binpb, see README "Releasing the contract")."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
RELEASED = Path("contract") / "campaigns-v1.binpb"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean(repo_root: Path) -> None:
    result = _run([str(BIN / "buf"), "lint"], repo_root / "proto")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_is_clean(repo_root: Path) -> None:
    result = _run([str(BIN / "buf"), "format", "-d", "--exit-code"], repo_root / "proto")
    assert result.returncode == 0, "run 'make format':\n" + result.stdout


def test_generated_code_matches_protos(repo_root: Path, tmp_path: Path) -> None:
    protos = sorted(
        str(p.relative_to(repo_root / "proto")) for p in (repo_root / "proto").rglob("*.proto")
    )
    env_path = f"{BIN}:{Path('/usr/bin')}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--mypy_grpc_out={tmp_path}",
            *protos,
        ],
        cwd=repo_root / "proto",
        capture_output=True,
        text=True,
        env={"PATH": env_path},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    generated = tmp_path / "campaigns" / "v1"
    checked_in = repo_root / "clients" / "python" / "campaigns" / "v1"
    names = sorted(p.name for p in generated.iterdir())
    _match, mismatch, errors = filecmp.cmpfiles(generated, checked_in, names, shallow=False)
    assert not mismatch and not errors, f"run 'make generate': stale {mismatch + errors}"


def test_no_breaking_change_against_the_released_contract(repo_root: Path) -> None:
    image = repo_root / RELEASED
    result = _run([str(BIN / "buf"), "breaking", "--against", str(image)], repo_root / "proto")
    assert result.returncode == 0, (
        "this change would break clients of the released contract:\n"
        + result.stdout
        + result.stderr
    )


def test_the_guard_catches_a_breaking_change(repo_root: Path, tmp_path: Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(repo_root / "proto", changed)
    campaign = changed / "campaigns" / "v1" / "campaign.proto"
    text = campaign.read_text()
    assert "  string sms_body = 8;" in text
    campaign.write_text(text.replace("  string sms_body = 8;", "  string sms_text = 8;"))
    result = _run([str(BIN / "buf"), "breaking", "--against", str(repo_root / RELEASED)], changed)
    assert result.returncode != 0 and "sms_body" in result.stdout, result.stdout + result.stderr
