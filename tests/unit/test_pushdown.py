"""The static analysis of segment expressions (`server.audience.segments.pushdown`), without a
database: the tokenizer, which top-level conjuncts become SQL clauses, when those clauses are
the whole expression (`exact`), and which user fields an expression reads. What the clauses
select in SQL is tested on both databases in tests/audience/test_segment_engine.py."""

from __future__ import annotations

import pytest

from server.audience.segments.pushdown import Clause, Reads, clauses, exact, reads, tokenize

# --- tokenize ---------------------------------------------------------------------------------


def test_tokens_keep_their_kind_and_drop_whitespace_and_comments():
    assert tokenize('user.email_consent // why\n && "vip" in user.attributes.tags') == [
        ("ident", "user"),
        ("op", "."),
        ("ident", "email_consent"),
        ("op", "&&"),
        ("str", '"vip"'),
        ("ident", "in"),
        ("ident", "user"),
        ("op", "."),
        ("ident", "attributes"),
        ("op", "."),
        ("ident", "tags"),
    ]


@pytest.mark.parametrize(
    "literal",
    [
        '"a \\" b"',
        "'it\\'s'",
        "'''two\nlines'''",
        '"""say "hi" """',
        'r"\\d+"',
        "R'raw'",
        'b"bytes"',
        "rb'x'",
        "''",
    ],
)
def test_a_string_literal_is_one_token(literal):
    assert tokenize(f"user.first_name == {literal}") == [
        ("ident", "user"),
        ("op", "."),
        ("ident", "first_name"),
        ("op", "=="),
        ("str", literal),
    ]


def test_numbers_and_two_character_operators():
    assert tokenize("1.5e3 <= x || y != 0u") == [
        ("num", "1.5e3"),
        ("op", "<="),
        ("ident", "x"),
        ("op", "||"),
        ("ident", "y"),
        ("op", "!="),
        ("num", "0u"),
    ]


@pytest.mark.parametrize("expression", ["a ~ b", "a # b", '"unterminated', "a ` b", "é == 1"])
def test_what_the_lexer_does_not_know_is_none(expression):
    assert tokenize(expression) is None


# --- clauses ----------------------------------------------------------------------------------


def _described(expression: str) -> list[str]:
    return [clause.describe() for clause in clauses(expression)]


def test_each_recognised_top_level_conjunct_is_a_clause():
    found = clauses(
        'user.email_consent && user.attributes.tier == "vip" && "a" in user.attributes.t'
    )
    assert found == [
        Clause("eq", "email_consent", (), True),
        Clause("eq", "attributes", ("tier",), "vip"),
        Clause("in", "attributes", ("t",), "a"),
    ]


@pytest.mark.parametrize(
    ("expression", "described"),
    [
        ("!user.sms_unsubscribed", ["user.sms_unsubscribed == false"]),
        ('"da" == user.language', ['user.language == "da"']),  # either side
        ("user.attributes.a.b == r'x'", ['user.attributes.a.b == "x"']),  # a nested path
        ("user.attributes.vip == true", ["user.attributes.vip == true"]),
        ("'''two\nlines''' == user.first_name", ['user.first_name == "two\\nlines"']),
        ('user.first_name == "\\u00c5se"', ['user.first_name == "Åse"']),  # decoded by CEL
        (
            '(user.email_consent && (user.language == "da"))',
            [
                "user.email_consent == true",
                'user.language == "da"',
            ],
        ),  # redundant parentheses opened up
        (
            '(user.language == "da" || user.language == "sv") && user.sms_consent',
            ["user.sms_consent == true"],
        ),  # a parenthesised disjunction is not pushed, the rest is
    ],
)
def test_the_forms_that_are_pushed(expression, described):
    assert _described(expression) == described


@pytest.mark.parametrize(
    "expression",
    [
        'user.language == "da" || user.sms_consent',  # a disjunction at the top
        'user.attributes.x == "a" ? true : false',  # a conditional at the top
        "user.attributes.tickets > 0",  # numbers stay in CEL
        "user.attributes.tickets == 2",
        "user.email == true",  # a string column compared with a bool
        'user.email_consent == "yes"',  # a bool column compared with a string
        '"x" in user.email',  # `in` on a string column
        'user.language == b"da"',  # bytes are not strings
        'user.first_name == "a\\x00b"',  # a NUL cannot be a PostgreSQL parameter
        'user.attributes == "x"',  # the map itself
        'user.nickname == "x"',  # not a column
        'user["email"] == "x"',
        'user.phone.startsWith("+45")',
        'user.attributes.tags.exists(t, t == "a")',
        "a ~ b",  # does not tokenize
    ],
)
def test_the_forms_that_are_not(expression):
    assert clauses(expression) == []


def test_describe_writes_the_clause_back_as_cel():
    assert (
        Clause("in", "attributes", ("tags",), "vip").describe() == '"vip" in user.attributes.tags'
    )
    assert Clause("eq", "language", (), "då").describe() == 'user.language == "då"'


# --- exact ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "true",
        "user.email_consent",
        '!user.email_unsubscribed && user.attributes.tier == "vip"',
        'true && (user.language == "en" && user.sms_consent)',
    ],
)
def test_exact_when_sql_alone_decides(expression):
    assert exact(expression)


@pytest.mark.parametrize(
    "expression",
    [
        '"vip" in user.attributes.tags',  # `in`: PostgreSQL's ? also matches a plain string
        "user.email_consent && user.attributes.tickets > 0",  # one conjunct left to CEL
        '(user.language == "da" || user.language == "sv") && user.sms_consent',
        'user.language == "da" || user.language == "sv"',
        "false",
        "a ~ b",
    ],
)
def test_not_exact_when_cel_must_still_run(expression):
    assert not exact(expression)


# --- reads ------------------------------------------------------------------------------------


def test_reads_names_the_fields_and_attribute_keys_used():
    assert reads(
        'user.email_consent && user.attributes.tier == "vip" && user.attributes.n > 1'
    ) == (Reads(frozenset({"email_consent", "attributes"}), frozenset({"tier", "n"})))
    assert reads("true") == Reads(frozenset(), frozenset())


def test_a_method_on_a_field_still_reads_only_that_field():
    assert reads('user.phone.startsWith("+45")') == Reads(frozenset({"phone"}), frozenset())
    assert reads('user.attributes.tags.exists(t, t == "a")') == (
        Reads(frozenset({"attributes"}), frozenset({"tags"}))
    )


@pytest.mark.parametrize(
    "expression",
    ["size(user.attributes) > 1", '"vip" in user.attributes', 'user.attributes["odd key"] == 1'],
)
def test_using_the_attribute_map_itself_reads_every_key(expression):
    assert reads(expression) == Reads(frozenset({"attributes"}), None)


@pytest.mark.parametrize(
    "expression",
    [
        'user["email"] == "x"',  # indexing the user
        '"email" in user',
        "size(user) > 3",
        "[1, 2].exists(user, user > 1)",  # a comprehension variable named user
        "x.user.email == 1",  # some other thing's field called user
        'user.nickname == "x"',  # not a field: CEL will say so, with the whole user
        "a ~ b",
    ],
)
def test_anything_else_may_read_the_whole_user(expression):
    assert reads(expression) is None
