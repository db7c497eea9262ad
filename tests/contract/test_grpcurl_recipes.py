"""The README's grpcurl recipes, run as written with the real grpcurl binary against the test
server and a real `python -m jobs` worker (so the campaign sent now is sent and its watch ends).

The recipes are written for a fresh database, where the n-th edition, segment, user, email
message and campaign get id n. Here the database is shared with other tests, so each id in a
request is replaced by the id of the n-th such thing the recipes created, the organization by
this test's own, and each request_id made unique. Nothing else is changed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool

from campaigns.v1 import audience_service_pb2 as apb
from server.app import SERVICES

README_ADDRESS = "127.0.0.1:50051"
DATA = re.compile(r"-d '([^']*)'")
# Request fields holding the id of something the recipes create, by the kind of thing.
REFERENCES = {
    "edition_id": "edition",
    "segment_id": "segment",
    "user_id": "user",
    "email_message_id": "email_message",
    "campaign_id": "campaign",
}
CREATES = {
    "CreateEdition": "edition",
    "CreateSegment": "segment",
    "CreateEmailMessage": "email_message",
    "CreateCampaign": "campaign",
}


def recipe_block(readme: str) -> list[str]:
    section = readme.split("## grpcurl recipes", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def kind_of_id(method: str) -> str:
    """What the `id` of a request to `method` names, e.g. GetEmailMessage -> email_message."""
    for word, kind in (
        ("EmailMessage", "email_message"),
        ("Edition", "edition"),
        ("Segment", "segment"),
        ("User", "user"),
        ("Campaign", "campaign"),
    ):
        if word in method:
            return kind
    raise AssertionError(f"which id does {method} take?")


class Ids:
    """The ids the recipes created, in order, and the rewriting of a request to use them."""

    def __init__(self, org_id: int) -> None:
        self.org_id = org_id
        self.made: dict[str, list[int]] = {kind: [] for kind in REFERENCES.values()}

    def real(self, kind: str, number: int) -> int:
        made = self.made[kind]
        assert 0 < number <= len(made), f"the recipes use {kind} {number} before creating it"
        return made[number - 1]

    def rewrite(self, value: Any, method: str) -> Any:
        if isinstance(value, list):
            return [self.rewrite(item, method) for item in value]
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            if key == "organization_id":
                item = self.org_id
            elif key in REFERENCES or (key == "id" and isinstance(item, int)):
                item = self.real(REFERENCES.get(key) or kind_of_id(method), int(item))
            elif key == "request_id":
                item = f"{item}-{self.org_id}"
            out[key] = self.rewrite(item, method)
        return out


def run_recipe(line: str, prelude: list[str], repo_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", "\n".join([*prelude, line])],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def learn(ids: Ids, method: str, output: str, audience: Any) -> None:
    """Record the ids of what `method` just created."""
    if method in CREATES:
        kind = CREATES[method]
        ids.made[kind].append(int(json.loads(output)[kind]["id"]))
    elif method == "ImportUsers":
        listed = audience.ListUsers(apb.ListUsersRequest(organization_id=ids.org_id))
        known = set(ids.made["user"])
        ids.made["user"] += [u.id for u in listed.results if u.id not in known]


def test_every_rpc_has_a_recipe(repo_root):
    block = "\n".join(recipe_block((repo_root / "README.md").read_text()))
    pool = descriptor_pool.Default()
    missing = [
        f"{name}/{method.name}"
        for name in SERVICES
        for method in pool.FindServiceByName(name).methods
        if f" {name}/{method.name}" not in block
    ]
    assert not missing, f"README has no grpcurl recipe for {missing}"


@pytest.mark.slow
def test_the_recipes_work_as_written(worker, address, audience, org_id, repo_root):
    lines = [
        line.replace(README_ADDRESS, address)
        for line in recipe_block((repo_root / "README.md").read_text())
    ]
    prelude = [line for line in lines if re.match(r"^[A-Z]+=", line)]
    ids = Ids(org_id)
    watched: list[str] = []
    for line in lines:
        if line in prelude:
            continue
        method = shlex.split(line)[-1].rsplit("/", 1)[-1]
        found = DATA.search(line)
        if found:
            request = json.dumps(ids.rewrite(json.loads(found.group(1)), method))
            assert "'" not in request
            line = line[: found.start(1)] + request + line[found.end(1) :]
        result = run_recipe(line, prelude, repo_root)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        learn(ids, method, result.stdout, audience)
        if method == "WatchCampaignStats":
            watched.append(result.stdout)
    # Both watches ended with a final snapshot: of the cancelled campaign, of the sent one.
    cancelled, sent = watched
    assert '"final": true' in cancelled and "CAMPAIGN_STATUS_CANCELLED" in cancelled
    assert '"final": true' in sent and "CAMPAIGN_STATUS_SENT" in sent, sent
