"""``poc-twin control-site serve``: ingest and dashboard on one real-time asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web

from twin.control_site.ingest import Ingest
from twin.control_site.keys import SiteKeys
from twin.control_site.logins import LoginGuard
from twin.control_site.store import open_store
from twin.control_site.web import Users, make_app
from twin.listening import listen
from twin.telemetry.credentials import resolve_broker
from twin.telemetry.topics import TelemetryError

__all__ = ["ControlSite", "NotStarted", "serve"]


#: How long the control site waits for its broker before it gives up starting.
CONNECT_S = 10.0


class NotStarted(TelemetryError):
    """An option the control site cannot start with (its address, store or users file)."""


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
        try:
            people = Users(users)
            self.store = open_store(db, self.keys)
        except OSError as exc:
            raise NotStarted(f"--users {users}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise NotStarted(f"--users {users}: not a text file") from None
        except TelemetryError as exc:  # a users file's line, a store that does not open
            raise NotStarted(str(exc)) from None
        # the password from the URL or POC_TWIN_BROKER_PASSWORD_FILE, never echoed in errors
        self.ingest = Ingest(resolve_broker(broker), self.store)
        self.app = make_app(self.ingest, people, refresh_s, guard=login_guard)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The dashboard's address bound first, then subscribed; returns once both are up, so
        nothing sent after it is missed. Bound first: a second control site started by
        mistake on the same address fails before it connects to the broker as ``control``
        (the broker closes the older connection of a client id: the running control site
        lost a minute of messages to each failed start)."""
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        try:
            await listen(self._runner, self.host, self.port, "control site")
        except OSError as exc:
            await self.stop()
            raise NotStarted(exc.strerror) from None
        self._task = asyncio.create_task(self.ingest.run())
        try:
            await asyncio.wait_for(self.ingest.ready.wait(), CONNECT_S)
        except TimeoutError:
            await self.stop()
            broker = self.ingest.broker
            why = self.ingest.last_error or "no answer"
            raise NotStarted(
                f"--broker {broker.host}:{broker.port}: not connected within {CONNECT_S:g} s "
                f"({why}); is the broker running, are the login and password right?"
            ) from None

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
    on_started: Callable[[], None] | None = None,
) -> None:
    site = ControlSite(broker, db, host, port, users, site_keys=site_keys, refresh_s=refresh_s)
    await site.start()
    if on_started is not None:
        on_started()
    try:
        await asyncio.Event().wait()
    finally:
        await site.stop()
