"""campaignctl run as a subprocess against the real in-process server: output, exit codes and
messages a shell user relies on, local times in the edition's timezone, `watch` until the
campaign ends, and `import-users` of a small CSV."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from campaign_client.watch import Meter, duration
from campaign_client.when import TimeError, parse_when
from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from tests.support.helpers import DEFAULT_SEGMENTS, make_campaign

CANCELLED = campaign_pb2.CAMPAIGN_STATUS_CANCELLED


@pytest.fixture
def ctl(address: str, repo_root: Path):
    """Run campaignctl with the test server as CAMPAIGNS_TARGET; returns the CompletedProcess."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "CAMPAIGNS_TARGET": address, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "campaign_client.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=repo_root,
            env=environment,
        )

    return run


def get(campaigns: Any, campaign_id: int) -> campaign_pb2.Campaign:
    return campaigns.GetCampaign(cpb.GetCampaignRequest(id=campaign_id)).campaign


def test_create_get_and_list(ctl, edition):
    org, segment = str(edition.organization_id), str(DEFAULT_SEGMENTS[edition.id])
    made = ctl(
        "create",
        "--org",
        org,
        "--edition",
        str(edition.id),
        "--segment",
        segment,
        "--name",
        "Early birds",
        "--channel",
        "sms",
        "--sms-body",
        "Hi!",
        "-q",
    )
    assert made.returncode == 0, made.stderr
    campaign_id = made.stdout.strip()
    shown = ctl("get", campaign_id)
    assert shown.returncode == 0 and "Early birds" in shown.stdout and "draft" in shown.stdout
    listed = ctl("list", "--org", org)
    header, _rule, row, *_ = listed.stdout.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "CHANNEL",
        "STATUS",
        "SCHEDULED",
        "RECIPIENTS",
        "SENT",
        "FAILED",
    ]
    assert row.split()[:5] == [campaign_id, "Early", "birds", "sms", "draft"]
    assert "1 of 1 campaign" in listed.stdout
    as_json = json.loads(ctl("get", campaign_id, "--json").stdout)
    assert as_json["id"] == campaign_id and as_json["channel"] == "CHANNEL_SMS"


def test_exit_codes_and_messages(ctl, campaigns, edition):
    missing = ctl("get", "9000000000000")
    assert (missing.returncode, missing.stdout) == (3, "")
    assert missing.stderr.startswith("campaignctl: NOT_FOUND")
    invalid = ctl(
        "create",
        "--org",
        str(edition.organization_id),
        "--edition",
        str(edition.id),
        "--segment",
        "0",
        "--name",
        "",
        "--channel",
        "sms",
    )
    assert invalid.returncode == 4 and "name" in invalid.stderr
    campaign = make_campaign(campaigns, edition)
    assert ctl("cancel", str(campaign.id)).returncode == 0
    refused = ctl("send-now", str(campaign.id))
    assert refused.returncode == 4 and "FAILED_PRECONDITION" in refused.stderr
    assert ctl("get").returncode == 2  # no id
    assert ctl("frobnicate").returncode == 2
    assert ctl("list", "--channel", "fax").returncode == 2
    nothing = ctl("update", str(campaign.id))
    assert nothing.returncode == 2 and "nothing to update" in nothing.stderr


def test_unreachable_server_is_exit_5(ctl):
    result = ctl("list", "--target", "127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 5 and "UNAVAILABLE" in result.stderr


def test_target_comes_from_the_flag_before_the_environment(ctl, address):
    assert ctl("list", env={"CAMPAIGNS_TARGET": "127.0.0.1:1"}).returncode == 5
    assert ctl("--target", address, "list", env={"CAMPAIGNS_TARGET": "127.0.0.1:1"}).returncode == 0


def test_schedule_reads_local_times_in_the_editions_timezone(ctl, campaigns, edition):
    campaign = make_campaign(campaigns, edition)  # edition in Europe/Copenhagen
    result = ctl("schedule", str(campaign.id), "2030-06-01 10:00")
    assert result.returncode == 0, result.stderr
    assert "scheduled for 2030-06-01 10:00 CEST" in result.stdout
    utc = get(campaigns, campaign.id).scheduled_at.ToDatetime(dt.UTC)
    assert utc == dt.datetime(2030, 6, 1, 8, 0, tzinfo=dt.UTC)
    assert ctl("schedule", str(campaign.id), "2030-06-01T10:00:00-04:00").returncode == 0
    utc = get(campaigns, campaign.id).scheduled_at.ToDatetime(dt.UTC)
    assert utc == dt.datetime(2030, 6, 1, 14, 0, tzinfo=dt.UTC)
    skipped = ctl("schedule", str(campaign.id), "2030-03-31", "02:30")  # clocks move forward
    assert skipped.returncode == 2 and "does not exist" in skipped.stderr
    past = ctl("schedule", str(campaign.id), "2001-01-01 10:00")
    assert past.returncode == 4 and "scheduled_at" in past.stderr


def test_update_flags_become_the_field_mask(ctl, campaigns, edition):
    campaign = make_campaign(campaigns, edition, name="Before", sms_body="Old text")
    result = ctl("update", str(campaign.id), "--sms-body", "New text", "--etag", campaign.etag)
    assert result.returncode == 0, result.stderr
    after = get(campaigns, campaign.id)
    assert (after.name, after.sms_body) == ("Before", "New text")
    stale = ctl("update", str(campaign.id), "--name", "X", "--etag", campaign.etag)
    assert stale.returncode == 4 and "ABORTED" in stale.stderr


def test_send_now_stats_and_cancel(ctl, campaigns, edition):
    campaign = make_campaign(campaigns, edition)
    started = ctl("send-now", str(campaign.id))
    assert started.returncode == 0 and "calculating" in started.stdout
    stats = ctl("stats", str(campaign.id))
    assert stats.returncode == 0 and "recipients" in stats.stdout
    cancelled = ctl("cancel", str(campaign.id))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout


def test_watch_follows_until_the_campaign_ends(address, repo_root, campaigns, edition):
    campaign = make_campaign(campaigns, edition)
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "campaign_client.cli",
            "--target",
            address,
            "watch",
            str(campaign.id),
            "--plain",
        ],
        cwd=repo_root,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watcher.stderr is not None
        first = watcher.stderr.readline()  # the first snapshot: the stream is open
        assert " draft " in first and "0/0" in first
        campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=campaign.id))
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    assert " cancelled " in err.splitlines()[-1]
    assert out.startswith(f"campaign {campaign.id} cancelled: 0 sent, 0 failed")


def test_watch_of_a_finished_campaign_prints_its_final_figures(ctl, campaigns, edition):
    campaign = make_campaign(campaigns, edition)
    campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=campaign.id))
    result = ctl("watch", str(campaign.id), "--json")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["final"] is True
    assert ctl("watch", "9000000000000").returncode == 3


CSV = """external_id,email,phone,first_name,last_name,language,email_consent,sms_consent,tier,orders
a1,ann@example.com,+4520123456,Ann,Berg,da,yes,true,vip,3
a2,bo@example.com,,Bo,Dahl,en,1,0,regular,0
a3,not-an-email,,Cy,,,true,false,,
a4,dan@example.com,,Dan,,,maybe,false,,
a5,eve@example.com,,Eve,,,no,no,regular,007
"""


def test_import_users_from_csv(ctl, audience, edition, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # the server logs import progress: it must not fail to
    path = tmp_path / "users.csv"
    path.write_text(CSV)
    org = str(edition.organization_id)
    result = ctl("import-users", str(path), "--org", org, "--edition", str(edition.id))
    assert result.returncode == 0, result.stderr
    assert "imported users.csv: 3 created, 0 updated, 2 rejected" in result.stdout
    rows = {
        line.split()[0]: line
        for line in result.stdout.splitlines()[1:]
        if line.split() and line.split()[0].isdigit()
    }
    assert set(rows) == {"3", "4"}
    assert "email" in rows["3"] and "email_consent" in rows["4"]
    users = audience.ListUsers(apb.ListUsersRequest(organization_id=edition.organization_id))
    by_id = {u.external_id: u for u in users.results}
    assert by_id["a1"].sms_consent and by_id["a1"].phone == "+4520123456"
    assert dict(by_id["a1"].attributes) == {"tier": "vip", "orders": 3}
    assert by_id["a5"].attributes["orders"] == "007"  # a leading zero stays text
    strict = ctl("import-users", str(path), "--org", org, "--strict")
    assert strict.returncode == 4 and "0 created, 3 updated, 2 rejected" in strict.stdout
    missing = ctl("import-users", str(tmp_path / "nope.csv"), "--org", org)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "campaignctl"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "watch" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-06-01 10:00", dt.datetime(2030, 6, 1, 8, 0, tzinfo=dt.UTC)),
        ("2030-06-01T10:00", dt.datetime(2030, 6, 1, 8, 0, tzinfo=dt.UTC)),
        ("2030-12-01 10:00", dt.datetime(2030, 12, 1, 9, 0, tzinfo=dt.UTC)),
        ("2030-06-01T08:00:00Z", dt.datetime(2030, 6, 1, 8, 0, tzinfo=dt.UTC)),
        ("2030-10-27 02:30+01:00", dt.datetime(2030, 10, 27, 1, 30, tzinfo=dt.UTC)),
    ],
)
def test_parse_when(text, expected):
    assert parse_when(text, "Europe/Copenhagen") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2030-10-27 02:30", "happens twice"),
        ("2030-03-31 02:30", "does not exist"),
        ("tomorrow", "cannot read"),
    ],
)
def test_parse_when_refuses_what_it_cannot_be_sure_of(text, message):
    with pytest.raises(TimeError, match=message):
        parse_when(text, "Europe/Copenhagen")


def test_meter_rate_and_eta():
    started = time.monotonic()
    meter = Meter(started=started)
    meter.add(0, started)
    meter.add(100, started + 2)
    assert meter.rate() == 50.0 and meter.eta(100) == 2.0
    assert duration(3725) == "1:02:05" and duration(None) == "-:--"
