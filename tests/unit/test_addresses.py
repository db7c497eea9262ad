"""`server.audience.addresses.normalise_email`: the domain checked once and the address put
together here gives exactly what email-validator gives for the whole address, answers and
errors alike, whatever the address."""

from __future__ import annotations

import email_validator
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.audience.addresses import normalise_email

DOMAINS = [
    "example.com",
    "Example.COM",
    "mail.example.co.uk",
    "bücher.example",
    "xn--bcher-kva.example",
    "ÉCOLE.fr",
    "localhost",
    "printer.local",
    "a.invalid",
    "example",
    "example.com.",
    ".example.com",
    "exa mple.com",
    "ex..ample.com",
    "-example.com",
    "[192.0.2.1]",
    "",
    "x" * 63 + ".com",
    "x" * 64 + ".com",
    ".".join(["y" * 60] * 4) + ".com",
    "b@example.com",
]
LOCALS = st.one_of(
    st.sampled_from(["a", "john.smith", "postmaster", "Postmaster", "INFO", "a+b", "a..b", ".a"]),
    st.text("abcXYZ09.+-_!#'\"@ \\é", min_size=0, max_size=12),
    st.text("ab.", min_size=60, max_size=250),
)


def _library(value: str) -> str:
    try:
        return str(email_validator.validate_email(value, check_deliverability=False).normalized)
    except email_validator.EmailNotValidError as exc:
        return f"refused: {exc}"


def _ours(value: str) -> str:
    try:
        return normalise_email(value)
    except ValueError as exc:
        return f"refused: {exc}"


@settings(max_examples=400, deadline=None)
@given(local=LOCALS, domain=st.one_of(st.sampled_from(DOMAINS), st.text(max_size=20)))
def test_the_same_answer_as_email_validator(local: str, domain: str) -> None:
    for value in (f"{local}@{domain}", f"{local}@{domain}", f"{local}{domain}"):  # twice: cached
        assert _ours(value) == _library(value)


@pytest.mark.parametrize(
    "value",
    [
        "john.smith@example.com",
        "john.smith@Example.COM",
        "info@bücher.example",
        "x@xn--bcher-kva.example",
        "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".example",
        "a" * 60 + "@" + ".".join(["b" * 60] * 3) + ".bücher",
    ],
)
def test_common_and_edge_addresses(value: str) -> None:
    assert _ours(value) == _library(value)


def _domain_of(size: int, label: str) -> str:
    """A domain of about `size` characters: labels of at most 60, ending in `label`."""
    head = size - len(label) - 1
    labels = ["d" * 60] * (head // 61) + (["d" * (head % 61 - 1)] if head % 61 > 1 else [])
    return ".".join([*labels, label])


@pytest.mark.parametrize("label", ["example", "bücher"])
@pytest.mark.parametrize("total", range(250, 258))
def test_the_length_limit_whichever_form_reaches_it(label: str, total: int) -> None:
    local = "a" * 20
    value = f"{local}@{_domain_of(total - len(local) - 1, label)}"
    assert _ours(value) == _library(value)
