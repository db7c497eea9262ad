"""The test suite: a real Redis, a real database (SQLite file or PostgreSQL, from TEST_DATABASE)
and a real gRPC server on 127.0.0.1, reached over a real channel; workers, the tracking app and
fake providers as real processes and sockets. The fixtures live in the `tests.fixtures` plugin
(one definition each), the plain helpers in `tests.support`.

Layout: the folders follow the source tree, so the tests of a module are where you look.

    unit/       the pure modules (server/core, the pushdown analysis, jobs/sending's backoff
                and MIME, server/delivery's links and tokens, the SMTP wire) and the layout
                rules: no server, no database, a couple of seconds in all
    store/      server/store on its own (schema migrations)
    campaigns/  server/campaigns through the RPCs: CRUD, lists, references, transitions,
                updates, idempotency, stats and watch
    audience/   server/audience: editions, users, segments and the segment engine
    content/    server/content: email messages and previews
    delivery/   server/delivery with jobs end to end: a real worker sending email and SMS,
                delivery events, tracking over HTTP, suppression, two servers and three
                workers at once
    jobs/       jobs/pipeline and jobs/sending on their own: the hand-off to RQ, freezing a
                segment, the circuit breaker and the rate limit on a real Redis
    faults/     fault injection across the stack: workers killed, Redis and the database
                lost, providers misbehaving
    rpc/        server/rpc and server/security as a caller sees them: smoke, TLS and refusals
                at start-up, tenancy over every RPC, input limits, health and reflection, the
                fuzzer over every RPC
    contract/   what outsiders hold us to: the .proto contract and generated code, lint, the
                README's grpcurl recipes, the Python client and campaignctl

Tests are sorted by what they are about rather than by how they run: how they run is what
the markers say. `slow` (starts a worker or other processes, or takes several seconds) and
`fault` (injects a failure) are set per module or per test; `make test-quick` runs
`-m "not slow and not fault"`, about a minute on two cores.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures"]

# Run first, see below.
FUZZ_TESTS = "tests/rpc/test_fuzz_rpcs.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fuzz tests checksum whole tables around every rejected call: run them first, while
    the test database is small (xdist hands tests out in this order)."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith(FUZZ_TESTS) else 1)
