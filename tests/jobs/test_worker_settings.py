"""A worker with settings that cannot work refuses to start, naming every problem in one
message, instead of crash-looping or failing each message with the same error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server.config import DeliverySettings


def _start(repo_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "TWILIO_"))}
    return subprocess.run(
        [sys.executable, "-m", "jobs"],
        cwd=repo_root,
        env={**base, "REDIS_URL": "redis://127.0.0.1:1/0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_with_unusable_provider_settings_refuses_to_start(repo_root: Path) -> None:
    done = _start(repo_root, EMAIL_PROVIDER="smtp", SMTP_SECURITY="ssl", SMS_PROVIDER="twilio")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for problem in (
        "EMAIL_PROVIDER=smtp needs SMTP_HOST",
        "SMTP_SECURITY must be none, starttls or tls, not 'ssl'",
        "SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM",
    ):
        assert problem in done.stderr, done.stderr


def test_a_setting_that_is_not_a_number_is_named(repo_root: Path) -> None:
    done = _start(repo_root, SMTP_PORT="twenty-five")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "SMTP_PORT='twenty-five' is not a whole number" in done.stderr, done.stderr


def test_workable_settings_have_no_problems() -> None:
    settings = DeliverySettings(email_provider="smtp", smtp_host="relay.example.com")
    assert settings.problems() == []
    assert DeliverySettings().problems() == []  # the embedded default: the outbox
