"""The operator station over HTTP (aiohttp, like the control site's dashboard).

Every page but the sign-in form needs a session; every POST needs the session's
CSRF token and, when the browser names one, the station's own origin. A signed
act needs the password again (the session alone never signs). The outcome of an
act is shown once on the page the browser is sent back to (post/redirect/get),
so a reload never repeats a signature.

Batches are the journals in the site's runs folder whose names are safe names;
a URL names a batch only through that listing, never a path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from twin.access.entries import batch_running
from twin.errors import PocTwinError
from twin.names import UnsafeName, check_safe_name
from twin.station.acts import Outcome, Station
from twin.station.board import BatchBoard
from twin.station.forecasts import Forecaster
from twin.station.pages import (
    LEVELLED,
    batch_live,
    batch_page,
    login_page,
    overview_live,
    overview_page,
)
from twin.station.sessions import COOKIE, Session, Sessions

__all__ = ["Boards", "make_app"]

_SESSION = web.RequestKey("session", Session)
#: Said when a session ends because its user was locked or disabled (one message for both,
#: as a sign-in refusal does not tell them apart either).
ENDED_ACCOUNT = (
    "You were signed out: your account is locked or disabled. Ask the site's administrator."
)


class Boards:
    """The site's batches: one board per journal in the runs folder, kept up to date."""

    def __init__(self, runs: Path, forecaster: Forecaster | None = None) -> None:
        self.runs = runs
        self.forecaster = forecaster
        self._boards: dict[str, BatchBoard] = {}
        self._lock = asyncio.Lock()

    def _journals(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(self.runs.glob("*.sqlite")):
            try:
                found[check_safe_name(path.stem, "batch")] = path
            except UnsafeName:
                continue  # a file no batch wrote (a batch id is always a safe name)
        return found

    async def all(self) -> list[BatchBoard]:
        """Every batch, refreshed (journals that are not batch journals are left out)."""
        async with self._lock:
            journals = await asyncio.to_thread(self._journals)
            for name, path in journals.items():
                self._boards.setdefault(name, BatchBoard(path))
            for name in set(self._boards) - set(journals):
                del self._boards[name]
            await asyncio.to_thread(self._refresh_all)
            shown = [b for b in self._boards.values() if b.started]
            if self.forecaster is not None:
                self.forecaster.poll(shown)  # a new sample: forecast again (a child process)
            return shown

    def _refresh_all(self) -> None:
        for board in self._boards.values():
            try:
                board.refresh()
            except PocTwinError:
                continue  # unreadable for now (being created, or not a journal): not listed

    async def one(self, name: str) -> BatchBoard:
        """One batch, refreshed; 404 for a name that is not a batch of this site."""
        for board in await self.all():
            if board.name == name:
                return board
        raise web.HTTPNotFound(text="no such batch at this site")


def make_app(
    runs: Path,
    station: Station,
    sessions: Sessions | None = None,
    forecaster: Forecaster | None = None,
) -> web.Application:
    """The station's pages, their live parts and the signed acts."""
    boards = Boards(runs, forecaster)
    sessions = sessions or Sessions()

    @web.middleware
    async def signed_in(request: web.Request, handler: Any) -> web.StreamResponse:
        """Login for everything; CSRF token and same origin for every POST."""
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin.split("://", 1)[-1] != request.host:
                raise web.HTTPForbidden(text="cross-site request refused")
        if request.path == "/login":
            return await handler(request)
        sid = request.cookies.get(COOKIE)
        session = sessions.get(sid, used=not request.path.endswith("/live"))
        ended = ""
        if session is not None and not await station.in_good_standing(session.user):
            # Locked (wrong passwords in a signature) or disabled since signing in: the
            # session ends now, not at its idle timeout (a page's refresh is refused and
            # reloads the page, whose request ends it and says why at the sign-in).
            if not request.path.endswith("/live"):
                sessions.end(sid)
            session, ended = None, "&ended=account"
        if session is None:
            if request.method == "GET" and not request.path.endswith("/live"):
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}{ended}")
            if ended:
                raise web.HTTPUnauthorized(text=ENDED_ACCOUNT)
            raise web.HTTPUnauthorized(text="sign in first")
        if request.method == "POST":
            form = await request.post()
            if not session.form_ok(form.get("csrf")):
                raise web.HTTPForbidden(text="the form is stale or not from this station")
        request[_SESSION] = session
        return await handler(request)

    def session_of(request: web.Request) -> Session:
        return request[_SESSION]

    def back(request: web.Request, outcome: Outcome) -> web.HTTPSeeOther:
        session_of(request).flash.append(("ok" if outcome.ok else "error", outcome.message))
        return web.HTTPSeeOther(f"/batch/{request.match_info['batch']}")

    async def form_of(request: web.Request, *required: str) -> dict[str, str]:
        form = await request.post()
        values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        missing = [k for k in required if not values.get(k, "").strip()]
        if missing:
            outcome = Outcome(False, f"{', '.join(missing)}: required; nothing was signed")
            raise back(request, outcome)
        return values

    # -- signing in and out -----------------------------------------------------------------

    async def login_form(request: web.Request) -> web.Response:
        why = ENDED_ACCOUNT if request.query.get("ended") == "account" else ""
        page = login_page(why, next_url=_local(request.query.get("next", "/")))
        return web.Response(text=page, content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        user, password = str(form.get("user", "")), str(form.get("password", ""))
        next_url = _local(str(form.get("next", "/")))
        try:
            signer, roles = await station.sign_in(user, password)
        except PocTwinError as exc:
            page = login_page(str(exc), next_url)
            return web.Response(text=page, content_type="text/html", status=401)
        sid = sessions.start(Session(signer.user, signer.name, roles))
        response = web.HTTPSeeOther(next_url)
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/")
        raise response

    async def logout(request: web.Request) -> web.Response:
        sessions.end(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- pages --------------------------------------------------------------------------------

    async def running_of(batches: list[BatchBoard]) -> set[str]:
        alive = await asyncio.gather(*(batch_running(b.path) for b in batches))
        return {b.name for b, up in zip(batches, alive, strict=True) if up}

    async def overview(request: web.Request) -> web.Response:
        batches = await boards.all()
        page = overview_page(batches, await running_of(batches), session_of(request))
        return web.Response(text=page, content_type="text/html")

    async def overview_part(request: web.Request) -> web.Response:
        batches = await boards.all()
        return web.json_response({"html": overview_live(batches, await running_of(batches))})

    async def batch(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        page = batch_page(board, await batch_running(board.path), session_of(request))
        return web.Response(text=page, content_type="text/html")

    async def batch_part(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        running = await batch_running(board.path)
        return web.json_response({"html": batch_live(board, running, session_of(request).roles)})

    async def record(request: web.Request) -> web.Response:
        from twin.report import build_record, render_html

        board = await boards.one(request.match_info["batch"])
        page = await asyncio.to_thread(lambda: render_html(build_record(board.path)))
        return web.Response(text=page, content_type="text/html")

    # -- signed acts ----------------------------------------------------------------------------

    async def command(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        form = await form_of(request, "command", "reason", "password")
        session = session_of(request)
        outcome = await station.command(
            board.path,
            session.user,
            form["password"],
            form["command"],
            form["reason"],
            # The level chooser is hidden for pause and resume, yet the form still sends it.
            (form.get("level") or "procedure") if form["command"] in LEVELLED else "procedure",
        )
        raise back(request, outcome)

    async def identity(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        form = await form_of(request, "patient_id", "bag_id", "reason", "password")
        outcome = await station.confirm_identity(
            board.path,
            session_of(request).user,
            form["password"],
            form["patient_id"].strip(),
            form["bag_id"].strip(),
            form["reason"],
        )
        raise back(request, outcome)

    async def lot(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        form = await form_of(request, "material", "reason", "password")
        outcome = await station.scan_lot(
            board.path, session_of(request).user, form["password"], form, form["reason"]
        )
        raise back(request, outcome)

    async def acknowledge(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        form = await form_of(request, "alarm", "reason", "password")
        try:
            alarm = int(form["alarm"])
        except ValueError:
            raise back(request, Outcome(False, "no such alarm")) from None
        outcome = await station.acknowledge(
            board.path, session_of(request).user, form["password"], alarm, form["reason"]
        )
        raise back(request, outcome)

    async def qc(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        form = await form_of(request, "results", "reason", "password")
        lines = [line.strip() for line in form["results"].splitlines() if line.strip()]
        outcome = await station.enter_qc(
            board.path,
            session_of(request).user,
            form["password"],
            lines,
            form.get("lab_ref", "").strip(),
            form["reason"],
        )
        raise back(request, outcome)

    async def review(request: web.Request) -> web.Response:
        board = await boards.one(request.match_info["batch"])
        form = await form_of(request, "comment", "password")
        outcome = await station.sign_record(
            board.path,
            session_of(request).user,
            form["password"],
            form["comment"],
            approve=form.get("approve") == "1",
        )
        raise back(request, outcome)

    app = web.Application(middlewares=[signed_in])
    app.add_routes(
        [
            web.get("/login", login_form),
            web.post("/login", login),
            web.post("/logout", logout),
            web.get("/", overview),
            web.get("/live", overview_part),
            web.get("/batch/{batch}", batch),
            web.get("/batch/{batch}/live", batch_part),
            web.get("/batch/{batch}/record", record),
            web.post("/batch/{batch}/command", command),
            web.post("/batch/{batch}/identity", identity),
            web.post("/batch/{batch}/lot", lot),
            web.post("/batch/{batch}/ack", acknowledge),
            web.post("/batch/{batch}/qc", qc),
            web.post("/batch/{batch}/review", review),
        ]
    )
    if forecaster is not None:

        async def finish_forecasts(_app: web.Application) -> None:
            await forecaster.close()

        app.on_cleanup.append(finish_forecasts)
    return app


def _local(url: str) -> str:
    """Where to go after signing in: a path on this station only (no open redirect). No
    control character or space either: a browser, or aiohttp writing the Location header,
    drops them, and ``/<TAB>/evil.example`` became ``//evil.example``."""
    if (
        not url.startswith("/")
        or "\\" in url
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        return "/"
    parts = urlsplit(url)
    return "/" if url.startswith("//") or parts.scheme or parts.netloc else url
