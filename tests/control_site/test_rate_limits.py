"""Dashboard logins: scrypt off the event loop, rate limits per user and address, lockout.

The dashboard is served for real (aiohttp on loopback) and asked over HTTP; the
login guard's clock is a counter the test moves, so a five-minute lockout is
stepped through, not waited out.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from twin.control_site.ingest import Ingest
from twin.control_site.logins import LoginGuard, Users
from twin.control_site.store import open_store
from twin.control_site.web import make_app
from twin.telemetry.broker import free_port
from twin.telemetry.topics import BrokerURL


class Clock:
    """The guard's time, moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def post(url: str, user: str, password: str) -> tuple[int, str, str | None]:
    """(status, body, Retry-After) of a hold-style POST with Basic credentials."""
    request = urllib.request.Request(url, data=b"reason=check", method="POST")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("Retry-After")


@asynccontextmanager
async def dashboard(tmp_path: Path, guard: LoginGuard) -> AsyncIterator[str]:
    """The real app on a free loopback port (its ingest not started: no broker needed)."""
    users = tmp_path / "users"
    users.write_text(Users.line("alice", "s3cret") + "\n" + Users.line("bob", "b0b") + "\n")
    store = open_store(str(tmp_path / "cs.sqlite"))
    ingest = Ingest(BrokerURL.parse("mqtt://control:x@127.0.0.1:1/"), store)
    runner = web.AppRunner(make_app(ingest, Users(users), guard=guard))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/site/site-a/reinstate"  # 404 once logged in
    finally:
        await runner.cleanup()
        store.close()


def run(tmp_path: Path, guard: LoginGuard, steps: Callable[[str], object]) -> None:
    async def scenario() -> None:
        async with dashboard(tmp_path, guard) as url:
            await asyncio.to_thread(steps, url)

    asyncio.run(scenario())


def test_a_user_is_locked_out_after_five_wrong_passwords(tmp_path: Path):
    clock = Clock()

    def steps(url: str) -> None:
        for _ in range(5):
            assert post(url, "alice", "guess")[0] == 401
        status, text, retry = post(url, "alice", "s3cret")  # the right one, too late
        assert status == 429 and "locked out" in text and retry == "300"
        assert post(url, "bob", "b0b")[0] == 404  # another user from the same address
        clock.t += 301
        assert post(url, "alice", "s3cret")[0] == 404  # logged in: no site-a here

    run(tmp_path, LoginGuard(now=clock), steps)


def test_an_address_is_locked_out_after_failures_for_any_users(tmp_path: Path):
    clock = Clock()

    def steps(url: str) -> None:
        for i in range(6):
            assert post(url, f"user{i}", "guess")[0] == 401
        status, text, _ = post(url, "alice", "s3cret")
        assert status == 429 and "this address" in text
        clock.t += 301
        assert post(url, "alice", "s3cret")[0] == 404

    run(tmp_path, LoginGuard(now=clock, address_failures=6), steps)


def test_logins_per_minute_are_limited_and_a_success_clears_failures(tmp_path: Path):
    clock = Clock()

    def steps(url: str) -> None:
        for _ in range(4):
            assert post(url, "alice", "guess")[0] == 401
        assert post(url, "alice", "s3cret")[0] == 404  # the fifth is right: failures cleared
        for _ in range(4):
            assert post(url, "alice", "guess")[0] == 401
        assert post(url, "alice", "s3cret")[0] == 404
        status, text, retry = post(url, "alice", "s3cret")  # 11th attempt in one minute
        assert status == 429 and "last minute" in text and retry is not None
        clock.t += 61
        assert post(url, "alice", "s3cret")[0] == 404

    run(tmp_path, LoginGuard(now=clock, attempts_per_minute=10), steps)


def test_password_hashing_does_not_stall_the_event_loop(tmp_path: Path, monkeypatch) -> None:
    """Eight logins at once (about 50 ms of scrypt each): every hash runs on the hashers'
    threads, never the loop's, and the loop keeps its beat: its worst lateness stays below
    half the eight hashes' work (what one hasher thread on the loop would stall it by),
    however loaded the machine, since the hash is timed in the same run."""
    guard = LoginGuard(attempts_per_minute=100, user_failures=100, address_failures=100)
    threads: set[str] = set()
    verify = Users.verify

    def spied(self: Users, name: str, password: str) -> bool:
        threads.add(threading.current_thread().name)
        return verify(self, name, password)

    monkeypatch.setattr(Users, "verify", spied)

    async def scenario() -> tuple[float, list[int], str]:
        async with dashboard(tmp_path, guard) as url:
            lag, done = 0.0, asyncio.Event()

            async def beat() -> None:
                nonlocal lag
                while not done.is_set():
                    start = time.perf_counter()
                    await asyncio.sleep(0.005)  # real time: the beat whose lateness is measured
                    lag = max(lag, time.perf_counter() - start - 0.005)

            beating = asyncio.create_task(beat())
            logins = [asyncio.to_thread(post, url, f"u{i}", "guess") for i in range(8)]
            statuses = [r[0] for r in await asyncio.gather(*logins)]
            done.set()
            await beating
            return lag, statuses, threading.current_thread().name

    lag, statuses, loop_thread = asyncio.run(scenario())
    assert statuses == [401] * 8
    assert threads and all(t.startswith("scrypt") for t in threads), threads
    assert loop_thread not in threads
    start = time.perf_counter()
    Users.line("u0", "guess")  # one hash, timed on this machine now
    one_hash = time.perf_counter() - start
    stalled = f"the loop stalled {lag * 1000:.0f} ms (one scrypt: {one_hash * 1000:.0f} ms)"
    assert lag < 4 * one_hash, stalled
