"""``poc-twin control-site serve``: ingest and dashboard on one real-time asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from twin.control_site.ingest import Ingest
from twin.control_site.keys import SiteKeys
from twin.control_site.logins import LoginGuard
from twin.control_site.store import open_store
from twin.control_site.web import Users, make_app
from twin.telemetry.credentials import resolve_broker

__all__ = ["ControlSite", "serve"]


class ControlSite:
    """Store + ingest + web app, started and stopped together (CLI, tests, benchmark)."""

    def __init__(
        self,
        broker: str,
        db: str,
        host: str,
        port: int,
        users: Path | None,
        *,
        site_keys: Iterable[Path] = (),
        refresh_s: float = 2.0,
        login_guard: LoginGuard | None = None,
    ) -> None:
        keys = list(site_keys)
        self.keys = SiteKeys(keys) if keys else None
        self.store = open_store(db, self.keys)
        # the password from the URL or POC_TWIN_BROKER_PASSWORD_FILE, never echoed in errors
        self.ingest = Ingest(resolve_broker(broker), self.store)
        self.app = make_app(self.ingest, Users(users), refresh_s, guard=login_guard)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribed first, then serving: once the dashboard answers, nothing sent is missed."""
        self._task = asyncio.create_task(self.ingest.run())
        await asyncio.wait_for(self.ingest.ready.wait(), 10)
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()


async def serve(
    broker: str,
    db: str,
    host: str,
    port: int,
    users: Path | None,
    *,
    site_keys: Iterable[Path] = (),
    refresh_s: float = 2.0,
) -> None:
    site = ControlSite(broker, db, host, port, users, site_keys=site_keys, refresh_s=refresh_s)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await site.stop()
