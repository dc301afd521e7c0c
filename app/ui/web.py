"""The analyst web app (FastAPI, server-rendered pages, no front-end build).

``create_app(store, send_feedback, reports_dir)`` wires it; I/O is passed in, so tests use the
real PostgreSQL and broker through the same entry point ``fraudstream ui`` runs.

Security: sessions are random tokens in an HttpOnly, SameSite=Strict cookie, stored server-side
with an expiry; every form carries the session's CSRF token (login uses a double-submit cookie);
roles are checked on every route (analyst < admin); all SQL is parameterised; templates escape.
"""

# no "from __future__ import annotations": FastAPI must see the route signatures evaluated

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.errors import FraudstreamError
from app.scoring.reasons import describe
from app.ui.auth import same, token
from app.ui.store import Session, UiStore
from app.ui.waterfall import sigmoid, waterfall_svg

log = logging.getLogger("fraudstream.ui")
COOKIE, LOGIN_COOKIE = "fs_session", "fs_login"
TEMPLATES = Path(__file__).resolve().parent / "templates"
Feedback = Callable[[dict[str, Any]], None]


class NotLoggedIn(Exception):  # noqa: N818 - a redirect, not an error
    pass


def create_app(  # noqa: PLR0915 - the route table
    store: UiStore, send_feedback: Feedback, reports_dir: Path, *, secure_cookies: bool = False,
    live_window: timedelta = timedelta(days=7), live_at_most: int | None = 200_000,
) -> FastAPI:  # fmt: skip
    app = FastAPI(title="fraudstream analyst UI", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals["describe"] = describe

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
        session = store.login(username, password)
        if session is None:
            store.log(username[:64], "login_failed")
            nonce = token()
            failed = page(
                request, "login.html", None, 401, login_csrf=nonce, error="Wrong username or password."
            )
            failed.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=secure_cookies)
            return failed
        store.log(username, "login")
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
        decision: str | None = None, min_score: float | None = None, sort: str = "score", page_no: int = 1,
        done: str | None = None,
    ) -> Response:  # fmt: skip
        if status not in {"open", "fraud", "legit"}:
            raise HTTPException(400, "status: open, fraud or legit")
        rows, total = store.alerts(
            status=status, decision=decision, min_score=min_score, sort=sort, page=page_no
        )
        filters = {"status": status, "decision": decision or "", "sort": sort,
                   "min_score": "" if min_score is None else min_score}  # fmt: skip
        return page(
            request, "queue.html", session, rows=rows, total=total, page_no=page_no,
            pages=max(1, -(-total // 25)), filters=filters, now=datetime.now(UTC),
            done=store.alert(done) if done else None,
        )  # fmt: skip

    @app.get("/alerts/{txn_id}", response_class=HTMLResponse)
    def alert(request: Request, txn_id: str, session: Annotated[Session, Depends(current)]) -> Response:
        row = store.alert(txn_id)
        if row is None:
            archived = store.archived_through()
            raise HTTPException(404, f"no alert {txn_id}" + (
                "" if archived is None else f" in the database (closed alerts on decisions scored up to"
                f" {archived:%Y-%m-%d} have moved to the audit archive: see audit_archives)"
            ))  # fmt: skip
        shap = row["shap"]
        chart = waterfall_svg(row["expected_value"], shap, row["features"]) if shap else None
        history = store.card_history(row["card_id"], row["event_time"])
        countries = sorted({h["country"] for h in history if h["country"]})
        store.log(session.user.username, "view", txn_id)
        score = sigmoid(row["expected_value"] + sum(shap.values())) if shap else None
        return page(
            request, "alert.html", session, a=row, chart=chart, history=history, countries=countries,
            labels=store.labels_for(txn_id), margin_score=score,
        )  # fmt: skip

    @app.post("/alerts/{txn_id}/verdict")
    def verdict(
        txn_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()],
        verdict: Annotated[str, Form()], note: Annotated[str, Form()] = "",
    ) -> Response:  # fmt: skip
        checked(session, csrf)
        if verdict not in {"fraud", "legit"}:
            raise HTTPException(400, "verdict: fraud or legit")
        try:
            label = store.verdict(txn_id, session.user.username, verdict == "fraud", note)
        except FraudstreamError as exc:
            raise HTTPException(409, str(exc)) from exc
        _deliver(send_feedback, _feedback(label, retracted=False))
        return RedirectResponse(f"/?done={txn_id}", status_code=303)

    @app.post("/alerts/{txn_id}/undo")
    def undo(
        txn_id: str, session: Annotated[Session, Depends(current)], csrf: Annotated[str, Form()]
    ) -> Response:
        checked(session, csrf)
        try:
            label = store.undo(txn_id, session.user.username, since=session.created_at)
        except FraudstreamError as exc:
            raise HTTPException(409, str(exc)) from exc
        _deliver(send_feedback, _feedback(label, retracted=True))
        return RedirectResponse(f"/alerts/{txn_id}", status_code=303)

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
        return page(request, "models_live.html", session, live=live_report(decided.frame), live_days=days,
                    sampled=sample_line(decided.sample))  # fmt: skip

    @app.post("/models/{version}/promote")
    def promote(
        version: str, session: Annotated[Session, Depends(admin)], csrf: Annotated[str, Form()]
    ) -> Response:
        from training.registry import Registry  # noqa: PLC0415

        checked(session, csrf)
        try:
            Registry(store.conninfo).promote(version)
        except FraudstreamError as exc:
            raise HTTPException(404, str(exc)) from exc
        store.log(session.user.username, "promote", version)
        return RedirectResponse("/models", status_code=303)

    @app.get("/reports", response_class=HTMLResponse)
    def reports(request: Request, session: Annotated[Session, Depends(current)]) -> Response:
        return page(request, "reports.html", session, reports=_reports(reports_dir))

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
        try:
            store.add_user(username, password, role)
        except FraudstreamError as exc:
            raise HTTPException(400, str(exc)) from exc
        store.log(session.user.username, "add_user", username, {"role": role})
        return RedirectResponse("/admin/users", status_code=303)

    return app


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
