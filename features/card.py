"""Card features: the one definition used by the stream worker and by batch backfill.

A card's history is folded event by event through two pure functions:

- ``card_features(state, txn)``: the features of ``txn`` as of its own event_time, from the card's
  *other* transactions that come before it in (event_time, txn_id) order -- never anything after
  it, never a label, whatever order the events arrived in;
- ``update(state, txn, pending_s)``: the state with ``txn`` added, expired entries dropped.

The stream keeps ``CardState`` per card in a Faust table; the batch path (``features.backfill``)
runs the same fold over Parquet history sorted by event time, so the two cannot disagree.

Out-of-order arrival: events stay *pending* (exact, in ``recent``) for ``pending_s`` behind the
card's latest event (the worker passes its lateness bound) and only then are *settled* into the
aggregates (hour buckets, seen countries / merchants, home cells, count). Features add the pending
events that precede the transaction to the settled aggregates, so an event that arrives late but
within the bound is scored on exactly its own past, as in an in-order run of what had arrived.

Memory is bounded per card: exact recent events for the short windows (24 h plus ``pending_s``,
at most ``MAX_RECENT``), hourly buckets for the 7 d / 30 d windows (at most 720), and capped,
expiring sets of countries, merchants and home-location grid cells.

Window semantics: the 10 min, 1 h and 24 h windows are exact over (t - w, t]. The 7 d and 30 d
windows are hour-aligned: the current UTC hour plus the 167 / 719 hours before it.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

HOUR = 3_600.0
DAY = 86_400.0
EXACT_WINDOWS = (("10m", 600.0), ("1h", HOUR), ("24h", DAY))
BUCKET_WINDOWS = (("7d", 7 * 24), ("30d", 30 * 24))  # in hours
WEEK_H, MONTH_H = (hours for _, hours in BUCKET_WINDOWS)
RECENT_KEEP_S = DAY
PENDING_S = 300.0  # how long an event stays exact before it is settled (the worker uses its lateness)
MAX_RECENT = 512
MAX_MERCHANTS = 256
MAX_COUNTRIES = 64
MAX_CELLS = 32
SEEN_TTL_S = 90 * DAY
HOME_CELL_DEG = 0.5
MIN_SPEED_INTERVAL_S = 60.0  # speeds use at least a minute, so two swipes in one second are not infinite
EARTH_RADIUS_KM = 6_371.0088

FEATURE_NAMES: tuple[str, ...] = (
    *(f"card_{agg}_{w}" for w, _ in (*EXACT_WINDOWS, *BUCKET_WINDOWS) for agg in ("count", "sum", "mean")),
    "amount",
    "amount_to_mean_30d",
    "seconds_since_prev",
    "km_from_prev",
    "kmh_from_prev",
    "km_from_home",
    "new_country",
    "new_merchant",
    "is_night",
    "is_weekend",
    "card_prev_txns",
)


class Txn(NamedTuple):
    """What card features read of a transaction (seconds since the epoch, UTC)."""

    txn_id: str
    t: float
    amount: float
    lat: float
    lon: float
    country: str
    merchant_id: str


class Recent(NamedTuple):
    t: float
    txn_id: str
    amount: float
    lat: float
    lon: float
    country: str = ""
    merchant_id: str = ""


_INT32 = next(code for code in "ilh" if array(code).itemsize == 4)  # the hour columns' type code
# keys of ``CardState.recent``, in C: an entry's event time, and its (event time, txn id) order
_AT, _ORDER = itemgetter(0), itemgetter(0, 1)


@dataclass
class Seen:
    """Countries or merchants with the event time each was last seen, as two columns in the order
    first seen (session 16: a dict's float values were one Python object each)."""

    keys: list[str] = field(default_factory=list)
    times: array[float] = field(default_factory=lambda: array("d"))

    def see(self, key: str, t: float) -> None:
        if key in self.keys:
            i = self.keys.index(key)
            self.times[i] = max(t, self.times[i])
        else:
            self.keys.append(key)
            self.times.append(t)

    def fresh(self, key: str, t: float) -> bool:
        """Whether ``key`` was seen within ``SEEN_TTL_S`` before ``t``."""
        return key in self.keys and t - self.times[self.keys.index(key)] <= SEEN_TTL_S

    def expire(self, now: float, cap: int) -> None:
        """Forget what was last seen more than ``SEEN_TTL_S`` before ``now``, then the oldest (the
        smallest key among equals) beyond ``cap``."""
        times = self.times
        if times and now - min(times) > SEEN_TTL_S:  # (a scan in C: most events expire nothing)
            keep = [i for i, last in enumerate(times) if now - last <= SEEN_TTL_S]
            self.keys = [self.keys[i] for i in keep]
            self.times = array("d", [times[i] for i in keep])
        while len(self.keys) > cap:
            i = self.keys.index(min(zip(self.times, self.keys, strict=True))[1])
            del self.keys[i], self.times[i]


@dataclass
class Cells:
    """Home-location grid cells as parallel columns, in the order they were first seen: each cell's
    key, how many settled transactions fell in it, and the sums of their latitudes and longitudes.
    (Session 16: a dict of 3-tuples was ~5 Python objects a cell, each a pointer to chase.)"""

    keys: list[str] = field(default_factory=list)
    counts: array[int] = field(default_factory=lambda: array(_INT32))
    lats: array[float] = field(default_factory=lambda: array("d"))
    lons: array[float] = field(default_factory=lambda: array("d"))

    def add(self, lat: float, lon: float) -> None:
        key = _cell(lat, lon)
        if key in self.keys:
            i = self.keys.index(key)
            self.counts[i] += 1
            self.lats[i] += lat
            self.lons[i] += lon
        else:
            self.keys.append(key)
            self.counts.append(1)
            self.lats.append(lat)
            self.lons.append(lon)

    def drop_smallest(self) -> None:
        """Forget the cell with the fewest transactions (the smallest key among equals)."""
        i = self.keys.index(min(zip(self.counts, self.keys, strict=True))[1])
        del self.keys[i], self.counts[i], self.lats[i], self.lons[i]

    def copy(self) -> Cells:
        counts, lats, lons = array(_INT32, self.counts), array("d", self.lats), array("d", self.lons)
        return Cells(list(self.keys), counts, lats, lons)

    def home(self) -> tuple[float, float] | None:
        """Robust home: the centroid of the cell holding most transactions (the largest key among equals)."""
        if not self.keys:
            return None
        i = self.keys.index(max(zip(self.counts, self.keys, strict=True))[1])
        n = self.counts[i]
        return self.lats[i] / n, self.lons[i] / n


@dataclass
class CardState:
    recent: list[Recent] = field(default_factory=list)  # sorted by (t, txn_id); exact, settled or not
    # aggregates of the settled events only (those with t < settled_to)
    # hour buckets as three parallel arrays sorted by hour: a window's count and sum are two
    # bisections and a sum over a slice, in C (session 16: a loop over every bucket in Python was
    # 40 % of card_features); arrays hold no Python objects, so the garbage collector skips them
    hour_keys: array[int] = field(default_factory=lambda: array(_INT32))  # UTC hours since the epoch
    hour_counts: array[int] = field(default_factory=lambda: array(_INT32))
    hour_sums: array[float] = field(default_factory=lambda: array("d"))
    countries: Seen = field(default_factory=Seen)
    merchants: Seen = field(default_factory=Seen)
    cells: Cells = field(default_factory=Cells)
    total: int = 0
    settled_to: float = -math.inf
    last_settled: Recent | None = None  # the latest settled event (may have left ``recent``)
    last: Recent | None = None  # the latest transaction by event time
    # where the stream worker read the last event it folded in (partition, offset): a redelivery
    # after a crash is recognised exactly, however old its event time (unused by the batch path)
    position: tuple[int, int] | None = None

    def to_bytes(self) -> bytes:
        """The state in the binary layout below (session 16, format 2: the aggregates as columns)."""
        recent, cells = self.recent, self.cells
        # t, txn_id, amount, lat, lon, country, merchant_id
        columns = list(zip(*recent, strict=True)) or [()] * 7
        floats = [*columns[0], *columns[2], *columns[3], *columns[4]]
        countries, merchants = self.countries, self.merchants
        strings = [*columns[1], *columns[5], *columns[6], *countries.keys, *merchants.keys, *cells.keys]
        for r in (self.last_settled, self.last):
            if r is not None:
                floats += (r.t, r.amount, r.lat, r.lon)
                strings += (r.txn_id, r.country, r.merchant_id)
        at = self.position or (0, -1)
        head = _HEAD.pack(
            _FORMAT, len(recent), len(self.hour_keys), len(countries.keys), len(merchants.keys),
            len(cells.keys),
            (self.last_settled is not None) | (self.last is not None) << 1 | (self.position is not None) << 2,
            self.total, self.settled_to, at[0], at[1],
        )  # fmt: skip
        return b"".join((
            head, _little_endian(self.hour_keys), _little_endian(self.hour_counts),
            _little_endian(self.hour_sums), _little_endian(cells.counts), _little_endian(cells.lats),
            _little_endian(cells.lons), _little_endian(countries.times), _little_endian(merchants.times),
            struct.pack(f"<{len(floats)}d", *floats), orjson.dumps(strings),
        ))  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> CardState:
        if not raw:
            return cls()
        if raw[0] not in (_FORMAT, _FORMAT_1):
            return cls._from_json(raw)
        layout, n_r, n_h, n_c, n_m, n_g, flags, total, settled_to, partition, offset = _HEAD.unpack_from(raw)
        n_ends = (flags & 1) + (flags >> 1 & 1)
        n_f = 4 * n_r + 4 * n_ends  # the doubles besides the columns
        at = _HEAD.size
        if layout == _FORMAT:
            view, columns = memoryview(raw), []
            for code, n in _column_types(n_h, n_g, n_c, n_m):
                columns.append(_column(view, at, code, n))
                at += columns[-1].itemsize * n
            keys, counts, sums, cell_counts, cell_lats, cell_lons, country_times, merchant_times = columns
            floats = struct.unpack_from(f"<{n_f}d", raw, at)
        else:  # format 1 (sessions 12-15): the hours, seen times and cells among the doubles
            every = struct.unpack_from(f"<{n_f + 3 * n_h + n_c + n_m + 3 * n_g}d", raw, at)
            f = 4 * n_r
            pairs = every[f + n_h : f + 3 * n_h]
            hours = zip(map(int, every[f : f + n_h]), map(int, pairs[::2]), pairs[1::2], strict=True)
            keys, counts, sums = _hour_arrays(hours)
            c = f + 3 * n_h  # the seen times, then the cell triples
            country_times, merchant_times = (
                array("d", every[c : c + n_c]),
                array("d", every[c + n_c : c + n_c + n_m]),
            )
            g = c + n_c + n_m
            cell_counts = array(_INT32, map(int, every[g : g + 3 * n_g : 3]))
            cell_lats, cell_lons = (
                array("d", every[g + 1 : g + 3 * n_g : 3]),
                array("d", every[g + 2 : g + 3 * n_g : 3]),
            )
            floats = every[:f] + every[g + 3 * n_g :]
            at += 8 * (3 * n_h + n_c + n_m + 3 * n_g)
        at += 8 * n_f
        strings: list[str] = orjson.loads(memoryview(raw)[at:])
        n_s = 3 * n_r  # strings: recent columns, then country, merchant and cell keys, then the ends
        f = 4 * n_r  # floats: recent columns, then the ends
        recent = list(map(
            Recent, floats[:n_r], strings[:n_r], floats[n_r : 2 * n_r], floats[2 * n_r : 3 * n_r],
            floats[3 * n_r : f], strings[n_r : 2 * n_r], strings[2 * n_r : n_s],
        ))  # fmt: skip
        s = n_s + n_c + n_m
        countries, merchants = (
            Seen(strings[n_s : n_s + n_c], country_times),
            Seen(strings[n_s + n_c : s], merchant_times),
        )
        cells = Cells(strings[s : s + n_g], cell_counts, cell_lats, cell_lons)
        s += n_g
        ends: list[Recent | None] = []
        for present in (flags & 1, flags & 2):
            if present:
                t, amount, lat, lon = floats[f : f + 4]
                ends.append(Recent(t, strings[s], amount, lat, lon, strings[s + 1], strings[s + 2]))
                f, s = f + 4, s + 3
            else:
                ends.append(None)
        return cls(
            recent=recent, hour_keys=keys, hour_counts=counts, hour_sums=sums, countries=countries,
            merchants=merchants, cells=cells, total=total, settled_to=settled_to, last_settled=ends[0],
            last=ends[1], position=(partition, offset) if flags & 4 else None,
        )  # fmt: skip

    @classmethod
    def _from_json(cls, raw: bytes) -> CardState:
        """A state written by fraudstream before session 12 (JSON), read once and rewritten in binary."""
        d: dict[str, Any] = orjson.loads(raw)
        if "hf" in d:  # flat [hour, count, sum, ...]
            flat = d["hf"]
            hours = [(int(flat[i]), int(flat[i + 1]), flat[i + 2]) for i in range(0, len(flat), 3)]
        else:  # written before session 9
            hours = [(int(k), int(v[0]), v[1]) for k, v in d["h"].items()]
        keys, counts, sums = _hour_arrays(hours)
        g = d["g"]  # cell -> [count, sum lat, sum lon]
        return cls(
            recent=[Recent(*r) for r in d["r"]],
            hour_keys=keys,
            hour_counts=counts,
            hour_sums=sums,
            countries=Seen(list(d["c"]), array("d", d["c"].values())),
            merchants=Seen(list(d["m"]), array("d", d["m"].values())),
            cells=Cells(
                list(g),
                array(_INT32, [int(v[0]) for v in g.values()]),
                array("d", [v[1] for v in g.values()]),
                array("d", [v[2] for v in g.values()]),
            ),
            total=d["n"],
            settled_to=-math.inf if d.get("w") is None else d["w"],
            last_settled=Recent(*d["s"]) if d.get("s") else None,
            last=Recent(*d["l"]) if d["l"] else None,
            position=(d["p"][0], d["p"][1]) if d.get("p") else None,
        )


# The binary state (format 2): a header; eight little-endian columns: the hour buckets' hours and
# counts (int32) and sums (doubles), the cells' counts (int32) and latitude and longitude sums
# (doubles), the countries' and the merchants' last-seen times (doubles); the recent entries' t /
# amount / lat / lon (column by column), then t, amount, lat, lon of last_settled and of last when
# present, as little-endian doubles; every string as one JSON list: recent txn ids, countries,
# merchants (column by column), country keys, merchant keys, cell keys, then txn id, country,
# merchant of last_settled and of last when present. Doubles keep every value exactly (JSON
# printed each float in shortest form, which cost more than all the rest). Format 1 (sessions
# 12-15) had the hour keys, the hours' (count, sum) pairs, the seen times and the cells' (count,
# sum lat, sum lon) triples among the doubles; it is still read.
_FORMAT = 2  # the first byte; a JSON state starts with "{"
_FORMAT_1 = 1
_HEAD = struct.Struct("<B5IBqdiq")  # format, 5 lengths, flags, total, settled_to, position
_LITTLE_ENDIAN = sys.byteorder == "little"


def _little_endian(column: array[Any]) -> bytes:
    if _LITTLE_ENDIAN:
        return column.tobytes()
    swapped = array(column.typecode, column)
    swapped.byteswap()
    return swapped.tobytes()


def _column_types(n_h: int, n_g: int, n_c: int, n_m: int) -> tuple[tuple[str, int], ...]:
    """(array type, length) of layout 2's columns, in order: hours, cells, countries, merchants."""
    return (
        (_INT32, n_h), (_INT32, n_h), ("d", n_h), (_INT32, n_g), ("d", n_g), ("d", n_g), ("d", n_c),
        ("d", n_m),
    )  # fmt: skip


def _column(view: memoryview, at: int, code: str, n: int) -> array[Any]:
    """``n`` little-endian values of array type ``code``, from ``view[at:]``."""
    column = array(code)
    column.frombytes(view[at : at + column.itemsize * n])
    if not _LITTLE_ENDIAN:
        column.byteswap()
    return column


def _hour_arrays(
    hours: Iterable[tuple[int, int, float]],
) -> tuple[array[int], array[int], array[float]]:
    """Hour buckets (hour, count, sum) in any order (earlier layouts kept insertion order) as sorted
    columns."""
    rows = sorted(hours)
    return (
        array(_INT32, [r[0] for r in rows]),
        array(_INT32, [r[1] for r in rows]),
        array("d", [r[2] for r in rows]),
    )


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _cell(lat: float, lon: float) -> str:
    return f"{math.floor(lat / HOME_CELL_DEG)}:{math.floor(lon / HOME_CELL_DEG)}"


def _local_time(t: float, lon: float) -> tuple[int, int]:
    """(hour, weekday) at the transaction's place, by solar offset from its longitude."""
    local = t + lon / 15.0 * HOUR
    days = math.floor(local / DAY)
    hour = int((local - days * DAY) // HOUR)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return hour, weekday


def card_features(state: CardState, txn: Txn) -> dict[str, float]:
    """Features of ``txn`` as of its event time; ``state`` must not contain ``txn`` itself."""
    prior = state.recent[: bisect_left(state.recent, (txn.t, txn.txn_id), key=_ORDER)]
    pending = [r for r in prior if r.t >= state.settled_to]  # before txn, not in the aggregates yet
    out = _amount_windows(state, prior, pending, txn)
    prev = prior[-1] if prior else state.last_settled
    if prev is None:
        out["seconds_since_prev"] = out["km_from_prev"] = out["kmh_from_prev"] = math.nan
    else:
        dt = txn.t - prev.t
        km = haversine_km(prev.lat, prev.lon, txn.lat, txn.lon)
        out["seconds_since_prev"] = dt
        out["km_from_prev"] = km
        out["kmh_from_prev"] = km / (max(dt, MIN_SPEED_INTERVAL_S) / HOUR)
    cells = state.cells
    if pending:  # the state's own cells stay as they are
        cells = cells.copy()
        for r in pending:
            cells.add(r.lat, r.lon)
    where = cells.home()
    out["km_from_home"] = math.nan if where is None else haversine_km(where[0], where[1], txn.lat, txn.lon)
    known_country = any(r.country == txn.country for r in pending)
    known_merchant = any(r.merchant_id == txn.merchant_id for r in pending)
    out["new_country"] = 0.0 if known_country or state.countries.fresh(txn.country, txn.t) else 1.0
    out["new_merchant"] = 0.0 if known_merchant or state.merchants.fresh(txn.merchant_id, txn.t) else 1.0
    local_hour, weekday = _local_time(txn.t, txn.lon)
    out["is_night"] = 1.0 if local_hour < 6 else 0.0
    out["is_weekend"] = 1.0 if weekday >= 5 else 0.0
    out["card_prev_txns"] = float(state.total + len(pending))
    return out


def _keys(window: str) -> tuple[str, str, str]:
    return f"card_count_{window}", f"card_sum_{window}", f"card_mean_{window}"


_EXACT_KEYS = tuple((_keys(name), width) for name, width in EXACT_WINDOWS)
_WEEK_KEYS, _MONTH_KEYS = (_keys(name) for name, _ in BUCKET_WINDOWS)


def _amount_windows(
    state: CardState, prior: list[Recent], pending: list[Recent], txn: Txn
) -> dict[str, float]:
    """Count, sum and mean of amounts over every window, ``txn`` included; the 30-day amount ratio."""
    out: dict[str, float] = {}
    for (count_name, sum_name, mean_name), width in _EXACT_KEYS:
        lo = txn.t - width
        count, total = 1.0, txn.amount
        for r in reversed(prior):
            if r.t <= lo:
                break
            count += 1
            total += r.amount
        out[count_name], out[sum_name], out[mean_name] = count, total, total / count
    hour = int(txn.t // HOUR)
    lo_7d, lo_30d = hour - WEEK_H, hour - MONTH_H
    keys, counts, sums = state.hour_keys, state.hour_counts, state.hour_sums
    end = bisect_right(keys, hour)  # the buckets in (lo, hour], oldest first
    start_30d = bisect_right(keys, lo_30d, 0, end)
    start_7d = bisect_right(keys, lo_7d, start_30d, end)
    # count and sum of the card's other transactions in each window
    c30, s30 = float(sum(counts[start_30d:end])), float(sum(sums[start_30d:end]))
    c7, s7 = float(sum(counts[start_7d:end])), float(sum(sums[start_7d:end]))
    for r in pending:
        h = int(r.t // HOUR)
        if h > lo_30d:
            c30 += 1
            s30 += r.amount
            if h > lo_7d:
                c7 += 1
                s7 += r.amount
    amount = txn.amount
    for (count_name, sum_name, mean_name), n, n_sum in ((_WEEK_KEYS, c7, s7), (_MONTH_KEYS, c30, s30)):
        count, total = n + 1, n_sum + amount  # with txn itself
        out[count_name], out[sum_name], out[mean_name] = count, total, total / count
    out["amount"] = amount
    out["amount_to_mean_30d"] = amount / (s30 / c30) if c30 else math.nan
    return out


def update(state: CardState, txn: Txn, pending_s: float = PENDING_S) -> CardState:
    """Add ``txn`` to the state (in place, returned for convenience), settle and expire entries.

    ``pending_s`` must be at least the lateness the caller accepts: an event later than that
    behind the card's latest one would be scored without the pending events it should see.
    """
    entry = Recent(txn.t, txn.txn_id, txn.amount, txn.lat, txn.lon, txn.country, txn.merchant_id)
    insort(state.recent, entry, key=_ORDER)
    if entry.t < state.settled_to:  # beyond the lateness the caller allows: settle it at once
        _fold(state, entry)
    if state.last is None or (entry.t, entry.txn_id) > (state.last.t, state.last.txn_id):
        state.last = entry
    latest = state.last.t
    _settle(state, latest - pending_s)

    keep_from = latest - pending_s - RECENT_KEEP_S  # a late event still sees its full 24 h window
    drop = bisect_left(state.recent, keep_from, key=_AT)
    while drop < len(state.recent) and state.recent[drop].t <= keep_from:
        drop += 1
    drop = max(drop, len(state.recent) - MAX_RECENT)
    if drop:
        _settle(state, math.nextafter(state.recent[drop - 1].t, math.inf))  # never drop a pending one
        del state.recent[:drop]
    return state


def _settle(state: CardState, until: float) -> None:
    """Fold the pending events with t < ``until`` into the aggregates; expire what no event needs."""
    if until <= state.settled_to:
        return
    start = bisect_left(state.recent, state.settled_to, key=_AT)
    for r in state.recent[start:]:
        if r.t >= until:
            break
        _fold(state, r)
    state.settled_to = until
    oldest = int(until // HOUR) - MONTH_H  # no valid event reads an hour this old
    keys = state.hour_keys
    if keys and keys[0] <= oldest:
        gone = bisect_right(keys, oldest)
        del keys[:gone], state.hour_counts[:gone], state.hour_sums[:gone]
    state.countries.expire(until, MAX_COUNTRIES)
    state.merchants.expire(until, MAX_MERCHANTS)


def _fold(state: CardState, r: Recent) -> None:
    hour = int(r.t // HOUR)
    keys = state.hour_keys
    i = bisect_left(keys, hour)
    if i < len(keys) and keys[i] == hour:
        state.hour_counts[i] += 1
        state.hour_sums[i] += r.amount
    else:  # most often the newest hour: an append
        keys.insert(i, hour)
        state.hour_counts.insert(i, 1)
        state.hour_sums.insert(i, r.amount)
    state.countries.see(r.country, r.t)
    state.merchants.see(r.merchant_id, r.t)
    state.cells.add(r.lat, r.lon)
    if len(state.cells.keys) > MAX_CELLS:
        state.cells.drop_smallest()
    state.total += 1
    if state.last_settled is None or (r.t, r.txn_id) > (state.last_settled.t, state.last_settled.txn_id):
        state.last_settled = r


def contains(state: CardState, txn_id: str) -> bool:
    """Whether ``txn_id`` is among the exact recent events (a redelivery within 24 h)."""
    return any(r.txn_id == txn_id for r in state.recent)
