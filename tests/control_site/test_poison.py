"""One bad message from a logged-in site must not stop the control site (issue 19).

Each poison message once killed or wedged ingest for every site: an event
without ``seq`` (the store failed every later flush), a 400 KB nest of brackets
(RecursionError), a batch name with a space (the ack raised). Here a real site
login publishes each of them through a real Mosquitto, between two good
batches; both good batches must be stored in full and acknowledged, each poison
message quarantined with its reason and shown on the dashboard.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
from dashboard import Person, started_site

from twin.clock import wall_monotonic
from twin.control_site.serve import ControlSite
from twin.journal import Journal, read_events
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.topics import BrokerURL, encode

Publish = tuple[str, bytes]


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = wall_monotonic() + timeout
    while not predicate():
        assert wall_monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)  # real time: waiting for the broker and the ingest


def good_batch(tmp_path: Path, name: str, events: int = 40, odd_source: int = 0) -> list[Publish]:
    """A real journal's events, state and head as a site's forwarder publishes them."""
    journal = Journal(tmp_path / f"{name}.sqlite", lambda: 60.0, signer=None)
    journal.append("batch_started", "runner", {"batch_id": name})
    for i in range(events - 2):
        source = "refused-by-db" if odd_source and i == odd_source else "bioreactor"
        journal.append("reading", source, {"values": {"temperature_c": 37.0 + i / 100}})
    journal.append("batch_ended", "runner", {"state": "Complete"})
    journal.close()
    base = f"poc-twin/site-a/u1/{name}"
    out = []
    last = None
    for e in read_events(journal.path):
        body = {"site": "site-a", "unit": "u1", "batch": name, "seq": e.seq}
        body |= {"batch_time": e.batch_time, "wall_time": e.wall_time, "kind": e.kind}
        body |= {"source": e.source, "data": e.data, "prev_hash": e.prev_hash, "hash": e.hash}
        out.append((f"{base}/event", encode("event", body)))
        last = e
    assert last is not None
    state = {"batch": name, "state": "Complete", "phase": "-", "seq": last.seq, "ended": True}
    out.append((f"{base}/state", encode("state", state)))
    head = {"batch": name, "seq": last.seq, "hash": last.hash, "signature": None}
    out.append((f"{base}/head", encode("head", head)))
    return out


def poison_messages(template: bytes) -> dict[str, Publish]:
    """Every kind of bad message a site once could send, by what it should be refused for."""
    event = json.loads(template)

    def edited(**changes: Any) -> bytes:
        body = {**event, **changes}
        return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()

    deep = b'{"v":1,"data":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    return {
        "seq: Field required": ("poc-twin/site-a/u1/noseq/event", edited(seq=...)),
        "exceeds 131072": ("poc-twin/site-a/u1/nest/event", deep),
        "nested more than 32": (
            "poc-twin/site-a/u1/nest/event",
            b'{"v":1,"data":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        ),
        "batch 'bad batch' is not a safe name": ("poc-twin/site-a/u1/bad batch/event", template),
        "batch 'a:b' is not a safe name": ("poc-twin/site-a/u1/a:b/event", template),
        "unit '.hidden' is not a safe name": ("poc-twin/site-a/.hidden/b/event", template),
        "must name its unit and batch": ("poc-twin/site-a/u1/-/event", template),
        "NaN is not a number": ("poc-twin/site-a/u1/nan/event", template.replace(b"37.0", b"NaN")),
        "1e999 is out of range": (
            "poc-twin/site-a/u1/inf/event",
            template.replace(b"37.0", b"1e999"),
        ),
        "seq: Input should be less than": ("poc-twin/site-a/u1/big/event", edited(seq=2**70)),
        "seq: Input should be a valid integer": ("poc-twin/site-a/u1/str/event", edited(seq="1")),
        "source: Value error, contains control": (
            "poc-twin/site-a/u1/ctl/event",
            edited(source="bio\x00reactor"),
        ),
        "not UTF-8": ("poc-twin/site-a/u1/bin/event", b"\xff\xfe\x00{"),
        "not JSON": ("poc-twin/site-a/u1/trunc/event", template[:50]),
        "a JSON list, not an object": ("poc-twin/site-a/u1/list/event", b"[1,2]"),
        "schema version 2": ("poc-twin/site-a/u1/v2/event", edited(v=2)),
        "alarms.0: Input should be a valid dictionary": (
            "poc-twin/site-a/u1/alarms/state",
            b'{"v":1,"state":"Held","seq":3,"alarms":["boom"]}',
        ),
        "signature: String should match": (
            "poc-twin/site-a/u1/sig/head",
            b'{"v":1,"seq":3,"hash":"' + b"0" * 64 + b'","signature":"not hex"}',
        ),
        "online: Input should be a valid boolean": (
            "poc-twin/site-a/u1/online/status",
            b'{"v":1,"online":"yes"}',
        ),
    }


def http_get(base: str, path: str) -> str:
    """A JSON route as a program reads it (a control-site user's Basic credentials)."""
    status, _, text = Person(base).get_as_program(path)
    assert status == 200, text
    return text


def signed_in_get(base: str, path: str) -> str:
    """A page as a signed-in person gets it (every page needs a sign-in)."""
    person = Person(base)
    person.sign_in()
    status, _, text = person.get(path)
    assert status == 200, text
    return text


def stored(site: ControlSite, batch: str) -> int:
    return site.store.query(
        "SELECT count(*) FROM events WHERE site='site-a' AND batch=?", (batch,)
    )[0][0]


async def as_site(broker: BrokerConfig, work: Callable[[aiomqtt.Client], Awaitable[None]]) -> None:
    """A real connection as site-a (its own login, its own ACL)."""
    url = BrokerURL.parse(broker.url("site-a"))
    async with aiomqtt.Client(**url.client_kwargs(), clean_session=True) as client:
        await work(client)


async def publish_all(client: aiomqtt.Client, messages: list[Publish]) -> None:
    """In order, on one connection, QoS 1: the control site receives them in this order."""
    for name, payload in messages:
        await client.publish(name, payload, qos=1)


def test_each_poison_message_is_quarantined_and_both_good_batches_are_stored(
    broker: BrokerConfig, tmp_path: Path
):
    before, after = good_batch(tmp_path, "good-before"), good_batch(tmp_path, "good-after")
    poison = poison_messages(before[1][1])
    port = free_port()

    async def scenario() -> tuple[list[dict[str, Any]], str, dict[str, int], bool]:
        site = await started_site(broker, tmp_path, port)
        acks: dict[str, int] = {}
        try:

            async def work(client: aiomqtt.Client) -> None:
                await client.subscribe("poc-twin/site-a/u1/+/ack", qos=1)
                await publish_all(client, [*before, *poison.values(), *after])
                await wait_for(lambda: site.ingest.quarantined >= len(poison))
                await wait_for(lambda: stored(site, "good-after") == len(after) - 2)
                async with asyncio.timeout(30):
                    async for message in client.messages:
                        batch = str(message.topic).split("/")[3]
                        if batch.startswith("good-"):  # retained acks of other tests' batches
                            acks[batch] = json.loads(message.payload)["seq"]
                        if acks.get("good-before") == acks.get("good-after") == len(after) - 2:
                            break

            await as_site(broker, work)
            assert stored(site, "good-before") == len(before) - 2  # every event, no gap
            rows = json.loads(
                await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}", "/api/quarantine")
            )
            page = await asyncio.to_thread(signed_in_get, f"http://127.0.0.1:{port}", "/")
            alive = site._task is not None and not site._task.done()
            return rows, page, acks, alive
        finally:
            await site.stop()

    rows, page, acks, alive = asyncio.run(scenario())
    assert alive, "the ingest task ended"
    reasons = [r["reason"] for r in rows]
    for expected in poison:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert sum(r["count"] for r in rows) == len(poison)
    assert all(r["site"] == "site-a" for r in rows)
    space = next(r for r in rows if "bad batch" in r["topic"])
    assert space["kind"] == "event" and space["size"] == len(before[1][1])
    assert f"Quarantined messages: {len(poison)}" in page and "is not a safe name" in page
    assert "exceeds 131072" in page  # the 400 KB nest is shown by its size
    assert acks == {"good-before": len(before) - 2, "good-after": len(after) - 2}


def test_a_row_the_database_refuses_is_quarantined_alone(broker: BrokerConfig, tmp_path: Path):
    """Defence behind the schemas: a flush the database refuses is split until the bad row
    stands alone; the rest of the flush is stored, nothing is retried for ever."""
    first, odd, last = (
        good_batch(tmp_path, "db-first"),
        good_batch(tmp_path, "db-odd", odd_source=10),
        good_batch(tmp_path, "db-last"),
    )
    db = tmp_path / "cs.sqlite"

    async def scenario() -> tuple[list[tuple[Any, ...]], dict[str, int]]:
        site = ControlSite(broker.url("control"), str(db), "127.0.0.1", free_port(), None)
        await site.start()
        other = sqlite3.connect(db)  # the database itself refuses one row: a real trigger
        other.execute(
            "CREATE TRIGGER refuse_row BEFORE INSERT ON events WHEN NEW.source='refused-by-db' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
        )
        other.commit()
        other.close()
        try:

            async def work(client: aiomqtt.Client) -> None:
                await publish_all(client, [*first, *odd, *last])
                await wait_for(
                    lambda: stored(site, "db-last") == len(last) - 2 and site.ingest.quarantined
                )

            await as_site(broker, work)
            counts = {name: stored(site, name) for name in ("db-first", "db-odd", "db-last")}
            return site.store.query("SELECT topic, reason, count FROM quarantine"), counts
        finally:
            await site.stop()

    quarantined, counts = asyncio.run(scenario())
    assert counts == {"db-first": 40, "db-odd": 39, "db-last": 40}
    assert quarantined == [
        (
            "poc-twin/site-a/u1/db-odd/event",
            "the store refused it: refused by the database",
            1,
        )
    ]


def test_a_database_outage_is_retried_not_quarantined(
    broker: BrokerConfig, postgres: str, tmp_path: Path
):
    """PostgreSQL drops the control site's connection: nothing is quarantined, the store
    reconnects and every event arrives."""
    early, late = good_batch(tmp_path, "outage-early"), good_batch(tmp_path, "outage-late")

    async def scenario() -> tuple[int, int, list[tuple[Any, ...]]]:
        site = ControlSite(broker.url("control"), postgres, "127.0.0.1", free_port(), None)
        await site.start()
        try:

            async def work(client: aiomqtt.Client) -> None:
                await publish_all(client, early)
                await wait_for(lambda: stored(site, "outage-early") == len(early) - 2)
                with psycopg.connect(postgres, autocommit=True) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                    )
                await publish_all(client, late)
                await wait_for(lambda: _stored_or_zero(site, "outage-late") == len(late) - 2)

            await as_site(broker, work)
            rows = site.store.query(
                "SELECT reason FROM quarantine WHERE topic LIKE ?", ("%outage%",)
            )
            return stored(site, "outage-early"), stored(site, "outage-late"), rows
        finally:
            await site.stop()

    early_n, late_n, quarantined = asyncio.run(scenario())
    assert (early_n, late_n) == (40, 40)
    assert quarantined == []


def _stored_or_zero(site: ControlSite, batch: str) -> int:
    """The count, or 0 while the dashboard's reads still meet the dropped connection."""
    try:
        return stored(site, batch)
    except psycopg.Error:
        return 0
