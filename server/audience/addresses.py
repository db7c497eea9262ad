"""Email addresses and phone numbers as the service stores them: email-validator's normalised
form (no DNS look-ups), and E.164 by phonenumbers, with the edition's country for local numbers.

email-validator checks an address's domain (IDNA, special-use names) afresh for every address:
most of its work, though a million-row import holds a few thousand domains. So the domain is
checked here once (`_domain`, memoised), and an address whose part before the @ is a plain
lowercase dot-atom is put together from it, just as validate_email would put it: such a local
part is valid and normalised as it stands, and the lengths are checked below. Every other
address, and any address at a domain refused once, goes through validate_email whole
(tests/unit/test_addresses.py holds the two paths to the same answers and errors).
"""

from __future__ import annotations

import functools
import re

import email_validator
import phonenumbers

from server.store.models import Edition

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 atext, less the capital letters
_PLAIN_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_MAX_BYTES = 254  # an address's limit in UTF-8 bytes (RFC 5321), in each of its forms


def _validated(value: str) -> str:
    try:
        return str(email_validator.validate_email(value, check_deliverability=False).normalized)
    except email_validator.EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> tuple[str, int] | None:
    """The domain as validate_email normalises it, and the longest of its forms (as given,
    normalised, IDNA ASCII) in UTF-8 bytes; None when an address at it is refused."""
    try:
        checked = email_validator.validate_email("a@" + domain, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None
    forms = (domain, checked.domain, checked.ascii_domain)
    return str(checked.domain), max(len(form.encode()) for form in forms)


def normalise_email(value: str) -> str:
    """The address as stored; ValueError saying what is wrong with it."""
    local, at, domain = value.partition("@")
    known = _domain(domain) if at and _PLAIN_LOCAL.match(local) else None
    if known is not None and len(local) + 1 + known[1] <= _MAX_BYTES:
        return f"{local}@{known[0]}"
    return _validated(value)


def normalise_phone(value: str, region: str | None) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number" + ("" if region else " (no country code)"))
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def region_for(edition: Edition | None) -> str | None:
    code = edition.default_country_code if edition else ""
    if not code:
        return None
    region = phonenumbers.region_code_for_country_code(int(code.lstrip("+")))
    return None if region == "ZZ" else str(region)
