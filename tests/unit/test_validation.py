"""Collecting field violations (`server.core.validation`): every bad field of a request is
reported at once, in the order checked, as one InvalidArgument."""

from __future__ import annotations

import pytest

from server.core.errors import FieldViolation, InvalidArgument
from server.core.validation import NUL_MESSAGE, Violations, has_nul, invalid


def test_nothing_wrong_raises_nothing():
    v = Violations()
    v.text("Early birds", "name", max_length=20, required=True)
    v.positive_id(3, "edition_id")
    v.positive_id(0, "segment_id", required=False)
    v.update_mask(["name"], ["name", "sms_body"])
    assert v.check(True, "x", "never") is True
    v.raise_if_any()
    assert v.items == []


def test_every_violation_is_reported_at_once_in_order():
    v = Violations()
    v.text("   ", "name", max_length=20, required=True)
    v.text("x" * 21, "subject", max_length=20)
    v.text("a\x00b", "sms_body", max_length=20)
    v.positive_id(0, "edition_id")
    v.positive_id(-1, "segment_id", required=False)
    assert v.check(False, "channel", "must be set") is False
    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_any()
    assert raised.value.violations == [
        FieldViolation("name", "is required and must not be blank"),
        FieldViolation("subject", "must be at most 20 characters, got 21"),
        FieldViolation("sms_body", NUL_MESSAGE),
        FieldViolation("edition_id", "is required and must be a positive id"),
        FieldViolation("segment_id", "must be positive"),
        FieldViolation("channel", "must be set"),
    ]
    assert raised.value.reason == "INVALID_ARGUMENT"
    assert "name: is required" in raised.value.message
    assert "channel: must be set" in raised.value.message


def test_text_reports_one_problem_per_field():
    v = Violations()
    v.text("", "name", max_length=5, required=True)  # blank: not also "too long" or NUL
    v.text("\x00" * 9, "note", max_length=5)  # too long wins over NUL
    assert [(i.field, i.description.split()[0]) for i in v.items] == [
        ("name", "is"),
        ("note", "must"),
    ]
    assert "at most 5" in v.items[1].description


def test_an_optional_empty_text_is_fine_and_length_counts_characters():
    v = Violations()
    v.text("", "reply_to", max_length=5)
    v.text("åøæ😀é", "name", max_length=5)  # five characters, more bytes
    assert v.items == []


def test_a_negative_id_is_refused_even_when_optional():
    v = Violations()
    v.positive_id(-5, "page")
    v.positive_id(-5, "segment_id", required=False)
    v.positive_id(0, "email_message_id", required=False)
    assert [i.field for i in v.items] == ["page", "segment_id"]


def test_an_update_mask_must_name_editable_fields_only():
    v = Violations()
    v.update_mask([], ["name"])
    v.update_mask(["name", "status", "id"], ["name", "sms_body"])
    assert [i.field for i in v.items] == ["update_mask"] * 3
    assert v.items[0].description == "is required: name the fields to change"
    assert v.items[1].description == "cannot update 'status'; editable: name, sms_body"
    assert "'id'" in v.items[2].description


def test_nul_anywhere_in_a_string():
    assert has_nul("a\x00") and has_nul("\x00") and not has_nul("a\\x00") and not has_nul("")
    v = Violations()
    v.no_nul("\x00", "expression")
    assert v.items == [FieldViolation("expression", NUL_MESSAGE)]


def test_invalid_is_a_single_field_error():
    error = invalid("page", "must be at most 100")
    assert isinstance(error, InvalidArgument)
    assert error.violations == [FieldViolation("page", "must be at most 100")]
    assert error.message == "invalid request: page: must be at most 100"


def test_items_are_copied_into_the_error():
    v = Violations()
    v.add("a", "bad")
    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_any()
    v.add("b", "later")
    assert [i.field for i in raised.value.violations] == ["a"]
