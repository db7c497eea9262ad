"""The segment engine against a real database (SQLite or PostgreSQL, from TEST_DATABASE):
syntax errors, what is pushed down to SQL, and soundness — the SQL pre-filter plus CEL must
match exactly the users plain CEL matches, over users with missing and odd-typed attributes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import cel
import pytest

from server.audience.segments import engine as se
from server.core.errors import InvalidArgument
from server.store.db import database, open_database
from server.store.migrations import migrate
from server.store.models import Edition, User, UserEdition, utcnow

EXAMPLE = 'user.attributes.ticket_type == "vip" && "early-bird" in user.attributes.tags'

# Each expression with what it must push down (soundness is checked for all of them).
EXPRESSIONS: list[tuple[str, list[str]]] = [
    (EXAMPLE, ['user.attributes.ticket_type == "vip"', '"early-bird" in user.attributes.tags']),
    ('"vip" == user.attributes.ticket_type || user.sms_consent', []),
    (
        '!(user.attributes.ticket_type == "vip") && user.email_consent',
        ["user.email_consent == true"],
    ),
    (
        'user.attributes.note == "a && b" && user.language == "en"',
        ['user.attributes.note == "a && b"', 'user.language == "en"'],
    ),
    (
        "user.attributes.note == 'say \"hi\" && \\'bye\\'' && !user.sms_unsubscribed",
        ['user.attributes.note == "say \\"hi\\" && \'bye\'"', "user.sms_unsubscribed == false"],
    ),
    (
        '(user.attributes.ticket_type == "vip" && user.email_consent == true)'
        " && (user.attributes.orders > 2 || user.attributes.flag)",
        ['user.attributes.ticket_type == "vip"', "user.email_consent == true"],
    ),
    (
        'user.attributes.profile.tier == "gold" && user.attributes.orders > 2',
        ['user.attributes.profile.tier == "gold"'],
    ),
    ("user.attributes.orders > 2", []),
    (
        "user.email_consent == false && 'early-bird' in user.attributes.tags",
        ["user.email_consent == false", '"early-bird" in user.attributes.tags'],
    ),
    (
        'user.attributes.flag && user.first_name == "Ana"'
        ' || user.attributes.profile.city == "Zürich"',
        [],
    ),
    ('user.attributes.ticket_type == "vip" ? user.email_consent : user.sms_consent', []),
    (
        'has(user.attributes.tags) && "early-bird" in user.attributes.tags'
        " && size(user.attributes.tags) > 1",
        ['"early-bird" in user.attributes.tags'],
    ),
    (
        'user.attributes.note == r"a && b" // && user.sms_consent\n && true == user.sms_consent',
        ['user.attributes.note == "a && b"', "user.sms_consent == true"],
    ),
    (
        'user.attributes.ticket_type == "vip" && user.email_consent'
        ' || "early-bird" in user.attributes.tags',
        [],
    ),
    (
        'user.attributes.emoji == "\\U0001F600" && user.attributes.flag == false'
        ' && user.attributes.profile.city == "Zürich"',
        [
            'user.attributes.emoji == "😀"',
            "user.attributes.flag == false",
            'user.attributes.profile.city == "Zürich"',
        ],
    ),
    (
        '"\\x76ip" == user.attributes.ticket_type && !user.attributes.flag',
        ['user.attributes.ticket_type == "vip"', "user.attributes.flag == false"],
    ),
    (
        'user.attributes.tags == "early-bird" && user.email == "ana@example.com"',
        ['user.attributes.tags == "early-bird"', 'user.email == "ana@example.com"'],
    ),
    (
        '!user.email_unsubscribed && user.attributes.ticket_type == """vip"""',
        ["user.email_unsubscribed == false", 'user.attributes.ticket_type == "vip"'],
    ),
    # These read the whole attribute map (or user), so CEL must get all of it.
    (
        'user.attributes.size() >= 6 && user.attributes.ticket_type == "vip"',
        ['user.attributes.ticket_type == "vip"'],
    ),
    ('"flag" in user.attributes && !has(user.attributes.orders) && user["language"] == "da"', []),
    (
        "user.attributes.exists(k, k == 'emoji') && size(user) == 12"
        " && [user].all(u, u.attributes.orders != 0)",
        [],
    ),
]

READS: list[tuple[str, set[str] | None, set[str] | None]] = [
    (EXAMPLE, {"attributes"}, {"ticket_type", "tags"}),
    (
        "has(user.attributes.profile.city) && user.email_consent",
        {"attributes", "email_consent"},
        {"profile"},
    ),
    ("user.attributes.size() > 2 && user.email.endsWith('x')", {"attributes", "email"}, None),
    ("size(user.attributes) > 2", {"attributes"}, None),
    ('user.attributes["tags"] == 1 && user.id > 3', {"attributes", "id"}, None),
    ("user.language == 'da' // user[0]", {"language"}, set()),
]
FULL_USER = [
    'user["email"] == ""',
    '"email" in user',
    "[1].all(user, user.x == 1)",
    "user.size() > 1",
    ".user.email == ''",
    "user.email() == 1",
]

ODD = [
    None,
    True,
    False,
    0,
    1,
    2.5,
    -3,
    "",
    "vip",
    "VIP",
    "vip ",
    "early-bird",
    [],
    {},
    ["vip"],
    {"vip": 1},
    2**70,
]
TICKETS = ["vip", "vip", "vip", "regular", "VIP", 1, ["vip"], {"vip": True}]
TAGS = [
    ["early-bird"],
    ["early-bird", "local"],
    ["local"],
    "early-bird",
    {"early-bird": 1},
    [["early-bird"]],
    ["early-bird", 1, None],
    [],
]
NOTES = ["a && b", "a && b", "say \"hi\" && 'bye'", "a &amp;& b", "A && B"]
PROFILES = [
    {"tier": "gold", "city": "Zürich"},
    {"tier": "gold"},
    {"tier": 1},
    {"city": "Zurich"},
    ["gold"],
    "gold",
    {"tier": {"gold": 1}},
]


@pytest.fixture(scope="module", autouse=True)
def db(database_url: str) -> Iterator[None]:
    if database.obj is None:  # the server fixture may have opened it already
        open_database(database_url)
    migrate()
    yield


def _pick(rnd: random.Random, pool: list[Any], odd: float = 0.15, missing: float = 0.15) -> Any:
    roll = rnd.random()
    if roll < missing:
        return _MISSING
    return rnd.choice(ODD) if roll < missing + odd else rnd.choice(pool)


_MISSING = object()


def _attributes(rnd: random.Random) -> dict[str, Any]:
    values = {
        "ticket_type": _pick(rnd, TICKETS),
        "tags": _pick(rnd, TAGS),
        "note": _pick(rnd, NOTES),
        "orders": _pick(rnd, [0, 1, 3, 5, 2.5, 3.0, "4"]),
        "flag": _pick(rnd, [True, False]),
        "profile": _pick(rnd, PROFILES),
        "emoji": _pick(rnd, ["😀", "😀", ":)"]),
    }
    return {key: value for key, value in values.items() if value is not _MISSING}


def _user(rnd: random.Random, index: int) -> dict[str, Any]:
    return {
        "external_id": f"u{index}",
        "email": rnd.choice(["ana@example.com", "bo@example.com", ""]),
        "phone": rnd.choice(["+4512345678", ""]),
        "first_name": rnd.choice(["Ana", "ana", "Bo"]),
        "last_name": "Jensen",
        "language": rnd.choice(["en", "da", "", "EN"]),
        "attributes": _attributes(rnd),
        "email_consent": rnd.random() < 0.6,
        "sms_consent": rnd.random() < 0.5,
        "email_unsubscribed": rnd.random() < 0.2,
        "sms_unsubscribed": rnd.random() < 0.2,
    }


def _insert(org: int, users: list[dict[str, Any]], **extra: Any) -> list[int]:
    with database.atomic():
        return [User.create(organization_id=org, **user, **extra).id for user in users]


def _context(user_id: int, user: dict[str, Any]) -> dict[str, Any]:
    return {"user": {"id": user_id, **user}}


def _plain_cel(expression: str, users: dict[int, dict[str, Any]]) -> set[int]:
    """The oracle: evaluate every user in CEL, no database, no pushdown."""
    program = cel.compile(expression)
    found = set()
    for user_id, user in users.items():
        try:
            if program.execute(_context(user_id, user)) is True:
                found.add(user_id)
        except Exception:
            pass
    return found


def _matched_ids(compiled: se.CompiledSegment, org: int, **kw: Any) -> list[int]:
    return [row.id for batch in se.iter_matches(compiled, org, **kw) for row in batch]


def test_syntax_error_carries_line_and_column():
    with pytest.raises(InvalidArgument) as info:
        se.compile_segment('user.attributes.ticket_type == "vip" &&\n  user.email ==')
    [violation] = info.value.violations
    assert violation.field == "expression"
    assert violation.description.startswith("line 2, column 16: Syntax error")
    message, line, column = se.parse_error("user.attributes.a ==\n  ")
    assert (line, column) == (2, 3) and "Syntax error" in message
    assert se.parse_error(EXAMPLE) is None
    # The parser echoes the input: a position-like string literal must not be mistaken for one.
    assert se.parse_error('"<input>:9:9: no" ==')[1:] == (1, 21)


def test_expression_length_is_limited():
    long = "true && " * 500 + "true"
    assert len(long) > se.MAX_EXPRESSION_LENGTH
    with pytest.raises(InvalidArgument) as info:
        se.compile_segment(long)
    assert "at most 4000 characters" in info.value.violations[0].description
    assert se.parse_error(long) == (info.value.violations[0].description, 1, 4001)


@pytest.mark.parametrize(("expression", "pushed"), EXPRESSIONS)
def test_pushdown_descriptions(expression: str, pushed: list[str]):
    compiled = se.compile_segment(expression)
    assert compiled.expression == expression
    assert compiled.pushed_down == pushed


@pytest.mark.parametrize(("expression", "fields", "keys"), READS)
def test_reads_only_what_the_expression_uses(
    expression: str, fields: set[str], keys: set[str] | None
):
    needs = se.compile_segment(expression).reads
    assert needs is not None
    assert (needs.fields, needs.attribute_keys) == (fields, keys)


@pytest.mark.parametrize("expression", FULL_USER)
def test_other_uses_of_user_read_everything(expression: str):
    assert se.compile_segment(expression).reads is None


def test_pre_filter_plus_cel_equals_plain_cel(org_id: int):
    rnd = random.Random(20_270_626)
    generated = [_user(rnd, i) for i in range(400)]
    users = dict(zip(_insert(org_id, generated), generated, strict=True))
    exact = []
    for expression, _ in EXPRESSIONS:
        compiled = se.compile_segment(expression)
        expected = _plain_cel(expression, users)
        assert expected, f"vacuous: nothing matches {expression!r}"
        assert set(_matched_ids(compiled, org_id, batch_size=37)) == expected, expression
        count, evaluated = se.count_matches(compiled, org_id)
        assert count == len(expected)
        if compiled.exact:  # SQL alone decided, and decided as CEL does
            exact.append(expression)
            assert evaluated == 0
            continue
        assert evaluated >= count
        if compiled.pushed_down:
            assert evaluated < len(users), f"nothing filtered in SQL for {expression!r}"
        else:
            assert evaluated == len(users)
    # The SQL-only path must be exercised by odd users too, not only by the simple cases.
    assert len(exact) >= 6, exact


def test_edition_restricts_to_members(org_id: int):
    edition = Edition.create(organization_id=org_id, name="2027", timezone="UTC")
    other = Edition.create(organization_id=org_id, name="2028", timezone="UTC")
    ids = _insert(org_id, [_simple(i) for i in range(6)])
    UserEdition.insert_many(
        [(ids[i], edition.id) for i in (0, 2, 4)] + [(ids[i], other.id) for i in (1, 2)],
        fields=[UserEdition.user, UserEdition.edition],
    ).execute()
    compiled = se.compile_segment(EXAMPLE)
    assert _matched_ids(compiled, org_id, edition_id=edition.id) == [ids[0], ids[2], ids[4]]
    assert _matched_ids(compiled, org_id, edition_id=other.id) == [ids[1], ids[2]]
    assert _matched_ids(compiled, org_id) == ids
    assert _matched_ids(compiled, org_id + 1) == []


def _simple(index: int, ticket: str = "vip") -> dict[str, Any]:
    return {
        "external_id": f"s{index}",
        "email": f"s{index}@example.com",
        "attributes": {"ticket_type": ticket, "tags": ["early-bird"]},
    }


def test_erased_users_are_excluded(org_id: int):
    kept = _insert(org_id, [_simple(0), _simple(1)])
    _insert(org_id, [_simple(2), _simple(3)], erased_at=utcnow())
    for expression in (EXAMPLE, "true"):
        assert _matched_ids(se.compile_segment(expression), org_id) == kept
    assert se.count_matches(se.compile_segment("true"), org_id) == (2, 0)  # exact: no CEL


def test_keyset_batches_cross_page_boundaries(org_id: int):
    tickets = ["vip" if i % 3 else "regular" for i in range(50)]
    ids = _insert(org_id, [_simple(i, t) for i, t in enumerate(tickets)])
    vip = [user_id for user_id, t in zip(ids, tickets, strict=True) if t == "vip"]
    pushed = se.compile_segment(EXAMPLE)
    not_pushed = se.compile_segment('user.attributes.ticket_type + "" == "vip"')
    assert not_pushed.pushed_down == []
    for compiled in (pushed, not_pushed):
        for size in (1, 4, 5, 33, 34, 1000):
            batches = list(se.iter_matches(compiled, org_id, batch_size=size))
            assert all(0 < len(batch) <= size for batch in batches)
            assert [row.id for batch in batches for row in batch] == vip
        assert se.count_matches(compiled, org_id, batch_size=7)[0] == len(vip)
    assert se.count_matches(pushed, org_id) == (len(vip), len(vip))
    assert se.count_matches(not_pushed, org_id) == (len(vip), len(ids))


def test_rows_and_sample(org_id: int):
    [user_id] = _insert(
        org_id,
        [
            {
                **_simple(0),
                "phone": "+4511",
                "first_name": "Ana",
                "email_consent": True,
                "sms_unsubscribed": True,
            }
        ],
    )
    _insert(org_id, [_simple(i) for i in range(1, 5)])
    rows = se.sample(se.compile_segment("user.email_consent || true"), org_id, n=3)
    assert len(rows) == 3 and rows[0].id == user_id
    first = rows[0]
    assert (first.external_id, first.phone, first.first_name) == ("s0", "+4511", "Ana")
    assert first.attributes == {"ticket_type": "vip", "tags": ["early-bird"]}
    assert (first.email_consent, first.sms_consent, first.sms_unsubscribed) == (True, False, True)
    assert type(first.email_consent) is bool
    assert se.sample(se.compile_segment("user.id == " + str(user_id)), org_id, n=0) == []
    assert [r.id for r in se.sample(se.compile_segment(f"user.id == {user_id}"), org_id)] == [
        user_id
    ]
