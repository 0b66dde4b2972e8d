"""The dashboard over HTTP (aiohttp) and the supervision requests an authorised user may make.

Reading is open to whoever reaches the address (bind it to the control room's
network); a request to a site (hold a batch, suspend or reinstate a site) needs
a user from the users file (HTTP Basic over the control room's TLS proxy) and a
same-origin POST, so a page elsewhere cannot make a logged-in browser send one.
Logins are checked off the event loop and rate limited (:mod:`.logins`); every
request is audited and a refused one answered 4xx with the reason
(:mod:`.supervision`).
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from twin.control_site.anchors_api import anchor_records, as_json_lines
from twin.control_site.ingest import Ingest
from twin.control_site.live import batch_token, overview_token
from twin.control_site.logins import LoginGuard, LoginRefused, Logins, Users
from twin.control_site.quarantine import quarantine_rows
from twin.control_site.supervision import RequestRefused, Supervision
from twin.control_site.views import (
    batch_live,
    batch_page,
    overview_live,
    overview_page,
    overview_rows,
)

__all__ = ["Users", "make_app"]


#: Longest reason accepted for a request (it goes into the batch record).
MAX_REASON = 1000


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


def make_app(
    ingest: Ingest, users: Users, refresh_s: float = 2.0, *, guard: LoginGuard | None = None
) -> web.Application:
    """The dashboard: pages, their JSON endpoints and the supervision requests.

    Every read runs in a thread: a query waits for the store's lock while a large
    flush is written, and must not stall the loop that receives MQTT meanwhile.
    """
    store = ingest.store
    logins = Logins(users, guard)
    supervision = Supervision(ingest)

    async def authorised(request: web.Request) -> str:
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="cross-site request refused")
        try:
            return await logins.authenticate(
                request.headers.get("Authorization"), request.remote or "?"
            )
        except LoginRefused as exc:
            raise _refused(exc.status, str(exc), exc.retry_after_s) from None

    async def overview(request: web.Request) -> web.Response:
        page = await asyncio.to_thread(overview_page, store, refresh_s)
        return web.Response(text=page, content_type="text/html")

    async def batch(request: web.Request) -> web.Response:
        site, name = request.match_info["site"], request.match_info["batch"]
        page = await asyncio.to_thread(batch_page, store, site, name, refresh_s)
        if page is None:
            raise web.HTTPNotFound(text="no such batch")
        return web.Response(text=page, content_type="text/html")

    async def api_batches(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(overview_rows, store))

    def overview_changes(since: str) -> dict[str, object]:
        token = overview_token(store)
        if token == since:
            return {"token": token}
        return {"token": token, "html": overview_live(store)}

    def batch_changes(site: str, name: str, since: str) -> dict[str, object] | None:
        token = batch_token(store, site, name)
        if token == since:
            return {"token": token}
        html = batch_live(store, site, name)
        return None if html is None else {"token": token, "html": html}

    async def api_overview(request: web.Request) -> web.Response:
        """What changed on the overview since the page's token (the page's script polls it)."""
        since = request.query.get("since", "")
        return web.json_response(await asyncio.to_thread(overview_changes, since))

    async def api_batch(request: web.Request) -> web.Response:
        site, name = request.match_info["site"], request.match_info["batch"]
        since = request.query.get("since", "")
        body = await asyncio.to_thread(batch_changes, site, name, since)
        if body is None:
            raise web.HTTPNotFound(text="no such batch")
        return web.json_response(body)

    async def reason_of(request: web.Request) -> str:
        form = await request.post()
        reason = str(form.get("reason", "")).strip()
        if not reason:
            raise web.HTTPBadRequest(text="a reason is required (it goes into the batch record)")
        if len(reason) > MAX_REASON or not reason.isprintable():
            raise web.HTTPBadRequest(
                text=f"a reason is one line of at most {MAX_REASON} printable characters"
            )
        return reason

    async def hold(request: web.Request) -> web.Response:
        user = await authorised(request)
        site, name = request.match_info["site"], request.match_info["batch"]
        reason = await reason_of(request)
        try:
            rid = await supervision.hold(site, name, operator=user, reason=reason)
        except RequestRefused as exc:
            raise _refused(exc.status, str(exc)) from None
        return web.json_response({"status": "sent", "request": rid})

    async def suspension(request: web.Request) -> web.Response:
        user = await authorised(request)
        suspend = request.match_info["action"] == "suspend"
        reason = await reason_of(request)
        try:
            rid = await supervision.suspend(
                request.match_info["site"], suspend, operator=user, reason=reason
            )
        except RequestRefused as exc:
            raise _refused(exc.status, str(exc)) from None
        return web.json_response({"status": "sent", "request": rid})

    async def api_quarantine(request: web.Request) -> web.Response:
        """The latest 1,000 quarantined messages (site, topic, reason, count, excerpt)."""
        return web.json_response(await asyncio.to_thread(quarantine_rows, store, 1000))

    async def anchors(request: web.Request) -> web.Response:
        """The batch's anchored head as JSON lines, for `poc-twin verify --anchor URL`."""
        await authorised(request)
        site, name = request.match_info["site"], request.match_info["batch"]
        records = await asyncio.to_thread(anchor_records, store, site, name)
        if not records:
            raise web.HTTPNotFound(text="no anchored head for this batch")
        return web.Response(text=as_json_lines(records), content_type="application/x-ndjson")

    app = web.Application()
    app.add_routes(
        [
            web.get("/api/anchors/{site}/{batch}", anchors),
            web.get("/", overview),
            web.get("/api/batches", api_batches),
            web.get("/api/quarantine", api_quarantine),
            web.get("/api/overview", api_overview),
            web.get("/api/batch/{site}/{batch}", api_batch),
            web.get("/batch/{site}/{batch}", batch),
            web.post("/batch/{site}/{batch}/hold", hold),
            web.post("/site/{site}/{action:suspend|reinstate}", suspension),
        ]
    )

    async def close_logins(app: web.Application) -> None:
        logins.close()

    app.on_cleanup.append(close_logins)
    return app
