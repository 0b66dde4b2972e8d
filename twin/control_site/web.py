"""The dashboard over HTTP (aiohttp) and the supervision requests an authorised user may make.

Every page needs a signed-in user (users file; sign-in rate limited and locked out
like every login, :mod:`.logins`); a session ends on sign-out or after 15 minutes
without a request (put the dashboard behind the control room's TLS proxy). An act on
a site (hold a batch, acknowledge one of its alarms, suspend or reinstate a site) is a
form with the session's CSRF
token, from this origin, that carries the reason and the user's password again: the
act is signed, audited, and answered with the page the browser came from and a
message, never raw JSON.

Programs authenticate with a control-site user's HTTP Basic credentials: ``POST`` of
a hold or a suspension is answered JSON (4xx with the reason as text when refused),
and every ``/api/...`` route (``/api/batches``, ``/api/quarantine``, the page
scripts' ``/api/overview`` and ``/api/batch/...``) answers a signed-in session or
Basic credentials, and 401 to anyone else; ``/api/anchors/...`` needs Basic. Every
request is audited and a refused one gives its reason (:mod:`.supervision`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from twin.control_site.anchors_api import anchor_records, as_json_lines
from twin.control_site.batch_views import batch_live, batch_page, hold_offered
from twin.control_site.boards import Boards
from twin.control_site.ingest import Ingest
from twin.control_site.live import batch_token, overview_token
from twin.control_site.logins import LoginGuard, LoginRefused, Logins, Users
from twin.control_site.pages import confirm_page, local_path, login_page
from twin.control_site.plans import Plans
from twin.control_site.quarantine import quarantine_rows
from twin.control_site.records import record_page
from twin.control_site.supervision import RequestRefused, Supervision
from twin.control_site.views import (
    OverviewQuery,
    overview_live,
    overview_page,
    overview_rows,
)
from twin.station.sessions import Session, Sessions
from twin.words import UnfitText, check_reason

__all__ = ["COOKIE", "Users", "make_app"]

#: The session cookie (not the station's: both may run on one host, and cookies ignore ports).
COOKIE = "poc_twin_control_site"
#: Longest reason accepted for a request (it goes into the batch record).
MAX_REASON = 1000

_SESSION = web.RequestKey("session", Session)

_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable,
}


def _refused(status: int, text: str, retry_after_s: float | None = None) -> web.HTTPException:
    """An HTTP error with a plain-text reason (and when to try again)."""
    headers = {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="poc-twin control site"'
    return _ERRORS.get(status, web.HTTPBadRequest)(text=text, headers=headers)


def _alarm_seq(request: web.Request) -> int:
    """The alarm's event number in the URL (digits by the route; a journal's seq fits 12)."""
    digits = request.match_info["alarm"]
    if len(digits) > 12:
        raise web.HTTPNotFound(text="no such alarm")
    return int(digits)


class _NotValid(ValueError):
    """A reason that cannot go into a batch record."""


def _reason(value: object) -> str:
    reason = str(value or "").strip()
    if not reason:
        raise _NotValid("a reason is required (it goes into the batch record)")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise _NotValid(f"a reason is one line of at most {MAX_REASON} printable characters")
    try:  # what the site checks it against before it journals it (twin.words)
        check_reason(reason)
    except UnfitText as exc:
        raise _NotValid(str(exc)) from None
    return reason


def make_app(
    ingest: Ingest,
    users: Users,
    refresh_s: float = 2.0,
    *,
    guard: LoginGuard | None = None,
    sessions: Sessions | None = None,
) -> web.Application:
    """The dashboard: sign-in, pages, their live parts, the signed acts and the JSON API.

    Every read runs in a thread: a query waits for the store's lock while a large
    flush is written, and must not stall the loop that receives MQTT meanwhile.
    """
    store = ingest.store
    logins = Logins(users, guard)
    supervision = Supervision(ingest)
    sessions = sessions or Sessions()
    boards, plans = Boards(), Plans()

    @web.middleware
    async def signed_in(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """A session for every page; for a POST the same origin and the session's token."""
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin.split("://", 1)[-1] != request.host:
                raise web.HTTPForbidden(text="cross-site request refused")
        path = request.path
        if path == "/login" or path.startswith("/api/anchors/"):
            return await handler(request)  # the anchors check their Basic login themselves
        if "Authorization" in request.headers:
            if request.method == "POST":
                return await handler(request)  # a program: its Basic login is checked there
            if path.startswith("/api/"):
                await basic_user(request)  # a program reading JSON: its Basic login, here
                return await handler(request)
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET" and not path.startswith("/api/"):
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
            raise _refused(401, "sign in first (or give a control-site user's credentials)")
        if request.method == "POST":
            form = await request.post()
            if not session.form_ok(form.get("csrf")):
                raise web.HTTPForbidden(text="the form is stale or not from this control site")
        request[_SESSION] = session
        return await handler(request)

    def html(text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, content_type="text/html", status=status)

    # -- signing in and out ------------------------------------------------------------

    async def login_form(request: web.Request) -> web.Response:
        next_url = local_path(request.query.get("next"))
        return html(login_page(next_url=next_url, no_users=len(users) == 0))

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        next_url = local_path(form.get("next"))
        try:
            user = await logins.check(
                str(form.get("user", "")), str(form.get("password", "")), request.remote or "?"
            )
        except LoginRefused as exc:
            response = html(login_page(str(exc), next_url, len(users) == 0), exc.status)
            if exc.retry_after_s is not None:
                response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            return response
        sid = sessions.start(Session(user, user, frozenset()))
        response = web.HTTPSeeOther(next_url)
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/")
        raise response

    async def logout(request: web.Request) -> web.Response:
        sessions.end(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- pages ---------------------------------------------------------------------------

    async def overview(request: web.Request) -> web.Response:
        query = OverviewQuery.parse(request.query)
        text = await asyncio.to_thread(
            lambda: overview_page(
                store, refresh_s, session=request[_SESSION], query=query, plans=plans
            )
        )
        return html(text)

    async def batch(request: web.Request) -> web.Response:
        site, name = request.match_info["site"], request.match_info["batch"]
        text = await asyncio.to_thread(
            lambda: batch_page(
                store, boards, site, name, refresh_s, session=request[_SESSION], plans=plans
            )
        )
        if text is None:
            raise web.HTTPNotFound(text="no such batch")
        return html(text)

    async def record(request: web.Request) -> web.Response:
        """The batch record, built from the stored events (:mod:`.records`)."""
        site, name = request.match_info["site"], request.match_info["batch"]
        text = await asyncio.to_thread(record_page, store, site, name)
        if text is None:
            raise web.HTTPNotFound(text="the control site holds no event of this batch")
        return html(text)

    def overview_changes(since: str, query: OverviewQuery) -> dict[str, object]:
        token = overview_token(store)
        if token == since:
            return {"token": token}
        return {"token": token, "html": overview_live(store, query, plans)}

    def batch_changes(site: str, name: str, since: str) -> dict[str, object] | None:
        token = batch_token(store, site, name)
        if token == since:
            return {"token": token}
        text = batch_live(store, boards, site, name, plans)
        return None if text is None else {"token": token, "html": text}

    async def api_overview(request: web.Request) -> web.Response:
        """What changed on the overview since the page's token (the page's script polls it)."""
        since, query = request.query.get("since", ""), OverviewQuery.parse(request.query)
        return web.json_response(await asyncio.to_thread(overview_changes, since, query))

    async def api_batch(request: web.Request) -> web.Response:
        site, name = request.match_info["site"], request.match_info["batch"]
        since = request.query.get("since", "")
        body = await asyncio.to_thread(batch_changes, site, name, since)
        if body is None:
            raise web.HTTPNotFound(text="no such batch")
        return web.json_response(body)

    async def api_batches(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(overview_rows, store, None, plans))

    async def api_quarantine(request: web.Request) -> web.Response:
        """The latest 1,000 quarantined messages (site, topic, reason, count, excerpt)."""
        return web.json_response(await asyncio.to_thread(quarantine_rows, store, 1000))

    async def anchors(request: web.Request) -> web.Response:
        """The batch's anchored head as JSON lines, for `poc-twin verify --anchor URL`."""
        await basic_user(request)
        site, name = request.match_info["site"], request.match_info["batch"]
        records = await asyncio.to_thread(anchor_records, store, site, name)
        if not records:
            raise web.HTTPNotFound(text="no anchored head for this batch")
        return web.Response(text=as_json_lines(records), content_type="application/x-ndjson")

    # -- acts ----------------------------------------------------------------------------

    async def basic_user(request: web.Request) -> str:
        try:
            return await logins.authenticate(
                request.headers.get("Authorization"), request.remote or "?"
            )
        except LoginRefused as exc:
            raise _refused(exc.status, str(exc), exc.retry_after_s) from None

    def describe(request: web.Request) -> tuple[str, str, str, str]:
        """(act, what, effect, where to go back) of the act a URL names."""
        site = request.match_info["site"]
        if "alarm" in request.match_info:
            name, seq = request.match_info["batch"], request.match_info["alarm"]
            return (
                "acknowledge",
                f"acknowledge alarm {seq} of batch {name} at site {site}",
                "The site's batch journals the acknowledgement as control-site:<you> with "
                "your reason as its comment; the alarm's cause is not changed.",
                f"/batch/{site}/{name}",
            )
        if "batch" in request.match_info:
            name = request.match_info["batch"]
            return (
                "hold",
                f"hold batch {name} at site {site}",
                "The site's batch goes to Held (equipment to its safe state) and records "
                "the hold as a command by control-site:<you> with your reason.",
                f"/batch/{site}/{name}",
            )
        act = request.match_info["action"]
        effect = (
            "The site may start no new batch until reinstated; running batches go on."
            if act == "suspend"
            else "The site may start batches again."
        )
        return act, f"{act} site {site}", effect, "/"

    async def confirm(request: web.Request) -> web.Response:
        """The confirmation of an act as a page (the button's target without script)."""
        act, what, effect, back = describe(request)
        if act == "acknowledge":
            try:
                await supervision.check_acknowledge(
                    request.match_info["site"],
                    request.match_info["batch"],
                    _alarm_seq(request),
                )
            except RequestRefused as exc:
                if exc.status == 404:
                    raise web.HTTPNotFound(text=str(exc)) from None
                request[_SESSION].flash.append(("error", f"{exc}: nothing to acknowledge"))
                raise web.HTTPSeeOther(back) from None
        elif act == "hold":
            site, name = request.match_info["site"], request.match_info["batch"]
            rows = await asyncio.to_thread(overview_rows, store, None, plans)
            row = next((r for r in rows if r["site"] == site and r["batch"] == name), None)
            if row is None:
                raise web.HTTPNotFound(text="no such batch")
            if not hold_offered(row):
                request[_SESSION].flash.append(
                    ("error", f"batch {name} is {row['state']}: there is nothing to hold")
                )
                raise web.HTTPSeeOther(back)
        else:
            site = request.match_info["site"]
            if not await asyncio.to_thread(store.site_known, site):
                raise web.HTTPNotFound(text="no such site")
            suspended = await asyncio.to_thread(store.site_suspended, site)
            if suspended == (act == "suspend"):
                state = "suspended" if suspended else "active"
                request[_SESSION].flash.append(("error", f"site {site} is already {state}"))
                raise web.HTTPSeeOther(back)
        return html(confirm_page(request[_SESSION], request.path, what, effect, back))

    async def send(request: web.Request, operator: str, reason: str, by_person: bool) -> str:
        """The act of this URL, through supervision: the request id, or RequestRefused."""
        site = request.match_info["site"]
        if "alarm" in request.match_info:
            return await supervision.acknowledge(
                site,
                request.match_info["batch"],
                _alarm_seq(request),
                operator=operator,
                reason=reason,
            )
        if "batch" in request.match_info:
            return await supervision.hold(
                site, request.match_info["batch"], operator=operator, reason=reason
            )
        return await supervision.suspend(
            site,
            request.match_info["action"] == "suspend",
            operator=operator,
            reason=reason,
            only_a_change=by_person,
        )

    async def act(request: web.Request) -> web.Response:
        """A hold or a suspension: a person's signed form, or a program's Basic POST."""
        if _SESSION not in request:
            return await act_by_program(request)
        session = request[_SESSION]
        form = await request.post()
        action, what, _, back = describe(request)
        back = local_path(form.get("next"), back)
        try:
            reason = _reason(form.get("reason"))
        except _NotValid as exc:
            session.flash.append(("error", f"Not sent: {exc}."))
            raise web.HTTPSeeOther(back) from None
        try:
            await logins.check(session.user, str(form.get("password", "")), request.remote or "?")
        except LoginRefused as exc:
            site = request.match_info["site"]
            name = request.match_info.get("batch", "-")
            audited = (
                f"acknowledge alarm {_alarm_seq(request)}" if action == "acknowledge" else action
            )
            await supervision.refuse(
                site, name, audited, session.user, reason, f"not signed: {exc}"
            )
            session.flash.append(("error", f"Not signed ({exc}): nothing was sent."))
            raise web.HTTPSeeOther(back) from None
        try:
            await send(request, session.user, reason, by_person=True)
        except RequestRefused as exc:
            text = str(exc)
            said = (
                text[0].upper() + text[1:] if text.startswith("not sent") else f"Not sent: {text}"
            )
            session.flash.append(("error", f"{said}."))
            raise web.HTTPSeeOther(back) from None
        after = {
            "hold": " The batch shows Held once the site has taken it.",
            "acknowledge": " The alarm shows acknowledged once the site has journalled it.",
        }.get(action, "")
        session.flash.append(
            ("ok", f"Sent: {what}, signed by {session.user}, reason “{reason}”.{after}")
        )
        raise web.HTTPSeeOther(back)

    async def act_by_program(request: web.Request) -> web.Response:
        user = await basic_user(request)
        try:
            reason = _reason((await request.post()).get("reason"))
        except _NotValid as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        try:
            rid = await send(request, user, reason, by_person=False)
        except RequestRefused as exc:
            raise _refused(exc.status, str(exc)) from None
        return web.json_response({"status": "sent", "request": rid})

    app = web.Application(middlewares=[signed_in])
    app.add_routes(
        [
            web.get("/login", login_form),
            web.post("/login", login),
            web.post("/logout", logout),
            web.get("/", overview),
            web.get("/batch/{site}/{batch}", batch),
            web.get("/batch/{site}/{batch}/record", record),
            web.get("/batch/{site}/{batch}/hold", confirm),
            web.post("/batch/{site}/{batch}/hold", act),
            web.get("/batch/{site}/{batch}/alarm/{alarm:[0-9]+}/acknowledge", confirm),
            web.post("/batch/{site}/{batch}/alarm/{alarm:[0-9]+}/acknowledge", act),
            web.get("/site/{site}/{action:suspend|reinstate}", confirm),
            web.post("/site/{site}/{action:suspend|reinstate}", act),
            web.get("/api/anchors/{site}/{batch}", anchors),
            web.get("/api/batches", api_batches),
            web.get("/api/quarantine", api_quarantine),
            web.get("/api/overview", api_overview),
            web.get("/api/batch/{site}/{batch}", api_batch),
        ]
    )

    async def close_logins(app: web.Application) -> None:
        logins.close()

    app.on_cleanup.append(close_logins)
    return app
