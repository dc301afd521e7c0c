"""The model's input vector: card features + merchant features + transaction attributes.

One definition for training (``training.dataset``, vectorised over history) and for scoring (the
worker, one transaction at a time): the column order, and how transaction attributes that are
not state features (the channel) become numbers.
"""

from __future__ import annotations

from features.card import FEATURE_NAMES
from features.merchant import MERCHANT_FEATURES

ONE_HOT_CHANNELS = ("ecommerce", "atm")  # card_present is the reference level
CHANNEL_FEATURES: tuple[str, ...] = tuple(f"channel_{c}" for c in ONE_HOT_CHANNELS)
MODEL_FEATURES: tuple[str, ...] = (*FEATURE_NAMES, *MERCHANT_FEATURES, *CHANNEL_FEATURES)


def channel_features(channel: str) -> dict[str, float]:
    return {f"channel_{c}": 1.0 if channel == c else 0.0 for c in ONE_HOT_CHANNELS}
