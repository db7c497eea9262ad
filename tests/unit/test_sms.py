"""SMS length accounting (`server.core.sms.cost`) as it stands: GSM-7 when every character is
in the GSM 03.38 tables (extension characters take two septets), UCS-2 otherwise (astral
characters take two code units); one part up to 160 septets / 70 units, then parts of 153 / 67.

Only the plain cases are pinned here: where an escape pair or a surrogate pair would straddle
a part boundary the count is the simple division, and whether that is right is another issue."""

from __future__ import annotations

import pytest

from server.core.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    GSM7_PART,
    GSM7_SINGLE,
    UCS2_PART,
    UCS2_SINGLE,
    SmsCost,
    cost,
)


def test_the_gsm_tables_are_the_standard_ones():
    # 128 code points less the escape; the extension table's ten characters of this alphabet.
    assert len(GSM7_BASIC) == 127
    assert frozenset("^{}\\[~]|€\f") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert (GSM7_SINGLE, GSM7_PART, UCS2_SINGLE, UCS2_PART) == (160, 153, 70, 67)


def test_nothing_to_send_is_no_part():
    assert cost("") == SmsCost("gsm7", 0, 0)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_one_part_up_to_160_then_parts_of_153(length, segments):
    assert cost("a" * length) == SmsCost("gsm7", length, segments)


def test_the_danish_letters_and_newlines_are_gsm7_single_septets():
    text = "Hej Søren, dørene åbner kl. 18! Æbler & £5\r\nØl: 0 kr. É ü ñ Ä"
    assert cost(text) == SmsCost("gsm7", len(text), 1)


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_an_extension_character_takes_two_septets(char):
    assert cost(char) == SmsCost("gsm7", 2, 1)
    assert cost("a" * 159 + char).segments == 2  # 161 septets for 160 characters


def test_eighty_euro_signs_fill_one_part_and_eighty_one_need_two():
    assert cost("€" * 80) == SmsCost("gsm7", 160, 1)
    assert cost("€" * 81) == SmsCost("gsm7", 162, 2)


@pytest.mark.parametrize("char", ["ê", "ç", "õ", "ł", "—", "“", "中"])
def test_one_character_outside_gsm7_makes_the_whole_text_ucs2(char):
    text = "a" * 100 + char
    assert cost(text) == SmsCost("ucs2", 101, 2)  # 101 > 70 units: two parts


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3)],
)
def test_ucs2_one_part_up_to_70_units_then_parts_of_67(length, segments):
    assert cost("ê" * length) == SmsCost("ucs2", length, segments)


def test_an_astral_character_takes_two_utf16_units():
    assert cost("😀") == SmsCost("ucs2", 2, 1)
    assert cost("😀" * 35) == SmsCost("ucs2", 70, 1)
    assert cost("😀" * 36) == SmsCost("ucs2", 72, 2)


def test_in_ucs2_extension_characters_are_one_unit_like_any_other():
    assert cost("€ê") == SmsCost("ucs2", 2, 1)
