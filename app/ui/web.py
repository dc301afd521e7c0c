"""The analyst web app (FastAPI, server-rendered pages, no front-end build).

``create_app(store, send_feedback, reports_dir)`` wires it; I/O is passed in, so tests use the
real PostgreSQL and broker through the same entry point ``fraudstream ui`` runs.

Security: sessions are random tokens in an HttpOnly, SameSite=Strict cookie, stored server-side
with an expiry; every form carries the session's CSRF token (login uses a double-submit cookie);
roles are checked on every route (analyst < admin); all SQL is parameterised; templates escape.
"""

# no "from __future__ import annotations": FastAPI must see the route signatures evaluated

import csv
import io
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.errors import FraudstreamError
from app.pan import mask_pans
from app.scoring.reasons import EXPLORE, describe
from app.ui.auth import same, token
from app.ui.store import Session, UiStore, fraud_type_of
from app.ui.waterfall import sigmoid, waterfall_svg

log = logging.getLogger("fraudstream.ui")
COOKIE, LOGIN_COOKIE = "fs_session", "fs_login"
TEMPLATES = Path(__file__).resolve().parent / "templates"
Feedback = Callable[[dict[str, Any]], None]
CARD_PAGE = 50  # decisions on a page of a card's


# What an analyst picks a fraud verdict's type from: app.schema.SCENARIOS, in words
FRAUD_TYPES = {
    "compromised_card": "Card details stolen, used without the card (online)",
    "compromised_terminal": "Card skimmed at a compromised terminal",
    "card_testing": "Card testing (small probing payments)",
    "account_takeover": "Account takeover",
    "impossible_travel": "Cloned card (used far apart at once)",
    "high_amount": "Large one-off fraudulent payment",
}


FRAUD_SUMS = ("frauds", "amount", "declined", "declined_amount", "reviewed", "approved", "approved_amount")


def fraud_by_type(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``UiStore.fraud_losses`` rows summed over the weeks, per fraud type and currency, the largest
    amount first."""
    totals: dict[tuple[str | None, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["fraud_type"], r["currency"])
        t = totals.setdefault(key, {"fraud_type": key[0], "currency": key[1]})
        for field in FRAUD_SUMS:
            t[field] = t.get(field, 0) + r[field]
    return sorted(totals.values(), key=lambda t: (-t["amount"], t["currency"], t["fraud_type"] or ""))


# Every response: never framed (a verdict or block button under a decoy is clickjacking), never
# cached (customer data), no referrer (URLs name transactions and cards), no content sniffing.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# The app's pages: no script, styles inline, forms post here only. Report files (GX data docs,
# Evidently) are the project's own jobs' HTML, which needs its scripts: they get the headers above.
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)


def duration(seconds: float) -> str:
    """An age or a wait for people: "40 s", "12 min", "3 h 5 min", "4 days"."""
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        hours, minutes = divmod(int(seconds // 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{int(seconds // 86400)} days"


class NotLoggedIn(Exception):  # noqa: N818 - a redirect, not an error
    pass


def create_app(  # noqa: PLR0915 - the route table
    store: UiStore, send_feedback: Feedback, reports_dir: Path, *, secure_cookies: bool = False,
    live_window: timedelta = timedelta(days=7), live_at_most: int | None = 200_000,
    archive_dir: Path | None = None, login_lockout: tuple[int, timedelta] = (5, timedelta(minutes=15)),
    address_max_failures: int = 20, alert_target: timedelta = timedelta(hours=1),
    label_delay: timedelta = timedelta(days=7),
) -> FastAPI:  # fmt: skip
    app = FastAPI(title="fraudstream analyst UI", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals["describe"] = describe
    templates.env.globals["duration"] = duration
    templates.env.globals["fraud_types"] = FRAUD_TYPES
    templates.env.globals["explore_reason"] = EXPLORE

    def page(
        request: Request, name: str, session: Session | None, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            name,
            {"session": session, "user": session.user if session else None, **context},
            status_code=status_code,
        )

    def current(request: Request) -> Session:
        session = store.session(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET":
                raise NotLoggedIn
            raise HTTPException(401, "log in first")
        return session

    def admin(session: Annotated[Session, Depends(current)]) -> Session:
        if not session.user.is_admin:
            store.log(session.user.username, "forbidden", None, {"needed": "admin"})
            raise HTTPException(403, "this needs the admin role")
        return session

    def checked(session: Session, csrf: str) -> None:
        if not same(csrf, session.csrf):
            raise HTTPException(403, "invalid or missing CSRF token; reload the page")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/reports/file/"):  # the app's own pages run no script at all
            response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    @app.exception_handler(NotLoggedIn)
    async def to_login(_request: Request, _exc: NotLoggedIn) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return page(
                request,
                "error.html",
                store.session(request.cookies.get(COOKIE)),
                exc.status_code,
                message=exc.detail,
            )
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> Response:
        """422 naming the fields, never echoing what was sent (no reflected input)."""
        fields = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
        return await http_error(request, HTTPException(422, f"invalid {', '.join(fields) or 'input'}"))

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/favicon.ico")
    def favicon() -> Response:
        """No icon (browsers ask on every page; a 404 there is noise in their consoles)."""
        return Response(status_code=204)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        nonce = token()
        response = page(request, "login.html", None, login_csrf=nonce)
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=secure_cookies)
        return response

    @app.post("/login")
    def login(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        csrf: Annotated[str, Form()],
    ) -> Response:
        if not same(csrf, request.cookies.get(LOGIN_COOKIE)):
            raise HTTPException(403, "invalid or missing CSRF token; reload the page")
        address = request.client.host if request.client else "unknown"  # the proxy's client, if trusted
        where = {"address": address}
        held = store.address_locked_until(address, address_max_failures, login_lockout[1])
        locked = held or store.locked_until(username, *login_lockout)
        session = None if locked else store.login(username, password)
        if session is None:
            if locked:
                store.log(username[:64], "login_locked", detail=where)
                source = " from your address" if held else ""
                error, status = f"Too many failed logins{source}: try again after {locked:%H:%M} UTC.", 429
            else:
                store.log(username[:64], "login_failed", detail=where)
                error, status = "Wrong username or password.", 401
            nonce = token()
            failed = page(request, "login.html", None, status, login_csrf=nonce, error=error)
            failed.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=secure_cookies)
            return failed
        store.log(username, "login", detail=where)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE, session.id, httponly=True, samesite="strict", secure=secure_cookies, max_age=12 * 3600
        )
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @app.post("/logout")
    def logout(session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()]) -> Response:
        checked(session, csrf)
        store.logout(session.id)
        store.log(session.user.username, "logout")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse)
    def queue(  # noqa: PLR0917 - the queue's filters are query parameters
        request: Request, session: Annotated[Session, Depends(current)], status: str = "open",
        decision: str | None = None, min_score: str = "", sort: str = "score", page_no: int = 1,
        done: str | None = None, more: int = 0, assigned: str = "", empty: bool = False, by_card: str = "",
    ) -> Response:  # fmt: skip
        """The queue; the filter form and the page links send an unset filter as an empty value."""
        if status not in {"open", "fraud", "legit"}:
            raise HTTPException(400, "status: open, fraud or legit")
        try:
            least = float(min_score) if min_score.strip() else None
        except ValueError:
            raise HTTPException(400, "min score: a number from 0 to 1") from None
        rows, total = store.alerts(
            status=status, decision=decision, min_score=least, sort=sort, page=page_no, assigned=assigned,
            user=session.user.username, by_card=by_card == "true",
        )  # fmt: skip
        filters = {"status": status, "decision": decision or "", "sort": sort, "assigned": assigned,
                   "min_score": "" if least is None else least,
                   "by_card": "true" if by_card == "true" else ""}  # fmt: skip
        return page(
            request, "queue.html", session, rows=rows, total=total, page_no=page_no,
            pages=max(1, -(-total // 25)), filters=filters, now=datetime.now(UTC),
            done=store.alert(done) if done else None, more=more, empty=empty,
            health=store.queue_health(alert_target), target_s=alert_target.total_seconds(),
        )  # fmt: skip

    @app.post("/alerts/next")
    def next_alert(session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()]) -> Response:
        """Work the queue: the open alert with the highest score nobody holds is now yours."""
        checked(session, csrf)
        txn_id = store.next_alert(session.user.username)
        if txn_id is None:
            return RedirectResponse("/?empty=true", status_code=303)
        return RedirectResponse(f"/alerts/{quote(txn_id, safe='')}", status_code=303)

    @app.post("/alerts/{txn_id}/take")
    def take(
        txn_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()],
        over: Annotated[bool, Form()] = False,
    ) -> Response:  # fmt: skip
        checked(session, csrf)
        with refused_as(409):
            store.take(txn_id, session.user.username, over=over)
        return RedirectResponse(f"/alerts/{quote(txn_id, safe='')}", status_code=303)

    @app.post("/alerts/{txn_id}/release")
    def release(
        txn_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()]
    ) -> Response:
        checked(session, csrf)
        with refused_as(409):
            store.release(txn_id, session.user.username)
        return RedirectResponse("/", status_code=303)

    @app.get("/alerts/{txn_id}", response_class=HTMLResponse)
    @app.get("/transactions/{txn_id}", response_class=HTMLResponse)
    def transaction(
        request: Request, txn_id: str, session: Annotated[Session, Depends(current)], archive: bool = False,
        scored_on: date | None = None,
    ) -> Response:  # fmt: skip
        """Any decision, flagged or not; with ``archive`` one that left the database for the audit
        archive (read only)."""
        row, source = store.decision(txn_id), None
        if row is None and archive:
            row, source = _from_archive(store.conninfo, archive_dir, txn_id, scored_on)
        if row is None:
            raise HTTPException(404, _not_found(txn_id, archive, scored_on, store.archived_through()))
        shap = row["shap"]
        chart = waterfall_svg(row["expected_value"], shap, row["features"]) if shap else None
        history = store.card_history(row["card_id"], row["event_time"])
        countries = sorted({h["country"] for h in history if h["country"]})
        labels = store.labels_for(txn_id)
        fraud = [lb for lb in labels if lb["is_fraud"] and lb["retracted_at"] is None]
        store.log(session.user.username, "view", txn_id, {"archive": source} if source else None)
        score = sigmoid(row["expected_value"] + sum(shap.values())) if shap else None
        return page(
            request, "decision.html", session, a=row, chart=chart, history=history, countries=countries,
            labels=labels, margin_score=score, archived=source, reported=fraud[-1] if fraud else None,
            card_blocked=store.blocked("card", row["card_id"]),
            siblings=store.open_on_card(row["card_id"], txn_id) if row["status"] == "open" else [],
            notes=store.card_notes(row["card_id"]),
        )  # fmt: skip

    @app.get("/search", response_class=HTMLResponse)
    def search(
        request: Request, session: Annotated[Session, Depends(current)], q: str = "", archive: bool = False,
        scored_on: str = "",
    ) -> Response:  # fmt: skip
        """A transaction id opens its decision, a card id the card's decisions; ``archive`` looks the
        transaction up in the audit archive too (``scored_on``, a day or empty, narrows it)."""
        q = q.strip()[:200]
        if not q:
            return page(request, "search.html", session, q="", archived_through=store.archived_through())
        masked = mask_pans(q)  # a card number typed into the box is never logged
        store.log(session.user.username, "search", None, {"q": masked, "archive": archive})
        if masked != q:
            raise HTTPException(400, "card numbers are not stored: search by a card id or a transaction id")
        if archive:
            try:
                on = f"&scored_on={date.fromisoformat(scored_on).isoformat()}" if scored_on else ""
            except ValueError:
                raise HTTPException(400, "scored on: a day, YYYY-MM-DD") from None
            return RedirectResponse(f"/transactions/{quote(q, safe='')}?archive=true{on}", status_code=303)
        if store.decision(q) is not None:
            return RedirectResponse(f"/transactions/{quote(q, safe='')}", status_code=303)
        if store.card_known(q):
            return RedirectResponse(f"/cards/{quote(q, safe='')}", status_code=303)
        return page(request, "search.html", session, q=q, archived_through=store.archived_through())

    @app.get("/cards/{card_id}", response_class=HTMLResponse)
    def card(
        request: Request, card_id: str, session: Annotated[Session, Depends(current)], page_no: int = 1
    ) -> Response:
        rows = store.card_decisions(card_id, page_no, CARD_PAGE)
        if not rows and page_no <= 1:
            raise HTTPException(404, f"no decision for card {card_id} in the database")
        store.log(session.user.username, "view_card", card_id)
        return page(request, "card.html", session, card_id=card_id, rows=rows, page_no=max(page_no, 1),
                    more=len(rows) == CARD_PAGE, blocked=store.blocked("card", card_id),
                    notes=store.card_notes(card_id))  # fmt: skip

    @app.post("/cards/{card_id}/notes")
    def card_note(
        card_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()],
        note: Annotated[str, Form()], back: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        """A note on the card for the whole team (a call with the holder, a trip abroad); ``back``: the
        alert whose page it was written on, to return to."""
        checked(session, csrf)
        if not store.card_known(card_id):
            raise HTTPException(404, f"no decision for card {card_id} in the database")
        with refused_as(400):
            store.add_card_note(card_id, session.user.username, note)
        if back and (alert := store.decision(back)) is not None and alert["card_id"] == card_id:
            return RedirectResponse(f"/transactions/{quote(back, safe='')}", status_code=303)
        return RedirectResponse(f"/cards/{quote(card_id, safe='')}", status_code=303)

    @app.post("/cards/{card_id}/block")
    def block_card(
        card_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()],
        reason: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        """Any analyst may block a card (its next transactions are declined); only an admin unblocks."""
        checked(session, csrf)
        if not store.card_known(card_id):
            raise HTTPException(404, f"no decision for card {card_id} in the database")
        if not store.block("card", card_id, session.user.username, reason):
            raise HTTPException(409, f"card {card_id} is on the block list already")
        return RedirectResponse(f"/cards/{quote(card_id, safe='')}", status_code=303)

    @app.get("/admin/block-list", response_class=HTMLResponse)
    def block_list(request: Request, session: Annotated[Session, Depends(admin)]) -> Response:
        return page(request, "block_list.html", session, entries=store.block_list())

    @app.post("/admin/block-list")
    def add_block(
        session: Annotated[Session, Depends(admin)], csrf: Annotated[str, Form()],
        kind: Annotated[str, Form()], value: Annotated[str, Form()], reason: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        checked(session, csrf)
        with refused_as(400):
            added = store.block(kind, value, session.user.username, reason)
        if not added:
            raise HTTPException(409, f"{kind} {value.strip()} is on the block list already")
        return RedirectResponse("/admin/block-list", status_code=303)

    @app.post("/admin/block-list/remove")
    def remove_block(
        session: Annotated[Session, Depends(admin)], csrf: Annotated[str, Form()],
        kind: Annotated[str, Form()], value: Annotated[str, Form()], back: Annotated[str, Form()] = "list",
    ) -> Response:  # fmt: skip
        """``back``: ``card`` returns to the card's page (its unblock button), else to the list."""
        checked(session, csrf)
        if not store.unblock(kind, value, session.user.username):
            raise HTTPException(404, f"{kind} {value} is not on the block list")
        to_card = back == "card" and kind == "card"
        return RedirectResponse(f"/cards/{quote(value, safe='')}" if to_card else "/admin/block-list", 303)

    @app.post("/transactions/{txn_id}/report")
    def report(  # noqa: PLR0917 - the form's fields
        txn_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()],
        note: Annotated[str, Form()] = "", block_card: Annotated[bool, Form()] = False,
        fraud_type: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        """Label a transaction that raised no alert as fraud (the card holder disputes it)."""
        checked(session, csrf)
        with refused_as(400):  # an unknown type is bad input, not a conflict
            fraud_type_of(fraud_type, is_fraud=True)
        if store.decision(txn_id) is None:
            raise HTTPException(404, f"no decision {txn_id} in the database")
        with refused_as(409):
            label = store.report_fraud(
                txn_id, session.user.username, note, block_card=block_card, fraud_type=fraud_type
            )
        _deliver(send_feedback, _feedback(label, retracted=False))
        return RedirectResponse(f"/transactions/{quote(txn_id, safe='')}", status_code=303)

    @app.post("/alerts/{txn_id}/verdict")
    def verdict(  # noqa: PLR0917 - the form's fields
        txn_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()],
        verdict: Annotated[str, Form()], note: Annotated[str, Form()] = "",
        block_card: Annotated[bool, Form()] = False, fraud_type: Annotated[str, Form()] = "",
        also: Annotated[list[str] | None, Form()] = None, also_all: Annotated[bool, Form()] = False,
        offered: Annotated[list[str] | None, Form()] = None,
    ) -> Response:  # fmt: skip
        """The analyst's verdict on an alert, and on the card's other open alerts ticked (``also``), or
        on every one the page offered (``also_all``: those in ``offered``, none that came in since)."""
        checked(session, csrf)
        if verdict not in {"fraud", "legit"}:
            raise HTTPException(400, "verdict: fraud or legit")
        with refused_as(400):  # an unknown type is bad input; a legit verdict ignores a known one
            fraud_type_of(fraud_type, is_fraud=True)
        with refused_as(409):
            labels = store.verdict(
                txn_id, session.user.username, verdict == "fraud", note, block_card=block_card,
                fraud_type=fraud_type if verdict == "fraud" else None,
                also=[*(also or ()), *((offered or ()) if also_all else ())],
            )  # fmt: skip
        for label in labels:
            _deliver(send_feedback, _feedback(label, retracted=False))
        more = f"&more={len(labels) - 1}" if len(labels) > 1 else ""
        return RedirectResponse(f"/?done={quote(txn_id, safe='')}{more}", status_code=303)

    @app.post("/alerts/{txn_id}/undo")
    def undo(
        txn_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()]
    ) -> Response:
        checked(session, csrf)
        with refused_as(409):
            labels = store.undo(txn_id, session.user.username, since=session.created_at)
        for label in labels:
            _deliver(send_feedback, _feedback(label, retracted=True))
        return RedirectResponse(f"/transactions/{quote(txn_id, safe='')}", status_code=303)

    @app.get("/models", response_class=HTMLResponse)
    def models(request: Request, session: Annotated[Session, Depends(current)]) -> Response:
        from training.registry import Registry  # noqa: PLC0415

        registry = Registry(store.conninfo)
        return page(request, "models.html", session, models=registry.list(), refusals=registry.refusals())

    @app.get("/models/live", response_class=HTMLResponse)
    def models_live(request: Request, session: Annotated[Session, Depends(current)]) -> Response:
        """On its own page: it reads the window's decisions, or an even sample of about ``live_at_most``
        (a million took ~6.5 s on this VM; 200,000 of ten million, 1.5 s)."""
        from app.live_performance import live_decisions, live_report, sample_line  # noqa: PLC0415

        until = datetime.now(UTC)
        decided = live_decisions(store.conninfo, until - live_window, until, live_at_most)
        days = live_window.total_seconds() / 86400
        live = live_report(decided.frame, label_delay, decided.clock)
        return page(request, "models_live.html", session, live=live, live_days=days,
                    sampled=sample_line(decided.sample))  # fmt: skip

    @app.post("/models/{version}/promote")
    def promote(
        version: str, session: Annotated[Session, Depends(admin)], csrf: Annotated[str, Form()]
    ) -> Response:
        from training.registry import Registry  # noqa: PLC0415

        checked(session, csrf)
        with refused_as(404):
            Registry(store.conninfo).promote(version)
        store.log(session.user.username, "promote", version)
        return RedirectResponse("/models", status_code=303)

    @app.get("/reports", response_class=HTMLResponse)
    def reports(request: Request, session: Annotated[Session, Depends(current)]) -> Response:
        return page(request, "reports.html", session, reports=_reports(reports_dir))

    @app.get("/reports/fraud", response_class=HTMLResponse)
    def fraud_report(
        request: Request, session: Annotated[Session, Depends(current)], weeks: int = 12
    ) -> Response:
        """Confirmed fraud by type, currency and week: what the decisions stopped and what they missed."""
        since, rows = fraud_weeks(weeks)
        return page(request, "fraud.html", session, rows=rows, by_type=fraud_by_type(rows), since=since,
                    weeks=weeks)  # fmt: skip

    @app.get("/reports/analysts", response_class=HTMLResponse)
    def analysts_report(
        request: Request, session: Annotated[Session, Depends(admin)], days: int = 30
    ) -> Response:
        """Each analyst's labels on alerts, their speed, and the clearances chargebacks overturned
        (admins only: the team lead's page)."""
        if not 1 <= days <= 366:
            raise HTTPException(400, "days: 1 to 366")
        since = datetime.now(UTC) - timedelta(days=days)
        return page(request, "analysts.html", session, rows=store.analyst_figures(since), days=days,
                    overturned=store.overturned(since))  # fmt: skip

    @app.get("/reports/fraud.csv")
    def fraud_report_csv(_session: Annotated[Session, Depends(current)], weeks: int = 12) -> Response:
        """The same weeks' rows as CSV, for the monthly report's spreadsheet."""
        since, rows = fraud_weeks(weeks)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["week", "fraud_type", "currency", *FRAUD_SUMS])
        for r in rows:
            writer.writerow([r["week"].isoformat(), r["fraud_type"] or "", r["currency"],
                             *(round(r[k], 2) for k in FRAUD_SUMS)])  # fmt: skip
        name = f"fraud-{since.isoformat()}-{weeks}w.csv"
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip

    def fraud_weeks(weeks: int) -> tuple[date, list[dict[str, Any]]]:
        if not 1 <= weeks <= 104:
            raise HTTPException(400, "weeks: 1 to 104")
        today = datetime.now(UTC).date()
        since = today - timedelta(days=today.weekday() + 7 * (weeks - 1))  # a Monday: whole weeks
        return since, store.fraud_losses(datetime.combine(since, datetime.min.time(), UTC))

    @app.get("/reports/file/{path:path}")
    def report_file(path: str, _session: Annotated[Session, Depends(current)]) -> Response:
        root = reports_dir.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(404, "no such report")
        return FileResponse(target)

    @app.get("/admin/users", response_class=HTMLResponse)
    def users(request: Request, session: Annotated[Session, Depends(admin)]) -> Response:
        return page(request, "users.html", session, users=store.users(), actions=store.actions())

    @app.post("/admin/users")
    def add_user(
        session: Annotated[Session, Depends(admin)], csrf: Annotated[str, Form()],
        username: Annotated[str, Form()], password: Annotated[str, Form()], role: Annotated[str, Form()],
    ) -> Response:  # fmt: skip
        checked(session, csrf)
        with refused_as(400):
            store.add_user(username, password, role)
        store.log(session.user.username, "add_user", username, {"role": role})
        return RedirectResponse("/admin/users", status_code=303)

    @app.post("/admin/users/{username}/{change}")
    def change_user(
        username: str, change: str, session: Annotated[Session, Depends(admin)], csrf: Annotated[str, Form()],
        password: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        """``disable`` (their sessions end), ``enable``, or ``password`` (a reset; their sessions end)."""
        checked(session, csrf)
        with refused_as(400):
            if change in {"disable", "enable"}:
                store.set_disabled(username, change == "disable", session.user.username)
            elif change == "password":
                store.set_password(username, password, session.user.username)
            else:
                raise HTTPException(404, "disable, enable or password")
        return RedirectResponse("/admin/users", status_code=303)

    return app


def _from_archive(
    conninfo: str, archive: Path | None, txn_id: str, scored_on: date | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The decision record from the audit archive (``app.audit_archive``), shaped as the database's
    row, and the file it came from."""
    from app.audit_archive import find_decision  # noqa: PLC0415 - pyarrow, for this page only

    if archive is None:
        raise HTTPException(404, "this UI has no audit archive folder (FRAUDSTREAM_AUDIT_ARCHIVE_DIR)")
    with refused_as(503):
        found = find_decision(conninfo, archive, txn_id, scored_on=scored_on)
    if found is None:
        return None, None
    record, where = found
    row = record | {"status": record["alert_status"], "closed_at": record["alert_closed_at"],
                    "closed_by": record["alert_closed_by"]}  # fmt: skip
    return row, None if where == "database" else where  # "database": it was there after all


def _not_found(txn_id: str, archive: bool, scored_on: date | None, archived_through: datetime | None) -> str:
    if archive:
        where = f"the audit archive's files of {scored_on}" if scored_on else "the audit archive"
        return f"no decision {txn_id} in the database nor in {where}"
    if archived_through is None:
        return f"no decision {txn_id} in the database"
    return (
        f"no decision {txn_id} in the database; decisions scored up to {archived_through:%Y-%m-%d} whose"
        " alerts were closed have moved to the audit archive: search it from the search page"
    )


@contextmanager
def refused_as(status: int) -> Iterator[None]:
    """A ``FraudstreamError`` (the store's one line: refused, unknown, unreadable) as the HTTP answer
    ``status``, its line the body."""
    try:
        yield
    except FraudstreamError as exc:
        raise HTTPException(status, str(exc)) from exc


def _deliver(send_feedback: Feedback, record: dict[str, Any]) -> None:
    try:
        send_feedback(record)
    except FraudstreamError as exc:
        log.exception("feedback for %s not delivered", record["txn_id"])
        raise HTTPException(502, str(exc)) from exc


def _feedback(label: dict[str, Any], *, retracted: bool) -> dict[str, Any]:
    """The fraud-feedback record of an analyst verdict (or its retraction)."""
    return {
        "txn_id": label["txn_id"], "card_id": label["card_id"], "is_fraud": int(label["is_fraud"]),
        "label_time": (label["retracted_at"] if retracted else label["label_time"]).isoformat(),
        "source": "analyst", "analyst": label["actor"], "retracted": retracted,
        "fraud_scenario": label.get("fraud_type"),
    }  # fmt: skip


def _reports(root: Path) -> list[dict[str, Any]]:
    """The newest report of each kind under the reports folder."""
    kinds = {
        "Data quality (Great Expectations data docs)": "**/data_docs/local_site/index.html",
        "Drift (Evidently)": "**/drift*.html",
        "Model report": "**/report.md",
        "Benchmark": "**/bench/*.json",
    }
    found = []
    for kind, pattern in kinds.items():
        files = (
            sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True) if root.exists() else []
        )
        for f in files[:3]:
            found.append(
                {
                    "kind": kind,
                    "path": str(f.relative_to(root)),
                    "modified": datetime.fromtimestamp(f.stat().st_mtime, UTC),
                }
            )
    return found
