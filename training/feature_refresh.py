"""The trainer's merchant features follow the decision audit's day.

A merchant's features for day D count its transactions and known frauds of the days before D less the
label delay (``features.merchant``), so a new day brings new features. The scheduled run (daily, 02:00)
built them, and a retrain request: between runs the workers scored with the features of the day the
last run built. In production that is the first two hours of each day; in the demo, whose simulated
clock runs a day in ~10 s, it was most of the run. Measured (``docs/bench/merchant-refresh-s37.json``:
the demo's world, a champion trained on 90 days, the next 60 days scored): AP 0.71 with the features
rebuilt every day, 0.64 every 7 days, 0.59 every 15, 0.42 left at the first day's; a compromised
terminal's frauds flagged 44 %, 34 %, 32 % and 7 % of the time.

``FeatureRefresh.maybe_run`` (the trainer calls it between polls, as the drift check) reads the audit's
clock every ``FRAUDSTREAM_FEATURES_REFRESH_S``; once the clock is in a day the features were not
built for, it exports the settled days (the day whose transactions the new window takes in settles
that same moment) and builds and materialises the features for the clock's day.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from app.errors import FraudstreamError, first_line
from app.settings import Settings

log = logging.getLogger("fraudstream.trainer")
REFRESHED = "trainer: the audit's day "  # the log line of a refresh: the day, then what it did


class FeatureRefresh:
    def __init__(
        self,
        settings: Settings,
        history: Path,
        *,
        audit_clock: Callable[[], datetime | None] | None = None,
        refresh: Callable[[], datetime | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.history, self.clock = settings, history, clock
        self.audit_clock = audit_clock or self._audit_clock
        self.refresh = refresh or self._refresh
        self.checked: float | None = None
        self.day: date | None = None  # the day the features were last built for here

    def maybe_run(self) -> None:
        every = self.settings.features_refresh_s
        if every <= 0 or (self.checked is not None and self.clock() - self.checked < every):
            return
        self.checked = self.clock()
        try:
            now = self.audit_clock()
            if now is None or (self.day is not None and now.date() <= self.day):
                return
            built = self.refresh()
            if built is not None:
                self.day = built.date()
        except FraudstreamError as exc:  # PostgreSQL away, a bad history day: try again next period
            log.warning("trainer: merchant features not refreshed: %s", exc)

    def _audit_clock(self) -> datetime | None:
        import psycopg  # noqa: PLC0415

        from app.scoring.store import AUDIT_CLOCK  # noqa: PLC0415

        try:
            with psycopg.connect(self.settings.pg_conninfo(reveal=True), connect_timeout=10) as conn:
                if conn.execute("select to_regclass('decisions')").fetchone() == (None,):
                    return None
                row = conn.execute(AUDIT_CLOCK).fetchone()
        except psycopg.Error as exc:
            raise FraudstreamError(f"the audit's clock: PostgreSQL: {first_line(exc)}") from exc
        return row[0] if row else None

    def _refresh(self) -> datetime | None:
        """Export the settled days, then build the features for the audit's day; its clock."""
        from app.audit_export import export_audit  # noqa: PLC0415
        from features.jobs import build_merchant_features  # noqa: PLC0415

        started = time.monotonic()
        exported = export_audit(
            self.settings.pg_conninfo(reveal=True), self.history, self.settings.label_delay_days
        )
        if exported.clock is None:
            return None
        built = build_merchant_features(self.settings, self.history, through=exported.clock)
        log.info("%s%s: %s; %s (%.1fs)", REFRESHED, exported.clock.date(), exported.line(), built,
                 time.monotonic() - started)  # fmt: skip
        return exported.clock
