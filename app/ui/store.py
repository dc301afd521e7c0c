"""PostgreSQL for the UI: users, sessions, labels, the action log, and the alert queries.

Every statement is parameterised; sort columns come from a fixed allow-list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from app.errors import FraudstreamError
from app.pan import mask_pans
from app.pg import apply_schema, connect
from app.schema import SCENARIOS
from app.ui.auth import ROLES, check_password, hash_password, token

SCHEMA = """
create table if not exists users (
    username      text primary key,
    password_hash text not null,
    role          text not null check (role in ('analyst', 'admin')),
    created_at    timestamptz not null default now()
);
create table if not exists ui_sessions (
    id          text primary key,
    username    text not null references users (username) on delete cascade,
    csrf        text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
create table if not exists labels (
    id            bigserial primary key,
    txn_id        text not null,
    card_id       text not null,
    is_fraud      boolean not null,
    source        text not null check (source in ('analyst', 'chargeback')),
    actor         text,
    note          text not null default '',
    label_time    timestamptz not null default now(),
    retracted_at  timestamptz
);
create index if not exists labels_txn on labels (txn_id);
create table if not exists action_log (
    id      bigserial primary key,
    at      timestamptz not null default now(),
    actor   text not null,
    action  text not null,
    target  text,
    detail  jsonb not null default '{}'
);
alter table users add column if not exists disabled_at timestamptz;
-- a fraud's type (app.schema.SCENARIOS): the analyst's verdict or the chargeback's reason; null: not given
alter table labels add column if not exists fraud_type text;
-- the alert whose page the verdict was given on, when not its own (``UiStore.verdict``'s ``also``)
alter table labels add column if not exists given_on text;
-- what the team knows about a card beyond its verdicts ("the holder travels in Spain until 12-10")
create table if not exists card_notes (
    id       bigserial primary key,
    card_id  text not null,
    actor    text not null,
    note     text not null,
    at       timestamptz not null default now()
);
create index if not exists card_notes_card on card_notes (card_id, at);
create index if not exists labels_card on labels (card_id) where note <> '';
create index if not exists action_log_settled on action_log (at) where action = 'settle';
create index if not exists action_log_logins on action_log (actor, at)
    where action in ('login', 'login_failed');
create index if not exists action_log_failed_address on action_log ((detail->>'address'), at)
    where action = 'login_failed';
"""

# Each labelled transaction's label: its latest not retracted (an analyst's undo retracts). One pass
# over the labels, to hash-join with decisions (drift, live performance); a lookup per decision
# took the server 2.6-2.8 s for a million decisions, this 0.8-1.0 s.
LATEST_LABELS = sql.SQL(
    "select distinct on (txn_id) txn_id, is_fraud, label_time, fraud_type from labels"
    " where retracted_at is null"
    " order by txn_id, id desc"
)

SORTS = {
    "score": "a.score desc",
    "amount": "a.amount desc",
    "age": "a.event_time asc",
    "newest": "a.event_time desc",
}
DECISIONS = ("review", "decline")
# An alert whose verdict was taken back: open again, unless a chargeback has the last word (its
# verdict, as ``settle_by_chargebacks`` gives it, and nothing logged as a settlement: the undo is)
REOPEN = """
update alerts a set status = coalesce(c.status, 'open'),
    closed_at = case when c.status is null then null else now() end, closed_by = c.closed_by
from (select %s::text as txn_id) t
left join lateral (
    select case when is_fraud then 'fraud' else 'legit' end as status, 'chargeback' as closed_by
    from labels where labels.txn_id = t.txn_id and source = 'chargeback'
) c on true
where a.txn_id = t.txn_id
"""
NEXT_ALERT_LOCK = 0x66736E61  # the advisory lock that serialises "Next alert" picks ("fsna")
BLOCK_KINDS = ("card", "merchant")


@dataclass(frozen=True)
class User:
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    id: str
    user: User
    csrf: str
    created_at: datetime


class UiStore:
    def __init__(self, conninfo: str, session_hours: float = 12.0, assignment_s: float = 1800.0) -> None:
        self.conninfo = conninfo
        self.session_hours = session_hours
        # an alert an analyst took is theirs this long; then the queue's "next" may hand it to another
        self.hold = timedelta(seconds=assignment_s)

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        return connect(self.conninfo, connect_timeout=5)

    def migrate(self) -> None:
        from app.scoring.store import SCHEMA as DECISIONS_SCHEMA  # noqa: PLC0415 - alerts live there
        from training.registry import SCHEMA as REGISTRY_SCHEMA  # noqa: PLC0415

        with self._connect() as conn:
            apply_schema(conn, DECISIONS_SCHEMA, REGISTRY_SCHEMA, SCHEMA)

    # users and sessions
    def add_user(self, username: str, password: str, role: str) -> None:
        if role not in ROLES:
            raise FraudstreamError(f"unknown role {role!r} (analyst or admin)")
        if len(password) < 10:
            raise FraudstreamError("password too short: at least 10 characters")
        if (
            not username
            or len(username) > 64
            or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise FraudstreamError("username: 1-64 letters, digits, '.', '-' or '_'")
        with self._connect() as conn:
            try:
                conn.execute(
                    "insert into users (username, password_hash, role) values (%s, %s, %s)",
                    (username, hash_password(password), role),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise FraudstreamError(f"user {username!r} exists already") from exc

    def users(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute(
                "select username, role, created_at, disabled_at from users order by username"
            ).fetchall()

    def set_disabled(self, username: str, disabled: bool, actor: str) -> None:
        """Disable a user (their sessions end at once, they cannot log in) or enable them again."""
        if disabled and username == actor:
            raise FraudstreamError("you cannot disable yourself")
        with self._connect() as conn, conn.transaction():
            found = conn.execute(
                "update users set disabled_at = case when %s then coalesce(disabled_at, now()) end"
                " where username = %s returning username",
                (disabled, username),
            ).fetchone()
            if found is None:
                raise FraudstreamError(f"no user {username!r}")
            if disabled:
                conn.execute("delete from ui_sessions where username = %s", (username,))
            self._log(conn, actor, "disable_user" if disabled else "enable_user", username, {})

    def set_password(self, username: str, password: str, actor: str) -> None:
        """A new password (an admin's reset, or the user's own); the user's sessions end."""
        if len(password) < 10:
            raise FraudstreamError("password too short: at least 10 characters")
        with self._connect() as conn, conn.transaction():
            found = conn.execute(
                "update users set password_hash = %s where username = %s returning username",
                (hash_password(password), username),
            ).fetchone()
            if found is None:
                raise FraudstreamError(f"no user {username!r}")
            conn.execute("delete from ui_sessions where username = %s", (username,))
            self._log(conn, actor, "set_password", username, {})

    def locked_until(self, username: str, max_failures: int, window: timedelta) -> datetime | None:
        """When ``username`` may try again, after ``max_failures`` failed logins within ``window`` (none
        since a successful one); None when they may now. Per name, so an attacker guessing passwords
        gets ``max_failures`` tries a window, whoever the name belongs to."""
        return self._failed_until(
            "actor = %s and at > coalesce((select max(at) from action_log where actor = %s"
            " and action = 'login'), '-infinity')",
            (username[:64], username[:64]), max_failures, window,
        )  # fmt: skip

    def address_locked_until(self, address: str, max_failures: int, window: timedelta) -> datetime | None:
        """When ``address`` may try again, after ``max_failures`` failed logins from it within ``window``,
        whatever the names; None when it may now (or ``max_failures`` is 0). Against one client trying
        a few passwords on many names, which the per-name wait does not slow; a success does not reset
        it (anyone with an account could, for their guesser)."""
        if not max_failures:
            return None
        return self._failed_until("detail->>'address' = %s", (address,), max_failures, window)

    def _failed_until(
        self, which: LiteralString, params: tuple[Any, ...], max_failures: int, window: timedelta
    ) -> datetime | None:
        """The end of the wait after ``max_failures`` failed logins within ``window`` among those
        ``which`` selects (a condition on ``action_log``): the oldest of the last ``max_failures`` ages
        out; None when there were fewer."""
        with self._connect() as conn:
            rows = conn.execute(
                sql.SQL(
                    "select at from action_log where action = 'login_failed' and at > now() - %s and {}"
                    " order by at desc limit %s"
                ).format(sql.SQL(which)),
                (window, *params, max_failures),
            ).fetchall()
        if len(rows) < max_failures:
            return None
        until: datetime = rows[-1]["at"] + window
        return until

    def login(self, username: str, password: str) -> Session | None:
        with self._connect() as conn:
            row = conn.execute(
                "select password_hash, role from users where username = %s and disabled_at is null",
                (username,),
            ).fetchone()
            if row is None or not check_password(password, row["password_hash"]):
                return None
            session = Session(token(), User(username, row["role"]), token(), datetime.now(UTC))
            conn.execute(
                "insert into ui_sessions (id, username, csrf, created_at, expires_at)"
                " values (%s, %s, %s, %s, %s)",
                (session.id, username, session.csrf, session.created_at,
                 session.created_at + timedelta(hours=self.session_hours)),
            )  # fmt: skip
            conn.execute("delete from ui_sessions where expires_at < now()")
        return session

    def session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._connect() as conn:
            row = conn.execute(
                "select s.id, s.csrf, s.created_at, u.username, u.role"
                " from ui_sessions s join users u using (username)"
                " where s.id = %s and s.expires_at > now() and u.disabled_at is null",
                (session_id,),
            ).fetchone()
        if row is None:
            return None
        return Session(row["id"], User(row["username"], row["role"]), row["csrf"], row["created_at"])

    def logout(self, session_id: str) -> None:
        with self._connect() as conn:
            conn.execute("delete from ui_sessions where id = %s", (session_id,))

    # alerts
    def alerts(
        self, *, status: str = "open", decision: str | None = None, min_score: float | None = None,
        sort: str = "score", page: int = 1, per_page: int = 25, assigned: str = "", user: str = "",
        by_card: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
        """A page of alerts and their total; ``assigned``: ``me`` (``user``'s), ``none`` (nobody's, or
        held longer than the hold), anything else: all; ``by_card``: one row per card, its alert with
        the highest score among those the filters keep (the total counts cards)."""
        where = ["a.status = %s"]
        params: list[Any] = [status]
        if decision in DECISIONS:
            where.append("a.decision = %s")
            params.append(decision)
        if min_score is not None:
            where.append("a.score >= %s")
            params.append(min_score)
        if assigned == "me":
            where.append("a.assigned_to = %s and a.assigned_at > now() - %s")
            params += [user, self.hold]
        elif assigned == "none":
            where.append("(a.assigned_to is null or a.assigned_at <= now() - %s)")
            params.append(self.hold)
        order = sql.SQL(SORTS.get(sort, SORTS["score"]))  # allow-listed fragments only
        clause = sql.SQL(" and ").join(sql.SQL(w) for w in where)
        query = sql.SQL(
            "select a.txn_id, a.card_id, a.event_time, a.amount, a.score, a.decision, a.model_version,"
            " a.status, a.created_at, d.txn->>'currency' as currency, d.txn->>'country' as country,"
            " d.txn->>'channel' as channel, d.reasons->0->>'text' as top_reason,"
            " case when a.assigned_at > now() - %s then a.assigned_to end as holder,"
            " (select count(*) from alerts o where o.card_id = a.card_id and o.status = 'open') as card_open"
            " from {} order by {}, a.txn_id limit %s offset %s"
        ).format(
            sql.SQL(  # by card: each card's first in score order (a window over the filtered alerts)
                "(select a.*, row_number() over cards = 1 as top_of_card from alerts a where {}"
                " window cards as (partition by a.card_id order by a.score desc, a.txn_id)) a"
                " join decisions d using (txn_id) where a.top_of_card"
                if by_card
                else "alerts a join decisions d using (txn_id) where {}"  # the index on (status, score)
            ).format(clause),
            order,
        )
        counted = sql.SQL("count(distinct a.card_id)" if by_card else "count(*)")
        with self._connect() as conn:
            total = conn.execute(
                sql.SQL("select {} as n from alerts a where {}").format(counted, clause), params
            ).fetchone()
            offset = (max(page, 1) - 1) * per_page
            rows = conn.execute(query, [self.hold, *params, per_page, offset]).fetchall()
        return rows, int(total["n"]) if total else 0

    # who works which alert
    def take(self, txn_id: str, actor: str, *, over: bool = False) -> None:
        """Assign an open alert to ``actor``; refused while another analyst holds it, unless ``over``
        (taking it over; logged with whom from)."""
        with self._connect() as conn, conn.transaction():
            holder = self._open_alerts(conn, [txn_id], actor, over=over, to="work it")[0]["holder"]
            conn.execute(
                "update alerts set assigned_to = %s, assigned_at = now() where txn_id = %s", (actor, txn_id)
            )
            self._log(conn, actor, "take", txn_id, {"from": holder} if holder not in {None, actor} else {})

    def _open_alerts(
        self, conn: psycopg.Connection[Any], txn_ids: Sequence[str], actor: str, *, over: bool, to: str
    ) -> list[dict[str, Any]]:
        """The open alerts' cards and holders, in ``txn_ids``' order, locked for the transaction (in
        txn_id order, so that two analysts closing overlapping sets wait rather than deadlock); refused
        when one is missing or closed, and while another analyst holds one, unless taking it ``over``."""
        rows = conn.execute(
            "select txn_id, card_id, status,"
            " case when assigned_at > now() - %s then assigned_to end as holder"
            " from alerts where txn_id = any(%s) order by txn_id for update",
            (self.hold, list(txn_ids)),
        ).fetchall()
        found = {r["txn_id"]: r for r in rows}
        for txn_id in txn_ids:
            alert = found.get(txn_id)
            if alert is None:
                raise FraudstreamError(f"no alert {txn_id!r}")
            if alert["status"] != "open":
                raise FraudstreamError(f"alert {txn_id} is closed already ({alert['status']})")
            if alert["holder"] not in {None, actor} and not over:
                raise FraudstreamError(f"alert {txn_id} is {alert['holder']}'s: take it over to {to}")
        return [dict(found[t]) for t in txn_ids]

    def release(self, txn_id: str, actor: str) -> None:
        with self._connect() as conn, conn.transaction():
            released = conn.execute(
                "update alerts set assigned_to = null, assigned_at = null where txn_id = %s"
                " and assigned_to = %s returning txn_id",
                (txn_id, actor),
            ).fetchone()
            if released is None:
                raise FraudstreamError(f"alert {txn_id} is not yours")
            self._log(conn, actor, "release", txn_id, {})

    def next_alert(self, actor: str) -> str | None:
        """Assign the open alert with the highest score that nobody holds, on a card no other analyst is
        working, to ``actor``; its txn_id, or None when there is none. Two analysts never get one card's
        alerts from here (they would both call its holder): the picks are serialised by an advisory
        lock (a pick is one short statement)."""
        with self._connect() as conn, conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (NEXT_ALERT_LOCK,))
            row = conn.execute(
                "update alerts set assigned_to = %s, assigned_at = now() where txn_id = ("
                " select txn_id from alerts a where status = 'open'"
                " and (assigned_to is null or assigned_at <= now() - %s)"
                " and not exists (select 1 from alerts h where h.card_id = a.card_id and h.status = 'open'"
                " and h.assigned_to <> %s and h.assigned_at > now() - %s)"
                " order by score desc, txn_id limit 1 for update skip locked) returning txn_id",
                (actor, self.hold, actor, self.hold),
            ).fetchone()
            if row is not None:
                self._log(conn, actor, "take", row["txn_id"], {"next": True})
        return None if row is None else str(row["txn_id"])

    def queue_health(self, target: timedelta, window: timedelta = timedelta(hours=24)) -> dict[str, Any]:
        """What a fraud team's lead looks at: the open alerts (held, the oldest one's creation, how many
        have waited longer than ``target``) and the alerts the team closed within ``window`` (how many,
        how many fraud, the time from alert to verdict: median, 90th percentile, and how many beyond
        ``target``), and apart the open ones chargebacks settled (``settle_by_chargebacks``: not the
        team's speed; a clearance a chargeback overturned leaves the team's figures with it)."""
        with self._connect() as conn:
            queue = conn.execute(
                "select count(*) as open, count(*) filter (where assigned_at > now() - %s) as held,"
                " min(created_at) as oldest, count(*) filter (where created_at <= now() - %s) as late"
                " from alerts where status = 'open'",
                (self.hold, target),
            ).fetchone()
            closed = conn.execute(
                "select count(*) as closed, count(*) filter (where status = 'fraud') as fraud,"
                " percentile_cont(array[0.5, 0.9]) within group"
                "   (order by extract(epoch from closed_at - created_at)) as to_verdict_s,"
                " count(*) filter (where closed_at - created_at > %s) as closed_late"
                " from alerts where status <> 'open' and closed_at > now() - %s"
                " and closed_by is distinct from 'chargeback'",
                (target, window),
            ).fetchone()
            settled = conn.execute(  # open alerts only: an overturned clearance was the team's work
                "select count(*) as by_chargeback from action_log where action = 'settle' and at > now() - %s"
                " and detail->>'alert_was' = 'open'",
                (window,),
            ).fetchone()
        assert queue is not None  # an aggregate always returns a row
        assert closed is not None
        assert settled is not None
        median, p90 = closed.pop("to_verdict_s") or (None, None)
        return {**queue, **closed, **settled, "median_to_verdict_s": median, "p90_to_verdict_s": p90}

    def fraud_losses(self, since: datetime) -> list[dict[str, Any]]:
        """Confirmed frauds (each transaction's latest label not retracted) of transactions since
        ``since``, per UTC week of the transaction, fraud type (None: not known) and currency: how many,
        their amount, and what the decisions did with them (declined: money stopped; review: flagged
        for an analyst; approved: missed)."""
        query = sql.SQL(
            "select date_trunc('week', d.event_time at time zone 'UTC')::date as week, l.fraud_type,"
            " d.txn->>'currency' as currency, count(*) as frauds, sum(d.amount) as amount,"
            " count(*) filter (where d.decision = 'decline') as declined,"
            " coalesce(sum(d.amount) filter (where d.decision = 'decline'), 0) as declined_amount,"
            " count(*) filter (where d.decision = 'review') as reviewed,"
            " count(*) filter (where d.decision = 'approve') as approved,"
            " coalesce(sum(d.amount) filter (where d.decision = 'approve'), 0) as approved_amount"
            " from ({}) l join decisions d using (txn_id) where l.is_fraud and d.event_time >= %s"
            " group by 1, 2, 3 order by 1 desc, 4 desc"
        ).format(LATEST_LABELS)
        with self._connect() as conn:
            return conn.execute(query, (since,)).fetchall()

    def analyst_figures(self, since: datetime) -> list[dict[str, Any]]:
        """The team lead's check, per analyst, of their labels on alerts given since ``since`` (not
        retracted): how many, how many fraud, how many with another alert's (the card's others ticked),
        the median and 90th percentile time from alert to label, and the clearances a chargeback
        overturned (a card holder disputed a transaction the analyst called legitimate)."""
        with self._connect() as conn:
            return conn.execute(
                "select l.actor, count(*) as labels, count(*) filter (where l.is_fraud) as fraud,"
                " count(*) filter (where l.given_on is not null) as with_card,"
                " percentile_cont(0.5) within group (order by l.to_label_s) as median_s,"
                " percentile_cont(0.9) within group (order by l.to_label_s) as p90_s,"
                " count(*) filter (where not l.is_fraud and exists (select 1 from labels c"
                " where c.txn_id = l.txn_id and c.source = 'chargeback' and c.is_fraud)) as overturned"
                " from (select labels.*, extract(epoch from label_time - a.created_at) as to_label_s"
                " from labels join alerts a using (txn_id)) l"
                " where l.source = 'analyst' and l.retracted_at is null and l.label_time >= %s"
                " group by l.actor order by labels desc, l.actor",
                (since,),
            ).fetchall()

    def overturned(self, since: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """The clearances ``analyst_figures`` counts as overturned, newest first: each transaction, who
        called it legitimate and when, and when its fraud chargeback came: the cases a lead reviews."""
        with self._connect() as conn:
            return conn.execute(
                "select l.txn_id, l.actor, l.label_time as cleared_at, l.note,"
                " c.label_time as charged_back_at, d.amount, d.txn->>'currency' as currency, d.score"
                " from labels l join alerts a using (txn_id) join decisions d using (txn_id)"
                " join labels c on c.txn_id = l.txn_id and c.source = 'chargeback' and c.is_fraud"
                " where l.source = 'analyst' and not l.is_fraud and l.retracted_at is null"
                " and l.label_time >= %s order by c.label_time desc, l.txn_id limit %s",
                (since, limit),
            ).fetchall()

    def alert(self, txn_id: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            return conn.execute(
                "select d.*, a.status, a.closed_at, a.closed_by from decisions d join alerts a using (txn_id)"
                " where d.txn_id = %s",
                (txn_id,),
            ).fetchone()

    def decision(self, txn_id: str) -> dict[str, Any] | None:
        """Any decision in the database, flagged or not; ``status`` (and the closing columns) are None
        when it raised no alert; ``holder``: the analyst who holds its alert, if any."""
        with self._connect() as conn:
            return conn.execute(
                "select d.*, a.status, a.closed_at, a.closed_by, a.assigned_at,"
                " case when a.assigned_at > now() - %s then a.assigned_to end as holder"
                " from decisions d left join alerts a using (txn_id) where d.txn_id = %s",
                (self.hold, txn_id),
            ).fetchone()

    def card_known(self, card_id: str) -> bool:
        with self._connect() as conn:
            found = conn.execute("select 1 from decisions where card_id = %s limit 1", (card_id,)).fetchone()
        return found is not None

    def card_decisions(self, card_id: str, page: int = 1, per_page: int = 50) -> list[dict[str, Any]]:
        """A card's decisions, newest first, each with its alert's status and its latest label."""
        with self._connect() as conn:
            return conn.execute(
                "select d.txn_id, d.event_time, d.amount, d.score, d.decision, d.model_version,"
                " d.merchant_id, d.txn->>'currency' as currency, d.txn->>'country' as country,"
                " d.txn->>'channel' as channel, d.reasons->0->>'text' as top_reason, a.status,"
                " l.is_fraud, l.source as label_source, l.fraud_type"
                " from decisions d left join alerts a using (txn_id)"
                " left join lateral (select is_fraud, source, fraud_type from labels"
                " where labels.txn_id = d.txn_id and retracted_at is null order by id desc limit 1) l on true"
                " where d.card_id = %s order by d.event_time desc, d.txn_id limit %s offset %s",
                (card_id, per_page, (max(page, 1) - 1) * per_page),
            ).fetchall()

    def archived_through(self) -> datetime | None:
        """The latest scored_at the archive (``app.audit_archive``) has taken decisions from, if any."""
        with self._connect() as conn:
            exists = conn.execute("select to_regclass('audit_archives') is not null as yes").fetchone()
            if not (exists and exists["yes"]):
                return None
            row = conn.execute("select max(last_scored) as last from audit_archives").fetchone()
        return row["last"] if row else None

    def card_history(self, card_id: str, before: datetime, limit: int = 15) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute(
                "select txn_id, event_time, amount, score, decision, txn->>'country' as country,"
                " txn->>'merchant_id' as merchant_id, txn->>'channel' as channel,"
                " (features->>'km_from_prev')::float as km, (features->>'kmh_from_prev')::float as kmh"
                " from decisions where card_id = %s and event_time <= %s order by event_time desc limit %s",
                (card_id, before, limit),
            ).fetchall()

    def open_on_card(self, card_id: str, other_than: str, limit: int = 100) -> list[dict[str, Any]]:
        """The card's other open alerts, oldest first, each with its holder: a card under attack raises
        many (the demo's 263 open alerts were on 77 cards), and one look at the card settles most."""
        with self._connect() as conn:
            return conn.execute(
                "select a.txn_id, a.event_time, a.amount, a.score, a.decision, d.merchant_id,"
                " d.txn->>'currency' as currency, d.txn->>'country' as country, d.txn->>'channel' as channel,"
                " d.reasons->0->>'text' as top_reason,"
                " case when a.assigned_at > now() - %s then a.assigned_to end as holder"
                " from alerts a join decisions d using (txn_id)"
                " where a.card_id = %s and a.status = 'open' and a.txn_id <> %s"
                " order by a.event_time, a.txn_id limit %s",
                (self.hold, card_id, other_than, limit),
            ).fetchall()

    def card_notes(self, card_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """What the team knows about a card, newest first: its notes, and the notes of the verdicts on
        its transactions (retracted ones left out); ``kind``: note, fraud or legitimate."""
        with self._connect() as conn:
            return conn.execute(
                "(select at, actor, 'note' as kind, null as txn_id, note from card_notes where card_id = %s"
                " union all select label_time, coalesce(actor, source),"
                " case when is_fraud then 'fraud' else 'legitimate' end, txn_id, note from labels"
                " where card_id = %s and note <> '' and retracted_at is null)"
                " order by at desc limit %s",
                (card_id, card_id, limit),
            ).fetchall()

    def add_card_note(self, card_id: str, actor: str, note: str) -> None:
        note = mask_pans(note.strip()[:2000])  # a card number typed into a note is never stored
        if not note:
            raise FraudstreamError("an empty note")
        with self._connect() as conn, conn.transaction():
            conn.execute(
                "insert into card_notes (card_id, actor, note) values (%s, %s, %s)", (card_id, actor, note)
            )
            self._log(conn, actor, "card_note", card_id, {"note": note})

    def labels_for(self, txn_id: str) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute("select * from labels where txn_id = %s order by id", (txn_id,)).fetchall()

    def verdict(
        self, txn_id: str, actor: str, is_fraud: bool, note: str, *, block_card: bool = False,
        fraud_type: str | None = None, also: Sequence[str] = (),
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Close an open alert with the analyst's verdict; a label row and an action-log row; with
        ``block_card`` (fraud only) the card joins the block list; ``fraud_type`` (fraud only): one of
        ``SCENARIOS``, or None for not known. ``also``: other open alerts of the same card the same
        verdict is true of (a card under attack raises many); each gets its own label and log row,
        which say which alert the verdict was given on; all or none are closed. Returns the labels,
        ``txn_id``'s first."""
        note = mask_pans(note[:2000])  # a card number typed into a note is never stored
        fraud_type = fraud_type_of(fraud_type, is_fraud)
        txn_ids = [txn_id, *sorted(set(also) - {txn_id})]
        with self._connect() as conn, conn.transaction():
            alerts = self._open_alerts(conn, txn_ids, actor, over=False, to="give a verdict")
            card_id = alerts[0]["card_id"]
            if other := next((a["txn_id"] for a in alerts if a["card_id"] != card_id), None):
                raise FraudstreamError(f"alert {other} is on another card than {txn_id}'s")
            labels = []
            for t in txn_ids:
                labels.append(
                    conn.execute(
                        "insert into labels (txn_id, card_id, is_fraud, source, actor, note, fraud_type,"
                        " given_on) values (%s, %s, %s, 'analyst', %s, %s, %s, %s) returning *",
                        (t, card_id, is_fraud, actor, note, fraud_type, None if t == txn_id else txn_id),
                    ).fetchone()
                )
                conn.execute(
                    "update alerts set status = %s, closed_at = now(), closed_by = %s where txn_id = %s",
                    ("fraud" if is_fraud else "legit", actor, t),
                )
                detail = {"is_fraud": is_fraud, "note": note, "fraud_type": fraud_type}
                self._log(conn, actor, "verdict", t, detail if t == txn_id else {**detail, "with": txn_id})
            if block_card and is_fraud:
                self._block(conn, "card", card_id, actor, f"fraud confirmed on {txn_id}", txn_id=txn_id)
        return [label for label in labels if label is not None]

    def report_fraud(
        self, txn_id: str, actor: str, note: str, *, block_card: bool = False, fraud_type: str | None = None
    ) -> dict[str, Any]:
        """Label a decision as fraud after the fact (a card holder disputed it, say): one that raised no
        alert, or whose alert was closed as legitimate (it becomes fraud); a label row and an action-log
        row (and the card blocked with ``block_card``). Refused while its alert is open (the alert takes
        the verdict) and for one labelled fraud already."""
        note = mask_pans(note[:2000])
        fraud_type = fraud_type_of(fraud_type, is_fraud=True)
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "select d.card_id, a.status from decisions d left join alerts a using (txn_id)"
                " where d.txn_id = %s for update of d",
                (txn_id,),
            ).fetchone()
            if row is None:
                raise FraudstreamError(f"no decision {txn_id!r} in the database")
            if row["status"] == "open":
                raise FraudstreamError(f"{txn_id}'s alert is open: give the verdict on the alert")
            fraud = conn.execute(
                "select coalesce(actor, source) as who from labels where txn_id = %s and is_fraud"
                " and retracted_at is null order by id desc limit 1",
                (txn_id,),
            ).fetchone()
            if fraud is not None:
                raise FraudstreamError(f"{txn_id} is labelled fraud already (by {fraud['who']})")
            label = conn.execute(
                "insert into labels (txn_id, card_id, is_fraud, source, actor, note, fraud_type) values"
                " (%s, %s, true, 'analyst', %s, %s, %s) returning *",
                (txn_id, row["card_id"], actor, note, fraud_type),
            ).fetchone()
            self._log(conn, actor, "report_fraud", txn_id,
                      {"note": note, "alert_was": row["status"], "fraud_type": fraud_type})  # fmt: skip
            if row["status"] == "legit":
                conn.execute(
                    "update alerts set status = 'fraud', closed_at = now(), closed_by = %s where txn_id = %s",
                    (actor, txn_id),
                )
            if block_card:
                self._block(conn, "card", row["card_id"], actor, f"fraud reported on {txn_id}", txn_id=txn_id)
        assert label is not None
        return label

    def undo(self, txn_id: str, actor: str, since: datetime) -> list[dict[str, Any]]:
        """Retract the actor's latest verdict (or fraud report) on ``txn_id`` given since ``since`` (this
        login), with the verdicts it gave on the card's other alerts at once (``verdict``'s ``also``).

        The alerts, if any, open again, but for one a chargeback has settled (``REOPEN``); the label
        rows stay, marked retracted (labels are never deleted). Returns the retracted labels,
        ``txn_id``'s first.
        """
        with self._connect() as conn, conn.transaction():
            label = conn.execute(
                # clock_timestamp(), not the transaction's start: the history export's mark relies on it
                "update labels set retracted_at = clock_timestamp() where id = (select id from labels"
                " where txn_id = %s"
                " and actor = %s and source = 'analyst' and retracted_at is null and label_time >= %s"
                " order by id desc limit 1) returning *",
                (txn_id, actor, since),
            ).fetchone()
            if label is None:
                raise FraudstreamError(f"no verdict of yours on {txn_id} in this session to undo")
            with_it = conn.execute(  # given in the same transaction: the same label_time
                "update labels set retracted_at = clock_timestamp() where given_on = %s and actor = %s"
                " and source = 'analyst' and retracted_at is null and label_time = %s returning *",
                (txn_id, actor, label["label_time"]),
            ).fetchall()
            labels = [label, *with_it]
            for retracted in labels:
                conn.execute(REOPEN, (retracted["txn_id"],))
                self._log(conn, actor, "undo", retracted["txn_id"], {"label_id": retracted["id"]})
            unblocked = conn.execute(
                "delete from block_list where kind = 'card' and txn_id = %s and created_by = %s"
                " returning value",
                (txn_id, actor),
            ).fetchone()
            if unblocked is not None:
                self._log(conn, actor, "unblock", f"card:{unblocked['value']}", {"undo": txn_id})
        return sorted(labels, key=lambda lb: lb["txn_id"] != txn_id)

    # the block list (``app.scoring.rules``): the workers read it every FRAUDSTREAM_MODEL_POLL_S
    def block(self, kind: str, value: str, actor: str, reason: str) -> bool:
        """Put a card or merchant on the block list; False when it is on it already."""
        with self._connect() as conn, conn.transaction():
            return self._block(conn, kind, value, actor, reason, txn_id=None)

    def unblock(self, kind: str, value: str, actor: str) -> bool:
        """Take a card or merchant off the block list; False when it was not on it."""
        with self._connect() as conn, conn.transaction():
            gone = conn.execute(
                "delete from block_list where kind = %s and value = %s returning reason", (kind, value)
            ).fetchone()
            if gone is not None:
                self._log(conn, actor, "unblock", f"{kind}:{value}", {"reason": gone["reason"]})
        return gone is not None

    def blocked(self, kind: str, value: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            return conn.execute(
                "select * from block_list where kind = %s and value = %s", (kind, value)
            ).fetchone()

    def block_list(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute("select * from block_list order by created_at desc, kind, value").fetchall()

    @classmethod
    def _block(
        cls,
        conn: psycopg.Connection[Any],
        kind: str,
        value: str,
        actor: str,
        reason: str,
        *,
        txn_id: str | None,
    ) -> bool:
        value, reason = value.strip(), mask_pans(reason.strip()[:500])
        if kind not in BLOCK_KINDS:
            raise FraudstreamError(f"block: kind {kind!r}: card or merchant")
        if not value or len(value) > 200:
            raise FraudstreamError(f"block: a {kind} id of 1-200 characters")
        if mask_pans(value) != value:
            raise FraudstreamError("block: card numbers are not stored: block the card id")
        added = conn.execute(
            "insert into block_list (kind, value, reason, created_by, txn_id) values (%s, %s, %s, %s, %s)"
            " on conflict (kind, value) do nothing returning value",
            (kind, value, reason, actor, txn_id),
        ).fetchone()
        if added is not None:
            cls._log(conn, actor, "block", f"{kind}:{value}", {"reason": reason, "txn_id": txn_id})
        return added is not None

    def log(
        self, actor: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        with self._connect() as conn:
            self._log(conn, actor, action, target, detail or {})

    @staticmethod
    def _log(
        conn: psycopg.Connection[Any], actor: str, action: str, target: str | None, detail: dict[str, Any]
    ) -> None:
        conn.execute(
            "insert into action_log (actor, action, target, detail) values (%s, %s, %s, %s)",
            (actor, action, target, Jsonb(detail)),
        )

    def actions(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute("select * from action_log order by id desc limit %s", (limit,)).fetchall()


def settle_by_chargebacks(
    conn: psycopg.Connection[Any], txn_ids: Sequence[str]
) -> list[tuple[str, str, str]]:
    """Close the alerts that the stored chargebacks of ``txn_ids`` settle: an open alert takes the
    chargeback's verdict (nobody works a case the card holder has settled), and one an analyst
    cleared becomes fraud when the card holder disputed it (the analyst's label stays: the team's
    figures count it). ``closed_by`` is ``chargeback``; an action-log row each. A redelivered
    chargeback changes nothing. In the caller's transaction; returns (txn_id, was, now) of each."""
    if not txn_ids:
        return []
    cur = conn.cursor(row_factory=tuple_row)
    rows = cur.execute(
        "select a.txn_id, a.status, l.is_fraud from alerts a"
        " join labels l on l.txn_id = a.txn_id and l.source = 'chargeback'"
        " where a.txn_id = any(%s) order by a.txn_id for update of a",
        (list(txn_ids),),
    ).fetchall()
    changed = [
        (txn_id, was, "fraud" if is_fraud else "legit")
        for txn_id, was, is_fraud in rows
        if was == "open" or (was == "legit" and is_fraud)
    ]
    for txn_id, was, now in changed:
        conn.execute(
            "update alerts set status = %s, closed_at = now(), closed_by = 'chargeback' where txn_id = %s",
            (now, txn_id),
        )
        UiStore._log(conn, "chargeback", "settle", txn_id, {"alert_was": was, "status": now})
    return changed


def fraud_type_of(fraud_type: str | None, is_fraud: bool) -> str | None:
    """A verdict's fraud type: one of ``SCENARIOS`` on a fraud verdict, None for none given; refused
    otherwise (the UI checks a form's type with it before anything is written)."""
    if not fraud_type:
        return None
    if not is_fraud:
        raise FraudstreamError("a fraud type goes with a fraud verdict only")
    if fraud_type not in SCENARIOS:
        raise FraudstreamError(f"unknown fraud type {fraud_type!r}: one of {', '.join(SCENARIOS)}")
    return fraud_type
