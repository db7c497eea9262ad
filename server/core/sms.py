"""SMS length accounting: GSM-7 or UCS-2, and how many parts a text is split into."""

from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 default alphabet (without the escape character) and its extension table,
# whose characters take two septets each.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsCost:
    encoding: str  # "gsm7" or "ucs2"
    length: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def _parts(length: int, single: int, part: int) -> int:
    if length == 0:
        return 0
    return 1 if length <= single else -(-length // part)


def cost(text: str) -> SmsCost:
    """Encoding, length and number of parts of `text` as a carrier would count them."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        length = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        return SmsCost("gsm7", length, _parts(length, GSM7_SINGLE, GSM7_PART))
    # Any other character makes the whole message UCS-2; astral characters take two units.
    length = len(text.encode("utf-16-le")) // 2
    return SmsCost("ucs2", length, _parts(length, UCS2_SINGLE, UCS2_PART))
