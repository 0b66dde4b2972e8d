"""The operator station served for real on loopback, and a person's browser session to it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import TracebackType

import aiohttp

from twin.clock import wall_monotonic, wall_sleep
from twin.errors import JournalError
from twin.journal import Event, Journal, read_events
from twin.station.acts import Station
from twin.station.serve import StationServer

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def events_of(journal: Path) -> list[Event]:
    """The journal as far as another process has written it (nothing yet: empty)."""
    try:
        return list(read_events(journal))
    except JournalError:
        return []


def wait_for_event(journal: Path, kind: str, proc: subprocess.Popen[str]) -> None:
    """Wait (real time: another process writes the journal) for the first ``kind`` event."""
    deadline = wall_monotonic() + 60
    while not any(e.kind == kind for e in events_of(journal)):
        assert proc.poll() is None, proc.communicate()[1]
        assert wall_monotonic() < deadline, f"no {kind} event"
        wall_sleep(0.05)


def ended_batch(path: Path, message: str = "temperature 39.1 beyond high 38.5") -> Path:
    """A finished batch's journal with a minor and a critical alarm (written as a batch does)."""
    clock = iter(float(t) for t in range(0, 10**6, 60))
    j = Journal(path, lambda: next(clock), signer=None)
    recipe = {"id": "smoke", "version": "1.0.0", "parameters": {}}
    j.append("batch_started", "batch", {"batch_id": path.stem, "operator": "kim", "recipe": recipe})
    j.append("transition", "procedure:smoke", {"from": "Idle", "to": "Running"})
    values = {"temperature_c": 37.1, "do_pct": 41.0, "ph": 7.2, "viable_cells_per_ml": 1.2e6}
    j.append("reading", "bioreactor", {"what": "pv", "values": {**values, "volume_ml": 100.0}})
    j.append(
        "alarm",
        "bioreactor",
        {
            "alarm": "do low",
            "kind": "limit",
            "reaction": "none",
            "message": "dissolved oxygen 14 below low 15",
        },
    )
    j.append(
        "alarm",
        "bioreactor",
        {"alarm": "temp", "kind": "limit", "reaction": "hold", "message": message},
    )
    j.append("transition", "procedure:smoke", {"from": "Running", "to": "Complete"})
    j.append("batch_ended", "batch", {"state": "Complete"})
    j.close()
    return path


class Person:
    """One person's browser: its own cookies, signed in or not."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def get(self, path: str) -> tuple[int, str, str]:
        """Status, final URL path and text of a GET (redirects followed)."""
        async with self.http.get(self.base + path) as r:
            text = await r.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return r.status, r.url.path, text

    async def post(
        self, path: str, form: dict[str, str], *, csrf: bool = True, **headers: str
    ) -> tuple[int, str, str]:
        """Status, final URL path and text of a form POST (the page it redirects to)."""
        data = {**({"csrf": self.csrf} if csrf else {}), **form}
        async with self.http.post(self.base + path, data=data, headers=headers) as r:
            text = await r.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return r.status, r.url.path, text

    async def sign_in(self, user: str, password: str) -> tuple[int, str, str]:
        return await self.post("/login", {"user": user, "password": password}, csrf=False)

    async def close(self) -> None:
        await self.http.close()


class RunningStation:
    """``async with RunningStation(runs, users) as station: person = station.person()``."""

    def __init__(self, runs: Path, users: Path) -> None:
        self.server = StationServer(runs, Station(users), "127.0.0.1", 0)
        self.people: list[Person] = []
        self.base = ""

    async def __aenter__(self) -> RunningStation:
        port = await self.server.start()
        self.base = f"http://127.0.0.1:{port}"
        return self

    def person(self) -> Person:
        person = Person(self.base)
        self.people.append(person)
        return person

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for person in self.people:
            await person.close()
        await self.server.stop()
