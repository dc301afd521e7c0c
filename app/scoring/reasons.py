"""SHAP values -> reason codes an analyst can read ("Speed from previous transaction 2,450 km/h").

Pure functions: the top-k features by |SHAP| of one decision, each with its human-readable name,
its value formatted in its unit, and its signed contribution to the log-odds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def _num(unit: str, digits: int = 0) -> Callable[[float], str]:
    return lambda v: f"{v:,.{digits}f}{unit}"


def _yes_no(v: float) -> str:
    return "yes" if v >= 0.5 else "no"


def _percent(v: float) -> str:
    return f"{v:.1%}"


def _duration(v: float) -> str:
    if v < 120:
        return f"{v:,.0f} s"
    if v < 2 * 3600:
        return f"{v / 60:,.0f} min"
    if v < 2 * 86400:
        return f"{v / 3600:,.1f} h"
    return f"{v / 86400:,.1f} days"


_WINDOWS = {"10m": "10 minutes", "1h": "hour", "24h": "24 hours", "7d": "7 days", "30d": "30 days"}
_MERCHANT_WINDOWS = {"1d": "day", "7d": "7 days", "30d": "30 days"}

TEXT: dict[str, tuple[str, Callable[[float], str]]] = {
    **{f"card_count_{w}": (f"Card transactions in the last {t}", _num("")) for w, t in _WINDOWS.items()},
    **{f"card_sum_{w}": (f"Card spend in the last {t}", _num("", 2)) for w, t in _WINDOWS.items()},
    **{f"card_mean_{w}": (f"Card mean amount in the last {t}", _num("", 2)) for w, t in _WINDOWS.items()},
    "amount": ("Amount", _num("", 2)),
    "amount_to_mean_30d": ("Amount vs the card's 30-day mean", _num("x", 1)),
    "seconds_since_prev": ("Time since the previous transaction", _duration),
    "km_from_prev": ("Distance from the previous transaction", _num(" km")),
    "kmh_from_prev": ("Speed from previous transaction", _num(" km/h")),
    "km_from_home": ("Distance from the card's home area", _num(" km")),
    "new_country": ("Country not seen on this card in 90 days", _yes_no),
    "new_merchant": ("Merchant not seen on this card in 90 days", _yes_no),
    "is_night": ("Local night time (00-06)", _yes_no),
    "is_weekend": ("Weekend", _yes_no),
    "card_prev_txns": ("Earlier transactions on this card", _num("")),
    **{
        f"merchant_count_{w}": (f"Merchant transactions over the {t} (label-delayed)", _num(""))
        for w, t in _MERCHANT_WINDOWS.items()
    },
    **{
        f"merchant_fraud_rate_{w}": (f"Merchant fraud rate over the {t} (label-delayed)", _percent)
        for w, t in _MERCHANT_WINDOWS.items()
    },
    "channel_ecommerce": ("E-commerce", _yes_no),
    "channel_atm": ("ATM withdrawal", _yes_no),
}


def label(feature: str) -> str:
    return TEXT[feature][0] if feature in TEXT else feature.replace("_", " ").capitalize()


def describe(feature: str, value: float | None) -> str:
    """'<name> <value in its unit>' ('unknown' for a missing value, e.g. a card's first transaction)."""
    if value is None or math.isnan(value):
        return f"{label(feature)}: unknown"
    fmt = TEXT[feature][1] if feature in TEXT else _num("", 3)
    return f"{label(feature)} {fmt(value)}"


def reason_codes(
    names: Sequence[str], values: Sequence[float], shap: Sequence[float], k: int
) -> list[dict[str, Any]]:
    """The ``k`` features with the largest |SHAP|, largest first (ties by name, so it is stable)."""
    order = sorted(range(len(names)), key=lambda i: (-abs(shap[i]), names[i]))[:k]
    return [
        {
            "feature": names[i],
            "value": None if math.isnan(values[i]) else float(values[i]),
            "shap": round(float(shap[i]), 6),
            "text": describe(names[i], values[i]),
        }
        for i in order
    ]


EXPLORE = "policy:explore"  # the reason of a would-be decline let through to be measured (Policy.explores)


def rule_reason(rule: str, text: str, value: float | str | None = None) -> dict[str, Any]:
    """A rule hit as a reason (no SHAP: it is not the model's doing)."""
    return {"feature": f"rule:{rule}", "value": value, "shap": None, "text": text}


def as_mapping(names: Sequence[str], values: Sequence[float]) -> Mapping[str, float | None]:
    """A feature vector as JSON-ready ``{name: value}`` (NaN -> None)."""
    return {n: None if math.isnan(v) else float(v) for n, v in zip(names, values, strict=True)}
