"""MQTT identities against a real Mosquitto: a site cannot take the control site's or another
site's client id, and persistent sessions keep what arrives while a client is away.

The attack (issue 19): a site logged in as itself connects with the control site's client
id, clean session. Without a binding of ids to logins the broker closes the control site's
connection and drops its session; a batch acknowledged to its forwarder meanwhile was
never stored. The broker now replaces every client id by the login.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from twin.clock import wall_monotonic
from twin.control_site.serve import ControlSite
from twin.journal import read_events
from twin.telemetry.broker import BrokerConfig, Mosquitto, free_port
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL

REPO = Path(__file__).resolve().parents[2]
#: The ids the real clients ask for (twin.control_site.ingest, twin.telemetry.forwarder).
CONTROL_ID = "poc-twin-control-control"
TAKEOVER = "already connected, closing old connection"


@dataclass(frozen=True)
class Fleet:
    """A broker of its own (its log is read) and a recorded batch to forward."""

    config: BrokerConfig
    journal: Path
    batch: str
    total: int

    @property
    def log(self) -> str:
        return (self.config.directory / "mosquitto.log").read_text()


def record_batch(journal: Path, batch: str) -> None:
    """A smoke batch on the twin, no broker: the journal the forwarder will deliver."""
    env = {**os.environ, "POC_TWIN_TELEMETRY_GIVE_UP_S": "45"}
    code = "from twin.cli import main; main()"
    argv = ["run", "recipes/smoke.yaml", "--journal", str(journal), "--batch-id", batch, "-q"]
    ran = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("identities")
    config = BrokerConfig(root / "mosquitto", port=free_port())
    for name in ("site-a", "site-b"):
        config.add_site(name)
    config.add_control("control")
    journal = root / "tk1.sqlite"
    record_batch(journal, "tk1")
    with Mosquitto(config):
        yield Fleet(config, journal, "tk1", len(list(read_events(journal))))


def client(config: BrokerConfig, user: str, identifier: str, clean: bool) -> aiomqtt.Client:
    return aiomqtt.Client(
        **BrokerURL.parse(config.url(user)).client_kwargs(),
        identifier=identifier,
        clean_session=clean,
        timeout=10,
    )


def stored_seqs(site: ControlSite, batch: str) -> list[int]:
    rows = site.store.query("SELECT seq FROM events WHERE batch=? ORDER BY seq", (batch,))
    return [r[0] for r in rows]


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = wall_monotonic() + timeout
    while not predicate():
        assert wall_monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)  # real time: waiting for the broker and the control site


async def hostile(config: BrokerConfig, ids: list[str], until: asyncio.Task[bool]) -> int:
    """site-b, logged in as itself, connects with each of ``ids`` (clean session) over and
    over until ``until`` is done; returns how many attempts it made."""
    attempts = 0
    while not until.done():
        for identifier in ids:
            async with client(config, "site-b", identifier, clean=True) as c:
                await c.publish("poc-twin/site-b/u/x/status", b'{"v":1}', qos=1)
            attempts += 1
        await asyncio.sleep(0.01)  # real time: keep trying while the batch is forwarded
    return attempts


def test_a_site_cannot_take_the_control_sites_or_another_sites_client_id(
    fleet: Fleet, tmp_path: Path
):
    url = BrokerURL.parse(fleet.config.url("site-a", unit="cleanroom-1"))
    forwarder_id = f"poc-twin-site-a-cleanroom-1-{fleet.batch}"
    log_before = len(fleet.log)

    async def scenario() -> tuple[list[int], int, int]:
        site = ControlSite(
            fleet.config.url("control"), str(tmp_path / "cs.sqlite"), "127.0.0.1", free_port(), None
        )
        await site.start()
        try:
            forwarder = Forwarder(fleet.journal, url, chunk=50)  # many round trips to disturb
            delivery = asyncio.create_task(forwarder.run(give_up_s=30))
            await forwarder.connected.wait()
            attempts = await hostile(fleet.config, [CONTROL_ID, forwarder_id], delivery)
            assert await delivery
            await wait_for(lambda: len(stored_seqs(site, fleet.batch)) >= fleet.total)
            return stored_seqs(site, fleet.batch), attempts, forwarder.sessions
        finally:
            await site.stop()

    seqs, attempts, sessions = asyncio.run(scenario())
    assert attempts >= 1
    assert seqs == list(range(1, fleet.total + 1))  # the whole batch, stored once
    assert sessions == 1  # the forwarder was never disconnected
    log = fleet.log[log_before:]
    closed = [line for line in log.splitlines() if TAKEOVER in line]
    assert closed == []  # nor was the control site: nobody's connection was closed
    assert f"as {CONTROL_ID}" not in log and f"as {forwarder_id}" not in log
    assert "as site-b (" in log  # the hostile site got its own login as its id


def test_a_takeover_attempt_while_the_control_site_is_away_loses_nothing(
    fleet: Fleet, tmp_path: Path
):
    """The control site's persistent session (its login is its id) keeps what sites publish
    while it restarts, and a clean-session connect with its old id cannot wipe it."""
    db = str(tmp_path / "cs.sqlite")
    journal = tmp_path / "away.sqlite"
    record_batch(journal, "away1")
    total = len(list(read_events(journal)))

    async def scenario() -> list[int]:
        first = ControlSite(fleet.config.url("control"), db, "127.0.0.1", free_port(), None)
        await first.start()  # subscribed: the session exists at the broker
        await first.stop()
        async with client(fleet.config, "site-b", CONTROL_ID, clean=True):
            url = BrokerURL.parse(fleet.config.url("site-a", unit="cleanroom-2"))
            assert await Forwarder(journal, url).run(give_up_s=30)
        again = ControlSite(fleet.config.url("control"), db, "127.0.0.1", free_port(), None)
        await again.start()
        try:
            await wait_for(lambda: len(stored_seqs(again, "away1")) >= total)
            return stored_seqs(again, "away1")
        finally:
            await again.stop()

    assert asyncio.run(scenario()) == list(range(1, total + 1))


def test_two_forwarders_of_one_login_take_turns_and_both_deliver(fleet: Fleet, tmp_path: Path):
    """One login is one client id: two batches of one site forwarding at once take the
    session from each other. They must settle into turns, not a livelock, and lose nothing."""
    second = tmp_path / "tk2.sqlite"
    record_batch(second, "tk2")
    total2 = len(list(read_events(second)))
    url = BrokerURL.parse(fleet.config.url("site-a", unit="cleanroom-3"))
    fresh = tmp_path / "tk1-again.sqlite"  # the fixture's journal, its ack file not shared
    fresh.write_bytes(fleet.journal.read_bytes())

    async def scenario() -> tuple[list[int], list[int]]:
        site = ControlSite(
            fleet.config.url("control"), str(tmp_path / "cs.sqlite"), "127.0.0.1", free_port(), None
        )
        await site.start()
        try:
            both = [Forwarder(j, url, chunk=100).run(give_up_s=60) for j in (fresh, second)]
            assert all(await asyncio.gather(*both))
            await wait_for(
                lambda: (
                    len(stored_seqs(site, "tk1")) >= fleet.total
                    and len(stored_seqs(site, "tk2")) >= total2
                )
            )
            return stored_seqs(site, "tk1"), stored_seqs(site, "tk2")
        finally:
            await site.stop()

    first_seqs, second_seqs = asyncio.run(scenario())
    assert first_seqs == list(range(1, fleet.total + 1))
    assert second_seqs == list(range(1, total2 + 1))


class UnboundConfig(BrokerConfig):
    """The broker as it was: client ids not bound to logins."""

    def listeners(self) -> list[str]:
        return [line for line in super().listeners() if "use_username_as_clientid" not in line]


def test_without_the_binding_the_takeover_closes_the_control_sites_connection(tmp_path: Path):
    """Why the binding: on the old configuration the same attempt succeeds."""
    config = UnboundConfig(tmp_path / "unbound", port=free_port())
    config.add_site("site-b")
    config.add_control("control")

    async def scenario() -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # its DISCONNECT finds the socket closed
            async with (
                client(config, "control", CONTROL_ID, clean=False),
                client(config, "site-b", CONTROL_ID, clean=True),
            ):
                pass

    with Mosquitto(config):
        asyncio.run(scenario())
    log = (config.directory / "mosquitto.log").read_text()  # complete: mosquitto has stopped
    assert f"Client {CONTROL_ID} {TAKEOVER}" in log
