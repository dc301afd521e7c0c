"""Card numbers (PANs) never leave the system in clear: detect them and mask them (first 6, last 4).

A candidate is 13-19 digits, contiguous or grouped by single spaces or dashes, that starts with a
payment-card major industry identifier (2-6: Mastercard 2-series, Amex / JCB / Diners, Visa,
Mastercard, Discover / UnionPay) and passes the Luhn check. Every run of consecutive digit groups
is tried, so a card number glued to other digits by a separator ("id-46-4111 1111 1111 1111") is
still found. It must stand apart from letters and digits (a UUID's "4656-8372-06932ee3" is not a
card number), and a run right after a decimal point is a fraction (a score), not a card number.

A UUID in its canonical 8-4-4-4-12 hex form is an identifier, not a card number: about one random
UUID in 10,000 has three leading all-decimal groups (16 digits) that pass Luhn. Such a UUID must
have at least one hex letter to be passed over (32 decimal digits in that shape are still scanned).
"""

from __future__ import annotations

import re

_RUN = re.compile(r"(?<![\d.])\d+(?:[ -]\d+)*")  # digit groups joined by single separators
_GROUP = re.compile(r"\d+")
# What every candidate has: a first digit 2-6 that stands apart (no letter, digit or "." before it),
# then 12 more digits with single separators. Identifiers with long digit runs glued to letters, as
# "tx-f3400360-000155544", fail it in one C-speed search; a looser "any 13 digits" sent them all
# through the full scan (~5 % of the stream worker's time in session 12's profile).
_ENOUGH = re.compile(r"(?<![^\W_])(?<!\.)[2-6](?:[ -]?\d){12}")
_UUID = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9A-Za-z])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every card number in ``text``, left to right, not overlapping."""
    if not _ENOUGH.search(text):  # most identifiers: one C-speed search, no candidate to try
        return []
    return _scan(text)


def _scan(text: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    text = _UUID.sub(_blank_uuid, text)  # same length: the spans found index the caller's text
    for run in _RUN.finditer(text):
        groups = [(g.start() + run.start(), g.end() + run.start()) for g in _GROUP.finditer(run.group())]
        i = 0
        while i < len(groups):
            digits = ""
            for j in range(i, len(groups)):
                digits += text[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if (
                    len(digits) >= 13
                    and digits[0] in "23456"
                    and _apart(text, groups[i][0], groups[j][1])
                    and luhn_ok(digits)
                ):
                    found.append((groups[i][0], groups[j][1]))
                    i = j
                    break
            i += 1
    return found


def _blank_uuid(m: re.Match[str]) -> str:
    uuid = m.group()
    return "u" * len(uuid) if any(c.isalpha() for c in uuid) else uuid


def _apart(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    return not (before.isalnum() or before == "." or after.isalnum())


def has_pan(text: str) -> bool:
    """Whether ``text`` holds a card number (one C-speed search for most identifiers)."""
    return _ENOUGH.search(text) is not None and bool(_scan(text))


def find_pans(text: str) -> list[str]:
    """The card numbers in ``text``, as written (separators kept)."""
    return [text[a:b] for a, b in _spans(text)]


def mask_pans(text: str) -> str:
    """Replace every card number by its first 6 and last 4 digits around asterisks."""
    for a, b in reversed(_spans(text)):
        digits = re.sub(r"[ -]", "", text[a:b])
        text = text[:a] + digits[:6] + "*" * (len(digits) - 10) + digits[-4:] + text[b:]
    return text
