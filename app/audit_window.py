"""A window of the decision audit, with each decision's latest label: whole, or an even sample of it.

A window can hold more decisions than a report should read: the compose simulator's 50 txn/s is 4.3
million a day and 30 million a week (reading and measuring a million took ~6.5 s and 0.9 GB here).
With ``at_most``, a window holding more is sampled: it is cut into ``SLICES`` equal slots, and
the decisions scored in a stretch of each slot, from a random offset (wrapping round to the slot's
start), are read. The stretches' length is set so that about ``at_most`` are. Every decision has
the same chance to be read whenever it was scored, so the labels' maturity, the traffic's hours and
the mix of models are those of the whole window (the latest decisions alone would have the fewest
chargebacks back). Evenly spaced stretches could fall in step with regular traffic: the random
offsets cannot. A probe of a thousandth of the window's time estimates its size first; where that
says under twice ``at_most``, the window's decisions are counted instead. Each stretch is an index
range scan on ``scored_at``, so the cost follows the sample, not the window. A probe that reads fewer
than ``PROBE_ROWS`` is widened tenfold until it does: at 40 rows it was off by over a third now and
then (a CI run read 2,934 decisions for 4,000), at 1,000 it is off by a few per cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from psycopg import sql

SLICES = 1_000  # equal slots of a sampled window, a stretch read in each
PROBE = 1e-3  # the share of the window's time read to estimate how many decisions it holds
PROBE_ROWS = 1_000  # ... widened tenfold until it reads this many (a Poisson count's spread: ~3 %)
PROBE_MAX = 0.1  # ... or this share: a window that holds fewer is counted (below twice at_most) or tiny


@dataclass(frozen=True)
class Window:
    rows: list[tuple[Any, ...]]
    fraction: float  # the share of the window's time read: 1, all of it

    def sample(self) -> dict[str, Any]:
        """What was read: the share of the window's time, the rows, the window's estimated size."""
        return {"fraction": round(self.fraction, 6), "decisions_read": len(self.rows),
                "decisions_in_window": round(len(self.rows) / self.fraction)}  # fmt: skip


def stretches(
    since: datetime, until: datetime, fraction: float, seed: int = 0
) -> list[tuple[datetime, datetime]]:
    """``SLICES`` equal slots of [since, until); in each, ``fraction`` of it from a random offset, wrapping
    round to the slot's start: every instant is in them with chance ``fraction``."""
    step = (until - since) / SLICES
    width = step * fraction
    out = []
    for i, offset in enumerate(np.random.default_rng(seed).random(SLICES)):
        slot = since + i * step
        start = slot + step * float(offset)
        spill = start + width - (slot + step)
        if spill > timedelta(0):
            out += [(slot, slot + spill), (start, slot + step)]
        else:
            out.append((start, start + width))
    return [(lo, min(hi, until)) for lo, hi in out if lo < until]  # step is rounded to microseconds


def decided_in_window(
    conninfo: str, columns: sql.Composable, since: datetime, until: datetime, at_most: int | None
) -> Window:
    """``select columns`` over ``decisions d`` scored in [since, until), each joined to its latest label
    not retracted as ``l`` (none: nulls); about ``at_most`` of them, sampled, where the window holds more."""
    import psycopg  # noqa: PLC0415

    from app.ui.store import LATEST_LABELS  # noqa: PLC0415

    select = sql.SQL("select {} from {} left join ({}) l using (txn_id)")
    sampled = sql.SQL(
        "unnest(%s::timestamptz[], %s::timestamptz[]) s(lo, hi) join decisions d"
        " on d.scored_at >= s.lo and d.scored_at < s.hi"
    )

    def bounds(fraction: float) -> tuple[list[datetime], list[datetime]]:
        lo, hi = zip(*stretches(since, until, fraction), strict=True)
        return list(lo), list(hi)

    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        fraction = 1.0
        if at_most is not None:
            # the planner takes each stretch for a tenth of the table and compiles the query (JIT):
            # ~90 ms of a 140 ms probe of 20,000 rows
            conn.execute("set jit = off")
            probe = PROBE
            while True:  # a probe of a few dozen rows is off by a third now and then: widen it till it is not
                row = conn.execute(
                    sql.SQL("select count(*) from {}").format(sampled), bounds(probe)
                ).fetchone()
                seen = row[0] if row else 0
                if seen >= PROBE_ROWS or probe >= PROBE_MAX:
                    break
                probe *= 10
            estimate = seen / probe
            if estimate <= 2 * at_most:  # near the limit a few per cent matter: count them
                row = conn.execute(
                    "select count(*) from decisions where scored_at >= %s and scored_at < %s", (since, until)
                ).fetchone()
                estimate = row[0] if row else 0
            fraction = min(1.0, at_most / estimate) if estimate else 1.0
        if fraction < 1.0:
            rows = conn.execute(select.format(columns, sampled, LATEST_LABELS), bounds(fraction)).fetchall()
        else:
            whole = select.format(columns, sql.SQL("decisions d"), LATEST_LABELS) + sql.SQL(
                " where d.scored_at >= %s and d.scored_at < %s"
            )
            rows = conn.execute(whole, (since, until)).fetchall()
    return Window(rows, fraction)
