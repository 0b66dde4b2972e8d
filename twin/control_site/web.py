"""The dashboard over HTTP (aiohttp) and the supervision requests an authorised user may make.

Reading is open to whoever reaches the address (bind it to the control room's
network); a request to a site (hold a batch, suspend or reinstate a site) needs
a user from the users file (HTTP Basic over the control room's TLS proxy) and a
same-origin POST, so a page elsewhere cannot make a logged-in browser send one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from aiohttp import web

from twin.control_site.anchors_api import anchor_records, as_json_lines
from twin.control_site.ingest import Ingest
from twin.control_site.live import batch_token, overview_token
from twin.control_site.views import (
    batch_live,
    batch_page,
    overview_live,
    overview_page,
    overview_rows,
)

__all__ = ["Users", "make_app"]


class Users:
    """``name:scrypt:SALT:HASH`` lines; ``Users.line(name, password)`` makes one."""

    def __init__(self, path: Path | None) -> None:
        self._users: dict[str, tuple[bytes, bytes]] = {}
        if path is not None:
            for line in Path(path).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    name, _, salt, digest = line.strip().split(":")
                    self._users[name] = (bytes.fromhex(salt), bytes.fromhex(digest))

    @staticmethod
    def _hash(password: str, salt: bytes) -> bytes:
        return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)

    @classmethod
    def line(cls, name: str, password: str) -> str:
        salt = secrets.token_bytes(16)
        return f"{name}:scrypt:{salt.hex()}:{cls._hash(password, salt).hex()}"

    def check(self, header: str | None) -> str | None:
        """The user name for a valid ``Authorization: Basic`` header, else None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        known = self._users.get(name)
        if known is None or not hmac.compare_digest(self._hash(password, known[0]), known[1]):
            return None
        return name


def make_app(ingest: Ingest, users: Users, refresh_s: float = 2.0) -> web.Application:
    """The dashboard: pages, their JSON endpoints and the supervision requests.

    Every read runs in a thread: a query waits for the store's lock while a large
    flush is written, and must not stall the loop that receives MQTT meanwhile.
    """
    store = ingest.store

    def authorised(request: web.Request) -> str:
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="cross-site request refused")
        user = users.check(request.headers.get("Authorization"))
        if user is None:
            raise web.HTTPUnauthorized(
                text="a control-site user is needed for requests to sites",
                headers={"WWW-Authenticate": 'Basic realm="poc-twin control site"'},
            )
        return user

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
        return reason

    async def hold(request: web.Request) -> web.Response:
        user = authorised(request)
        site, name = request.match_info["site"], request.match_info["batch"]
        try:
            rid = await ingest.request_hold(
                site, name, operator=user, reason=await reason_of(request)
            )
        except KeyError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.json_response({"status": "sent", "request": rid})

    async def suspension(request: web.Request) -> web.Response:
        user = authorised(request)
        suspend = request.match_info["action"] == "suspend"
        rid = await ingest.set_suspended(
            request.match_info["site"], suspend, operator=user, reason=await reason_of(request)
        )
        return web.json_response({"status": "sent", "request": rid})

    async def anchors(request: web.Request) -> web.Response:
        """The batch's anchored head as JSON lines, for `poc-twin verify --anchor URL`."""
        authorised(request)
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
            web.get("/api/overview", api_overview),
            web.get("/api/batch/{site}/{batch}", api_batch),
            web.get("/batch/{site}/{batch}", batch),
            web.post("/batch/{site}/{batch}/hold", hold),
            web.post("/site/{site}/{action:suspend|reinstate}", suspension),
        ]
    )
    return app
