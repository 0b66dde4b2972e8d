"""Control site: every site's telemetry from the broker into the store, and requests back.

One persistent MQTT session (clean_session off, QoS 1), so what sites publish
while the control site is down waits at the broker. Messages are stored in
batches from a queue; after each batch the control site publishes, per batch,
the highest sequence number it holds without a gap (retained ``ack``): a site
that reconnects resends from there, so an event lost by a broker crash still
arrives. Requests to sites (hold a batch, suspend or reinstate a site) go out
on the same connection and are recorded with who and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import aiomqtt

from twin.clock import wall_seconds
from twin.control_site.store import Store
from twin.telemetry.topics import ROOT, BrokerURL, decode, encode, parse_topic, topic

__all__ = ["Ingest"]

log = logging.getLogger(__name__)
#: How long an ack may wait for its PUBACK behind the incoming flood (seconds).
ACK_TIMEOUT_S = 60.0
#: Acks of every batch stored since the last round go out this often (seconds).
ACK_EVERY_S = 1.0


class Ingest:
    """Subscribes to every site; stores de-duplicated; publishes acks and requests."""

    def __init__(
        self, broker: BrokerURL, store: Store, *, flush_max: int = 5000, keepalive_s: int = 30
    ) -> None:
        self.broker = broker
        self.keepalive_s = keepalive_s
        self.store = store
        self.flush_max = flush_max
        self.queue: asyncio.Queue[tuple[str, str, str, str, dict[str, Any]]] = asyncio.Queue()
        self.client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()
        self.stored = 0
        self.pending: list[tuple[str, str, str, str, dict[str, Any]]] = []
        self._acks_due: dict[tuple[str, str, str], int] = {}

    async def run(self) -> None:
        """Connect (again and again, real-time back-off) and ingest until cancelled."""
        backoff = 0.2
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(backoff)  # real time: the broker is away
                backoff = min(backoff * 2, 5.0)

    async def _session(self) -> None:
        client = aiomqtt.Client(
            **self.broker.client_kwargs(),
            identifier=f"poc-twin-control-{self.broker.username or 'control'}",
            clean_session=False,
            keepalive=self.keepalive_s,  # a busy ingest must not miss its own keep-alive
        )
        client.pending_calls_threshold = 10000
        async with client:
            self.client = client
            for kind in ("event", "state", "head", "status"):
                await client.subscribe(f"{ROOT}/+/+/+/{kind}", qos=1)
            writer = asyncio.create_task(self._writer())
            acker = asyncio.create_task(self._acker(client))
            self.ready.set()
            try:
                async for message in client.messages:
                    where = parse_topic(str(message.topic))
                    body = decode(message.payload)
                    if where is not None and body is not None:
                        self.queue.put_nowait((*where, body))
                    for task in (writer, acker):
                        if task.done():
                            task.result()  # a task that stopped must not go unnoticed
            finally:
                self.client = None
                for task in (writer, acker):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _writer(self) -> None:
        """Store what arrived, in flushes; a flush that fails is kept and tried again.

        The messages were acknowledged to the broker when they arrived, so this
        queue is their only copy: a store error (PostgreSQL restarting, a full
        disk) must not drop them. It is logged and the same flush retried.
        """
        backoff = 0.5
        while True:
            if not self.pending:
                self.pending = [await self.queue.get()]
            while len(self.pending) < self.flush_max and not self.queue.empty():
                self.pending.append(self.queue.get_nowait())
            try:
                touched = await asyncio.to_thread(self._store, self.pending)
            except Exception:  # the store's driver has its own error types (sqlite3, psycopg)
                log.exception("storing %d messages failed; retrying", len(self.pending))
                await asyncio.sleep(backoff)  # real time: waiting for the database
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            self.stored += len(self.pending)
            self.pending = []
            for site, unit, name, seq in touched:
                self._acks_due[(site, unit, name)] = seq

    async def _acker(self, client: aiomqtt.Client) -> None:
        """Publish each touched batch's gap-free seq (retained), at most every ``ACK_EVERY_S``.

        An ack per batch per flush was 100 publishes per flush at 100 live sites, for
        a number a site reads only when it reconnects. All due acks go out together;
        one not confirmed within ``ACK_TIMEOUT_S`` is logged, not fatal: the next round
        sends it again, and a site that sees an old one only resends what is stored.
        """
        while True:
            await asyncio.sleep(ACK_EVERY_S)  # real time: acks are advisory, batch them
            due, self._acks_due = self._acks_due, {}
            results = await asyncio.gather(
                *(
                    client.publish(
                        topic(site, unit, name, "ack"),
                        encode("ack", {"seq": seq}),
                        qos=1,
                        retain=True,
                        timeout=ACK_TIMEOUT_S,
                    )
                    for (site, unit, name), seq in due.items()
                ),
                return_exceptions=True,
            )
            failed = [key for key, r in zip(due, results, strict=True) if isinstance(r, Exception)]
            for key in failed:
                self._acks_due.setdefault(key, due[key])
            if failed:
                log.warning("%d of %d acks not confirmed; sent again", len(failed), len(due))

    def _store(self, batch: list[tuple[str, str, str, str, dict[str, Any]]]) -> list[tuple]:
        """Store a flush; (site, unit, batch, gap-free seq) of every batch it touched."""
        touched = self.store.ingest(batch)
        return [(s, u, b, self.store.contiguous(s, b)) for s, u, b in touched]

    # -- supervision ----------------------------------------------------------------

    async def _request(self, site: str, unit: str, batch: str, kind: str, body: dict, retain: bool):
        if self.client is None:
            raise aiomqtt.MqttError("the control site is not connected to the broker")
        await self.client.publish(topic(site, unit, batch, kind), encode(kind, body), 1, retain)

    async def request_hold(self, site: str, batch: str, *, operator: str, reason: str) -> str:
        """Ask a site to hold one batch; the site's batch records it as an operator command."""
        rows = self.store.query("SELECT unit FROM batches WHERE site=? AND batch=?", (site, batch))
        if not rows:
            raise KeyError(f"no batch {batch} at site {site}")
        rid = uuid.uuid4().hex
        body = {
            "id": rid,
            "command": "hold",
            "operator": operator,
            "reason": reason,
            "at": wall_seconds(),
        }
        await self._request(site, rows[0][0], batch, "command", body, retain=False)
        await asyncio.to_thread(
            self.store.record_request, rid, site, batch, "hold", operator, reason
        )
        return rid

    async def set_suspended(self, site: str, suspended: bool, *, operator: str, reason: str) -> str:
        """Suspend (no new batch may start) or reinstate a site: retained, so it is never missed."""
        rid = uuid.uuid4().hex
        body = {
            "id": rid,
            "suspended": suspended,
            "operator": operator,
            "reason": reason,
            "at": wall_seconds(),
        }
        await self._request(site, "-", "-", "suspension", body, retain=True)
        action = "suspend" if suspended else "reinstate"
        await asyncio.to_thread(self.store.record_request, rid, site, "-", action, operator, reason)
        return rid
