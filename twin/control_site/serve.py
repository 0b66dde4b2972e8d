"""``poc-twin control-site serve``: ingest and dashboard on one real-time asyncio loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from twin.control_site.ingest import Ingest
from twin.control_site.store import open_store
from twin.control_site.web import Users, make_app
from twin.telemetry.topics import BrokerURL

__all__ = ["ControlSite", "serve"]


class ControlSite:
    """Store + ingest + web app, started and stopped together (CLI, tests, benchmark)."""

    def __init__(self, broker: str, db: str, host: str, port: int, users: Path | None) -> None:
        self.store = open_store(db)
        self.ingest = Ingest(BrokerURL.parse(broker), self.store)
        self.app = make_app(self.ingest, Users(users))
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.ingest.run())
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        await asyncio.wait_for(self.ingest.ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()


async def serve(broker: str, db: str, host: str, port: int, users: Path | None) -> None:
    site = ControlSite(broker, db, host, port, users)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await site.stop()
