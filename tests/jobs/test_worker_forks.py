"""A worker process holds no thread when RQ forks a job process (issue: a fork while a thread
holds a lock hangs the job), and the sweep, in its own process, kicks off each due campaign
once however often it runs.

The worker runs as production does, without PYTHONUNBUFFERED. Its hook before every fork
logs "forking with threads alive" naming any thread still alive; the first test shows the
hook does report a live thread, the second that a worker running many short jobs never does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from campaigns.v1 import campaign_pb2
from tests.fixtures.workers import RunningWorker
from tests.support.delivery import send_now, wait_final
from tests.support.invariants import email_campaign

SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
CAMPAIGNS = 12
pytestmark = pytest.mark.slow


def _events(worker: RunningWorker, message: str) -> list[dict[str, object]]:
    found = []
    for line in worker.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("msg") == message:
                found.append(event)
    return found


def test_the_fork_hook_reports_a_live_thread(repo_root: Path) -> None:
    """The check the next test relies on can fail: with a thread alive, a fork is reported."""
    script = textwrap.dedent(
        """
        import os, threading
        from jobs.__main__ import _no_thread_at_fork
        from server import logs
        logs.setup()
        os.register_at_fork(before=_no_thread_at_fork)
        stop = threading.Event()
        threading.Thread(target=stop.wait, name="lingering", daemon=True).start()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        stop.set()
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root, env=env, capture_output=True, timeout=60
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    assert "forking with threads alive" in output and "lingering" in output, output


@pytest.fixture(scope="module")
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "SWEEP_INTERVAL": "0.05"}


def test_a_worker_forks_its_jobs_with_no_thread_alive(
    worker, app, campaigns, audience, messages, org_id
):
    """Many short jobs (a kickoff and send jobs per campaign), with the sweep passing every
    50 ms: every job ran in a forked process and no fork found a thread alive."""
    started = []
    for _ in range(CAMPAIGNS):
        campaign = email_campaign(campaigns, audience, messages, org_id, 1, suppressed=0)
        send_now(campaigns, campaign.id)
        started.append(campaign.id)
    for campaign_id in started:
        done = wait_final(campaigns, campaign_id, worker)
        assert done.status == SENT, (done, worker.output())
    assert len(_events(worker, "send job done")) >= CAMPAIGNS, worker.output()
    assert _events(worker, "forking with threads alive") == [], worker.output()
    # The sweep ran beside the worker, in a process of its own.
    assert _events(worker, "sweep starting"), worker.output()
