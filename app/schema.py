"""The transaction record and label contracts (ARCHITECTURE.md): Kafka JSON and Parquet columns.

One definition used by the simulator (writes), the producer (serialises), validation (checks) and
the stream worker (parses).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.pan import has_pan

CHANNELS = ("card_present", "ecommerce", "atm")
Channel = Literal["card_present", "ecommerce", "atm"]

# fraud_scenario values in (simulated) history; LEGIT marks genuine transactions.
SCENARIOS = (
    "high_amount",
    "compromised_terminal",
    "compromised_card",
    "card_testing",
    "impossible_travel",
    "account_takeover",
)
LEGIT = "none"
# a fraud known only from its label (a chargeback, an analyst's verdict): live traffic does not say
# which pattern it was
REPORTED = "reported"
# a transaction the system declined that nobody labelled: no chargeback comes for money never paid, so
# its label is not known (it is not presumed genuine, as an approved one is once settled); training
# leaves it out of its train, validation and test sets, and folds it into the card states as any other
UNOBSERVED = "unobserved"

# A value that could be a real card number (13-19 digits, optionally grouped by spaces or dashes).
PAN_LIKE = re.compile(r"^(?:\d[ -]?){12,18}\d$")

TRANSACTION_FIELDS = (
    "txn_id",
    "event_time",
    "card_id",
    "merchant_id",
    "amount",
    "currency",
    "mcc",
    "channel",
    "lat",
    "lon",
    "country",
)
LABEL_FIELDS = ("is_fraud", "label_time", "fraud_scenario")
# How many transactions a history row stands for when a model is evaluated on it: 1, but for a would-be
# decline let through to be measured (``app.scoring.decide.Policy.explores``), which also stands for its
# day's would-be declines nobody labelled (``app.audit_export.history_rows``), and for an ``UNOBSERVED``
# row, 0. A file written before the column has none: each of its rows stands for itself.
WEIGHT = "weight"

TIMESTAMP = pa.timestamp("us", tz="UTC")
TRANSACTION_SCHEMA = pa.schema(
    [
        ("txn_id", pa.string()),
        ("event_time", TIMESTAMP),
        ("card_id", pa.string()),
        ("merchant_id", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("mcc", pa.string()),
        ("channel", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("country", pa.string()),
    ]
)
HISTORY_SCHEMA = (
    TRANSACTION_SCHEMA.append(pa.field("is_fraud", pa.int8()))
    .append(pa.field("label_time", TIMESTAMP))
    .append(pa.field("fraud_scenario", pa.string()))
    .append(pa.field(WEIGHT, pa.float64()))
)


def _not_pan(value: str) -> str:
    if PAN_LIKE.match(value):
        raise ValueError("card_id looks like a card number (PAN); send a token")
    return _no_pan(value)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_pan(value: str) -> str:
    """Identifiers never carry a card number, not even inside (a Luhn-valid 13-19 digit run), nor
    control characters (PostgreSQL refuses NUL in text: one such message would stall every sink)."""
    if has_pan(value):
        raise ValueError("contains a card number (PAN); send a token")
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    return value


Id = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_pan)]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("event_time needs a UTC offset")
    return value.astimezone(UTC)


class Transaction(BaseModel):
    """One card transaction as it travels on the ``transactions`` topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    txn_id: Id
    event_time: Annotated[datetime, AfterValidator(_utc)]
    card_id: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_not_pan)]
    merchant_id: Id
    amount: float = Field(gt=0, lt=1_000_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    mcc: str = Field(pattern=r"^\d{4}$")
    channel: Channel
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Feedback(BaseModel):
    """A label on the ``fraud-feedback`` topic: an analyst verdict or a chargeback."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    txn_id: Id
    card_id: Id
    is_fraud: Literal[0, 1]
    label_time: Annotated[datetime, AfterValidator(_utc)]
    source: Literal["chargeback", "analyst"]
    fraud_scenario: Annotated[str, AfterValidator(_no_pan)] | None = None
    analyst: Annotated[str, AfterValidator(_no_pan)] | None = None  # who gave an analyst verdict
    retracted: bool = False  # an analyst undid this verdict


def encode(record: dict[str, Any]) -> bytes:
    """JSON bytes for Kafka; datetimes become RFC 3339 with an explicit offset."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def _default(value: object) -> object:
    # pandas Timestamps are datetime subclasses that orjson does not take natively
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def iso(ts: datetime) -> str:
    """ISO-8601 in UTC with an explicit +00:00 offset."""
    return ts.astimezone(UTC).isoformat()
