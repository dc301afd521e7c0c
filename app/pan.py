"""Card numbers (PANs) never leave the system in clear: detect them and mask them (first 6, last 4)."""

from __future__ import annotations

import re

# 13-19 digits, optionally grouped by single spaces or dashes, starting with a payment-card major
# industry identifier (2-6: Mastercard 2-series, Amex/JCB/Diners, Visa, Mastercard, Discover/UnionPay),
# not the fraction of a decimal number (scores like 0.23456789012345678 are not card numbers)
_CANDIDATE = re.compile(r"(?<![\d.])[2-6](?:[ -]?\d){12,18}(?!\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pans(text: str) -> list[str]:
    """Digit runs in ``text`` that are valid card numbers (Luhn)."""
    found = []
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            found.append(match.group())
    return found


def mask_pans(text: str) -> str:
    """Replace every valid card number by its first 6 and last 4 digits around asterisks."""

    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group())
        if not (13 <= len(digits) <= 19 and luhn_ok(digits)):
            return match.group()
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]

    return _CANDIDATE.sub(mask, text)
