"""Bearer tokens and the organizations each may act for, read from a JSON file.

    {"tokens": [
        {"name": "ticketing-web", "sha256": "<hex digest of the token>", "organizations": [1, 2]},
        {"name": "operations", "sha256": "<hex digest>", "organizations": "*"}
    ]}

Only digests are stored, so the file is not a secret worth stealing;
`python -m server.security.bearer_tokens new NAME ORG...` makes a random token and prints it
with the entry to paste.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from server.core.errors import Unauthenticated


class AuthConfigError(Exception):
    """The tokens file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class Grant:
    """What one token may do: its name (for logs) and its organizations (None: all)."""

    name: str
    organizations: frozenset[int] | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRegistry:
    """Looks a presented token up by its digest."""

    def __init__(self, grants: dict[str, Grant]) -> None:
        self._by_digest = grants

    def __len__(self) -> int:
        return len(self._by_digest)

    def grant_for(self, token: str) -> Grant:
        grant = self._by_digest.get(digest(token))
        if grant is None:
            raise Unauthenticated("the bearer token is not valid", reason="INVALID_TOKEN")
        return grant

    @classmethod
    def load(cls, path: str) -> TokenRegistry:
        try:
            data = json.loads(Path(path).read_text())
            return cls(dict(_entry(item) for item in data["tokens"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuthConfigError(f"cannot read tokens from {path}: {exc}") from exc


def _entry(item: dict[str, object]) -> tuple[str, Grant]:
    orgs = item["organizations"]
    if orgs == "*":
        scope = None
    elif isinstance(orgs, list) and all(isinstance(o, int) and o > 0 for o in orgs):
        scope = frozenset(orgs)
    else:
        raise ValueError(f'organizations of {item.get("name")!r} must be "*" or positive ids')
    sha = str(item["sha256"]).lower()
    if len(sha) != 64:
        raise ValueError(f"sha256 of {item.get('name')!r} is not a SHA-256 hex digest")
    return sha, Grant(name=str(item["name"]), organizations=scope)


def main(argv: list[str]) -> None:
    """`python -m server.security.bearer_tokens new NAME ORG... | '*'`: a new token and its
    file entry."""
    if len(argv) < 3 or argv[0] != "new":
        sys.exit(
            "usage: python -m server.security.bearer_tokens new NAME ORGANIZATION_ID... (or '*')"
        )
    token = secrets.token_urlsafe(32)
    orgs: object = "*" if argv[2:] == ["*"] else [int(o) for o in argv[2:]]
    print(f"token (give it to the caller, it is not stored): {token}")
    print(json.dumps({"name": argv[1], "sha256": digest(token), "organizations": orgs}))


if __name__ == "__main__":
    main(sys.argv[1:])
