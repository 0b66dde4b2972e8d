"""Serving the station on a real-time loop (the CLI and the tests start it alike)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from twin.errors import PocTwinError
from twin.listening import listen
from twin.station.acts import Station
from twin.station.forecasts import Forecaster
from twin.station.web import make_app

__all__ = ["NotListening", "StationServer", "serve"]


class NotListening(PocTwinError):
    """The station's ``--http`` address cannot be listened on (in use, not this machine's)."""


class StationServer:
    """The station's web app on HOST:PORT, started and stopped together."""

    def __init__(
        self,
        runs: Path,
        station: Station,
        host: str,
        port: int,
        forecaster: Forecaster | None = None,
    ) -> None:
        self.app = make_app(runs, station, forecaster=forecaster)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; the port actually bound (0 asks for a free one)."""
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        try:
            site = await listen(self._runner, self.host, self.port, "station")
        except OSError as exc:  # in use, or not this machine's address: one sentence
            await self.stop()
            raise NotListening(exc.strerror) from None
        server = site._server  # aiohttp keeps the listening socket here
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def serve(
    runs: Path,
    station: Station,
    host: str,
    port: int,
    forecaster: Forecaster | None = None,
    listening: Callable[[int], None] = lambda port: None,
) -> None:
    """Serve until cancelled; ``listening`` is told the port bound (0 asks for a free one)."""
    server = StationServer(runs, station, host, port, forecaster)
    listening(await server.start())
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
