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
import uuid
from typing import Any

import aiomqtt

from twin.clock import wall_seconds
from twin.control_site.store import Store
from twin.telemetry.topics import ROOT, BrokerURL, decode, encode, parse_topic, topic

__all__ = ["Ingest"]


class Ingest:
    """Subscribes to every site; stores de-duplicated; publishes acks and requests."""

    def __init__(self, broker: BrokerURL, store: Store, *, flush_max: int = 5000) -> None:
        self.broker = broker
        self.store = store
        self.flush_max = flush_max
        self.queue: asyncio.Queue[tuple[str, str, str, str, dict[str, Any]]] = asyncio.Queue()
        self.client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()
        self.stored = 0

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
            keepalive=10,
        )
        client.pending_calls_threshold = 10000
        async with client:
            self.client = client
            for kind in ("event", "state", "head", "status"):
                await client.subscribe(f"{ROOT}/+/+/+/{kind}", qos=1)
            writer = asyncio.create_task(self._writer(client))
            self.ready.set()
            try:
                async for message in client.messages:
                    where = parse_topic(str(message.topic))
                    body = decode(message.payload)
                    if where is not None and body is not None:
                        self.queue.put_nowait((*where, body))
            finally:
                self.client = None
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer

    async def _writer(self, client: aiomqtt.Client) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.flush_max and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            touched = await asyncio.to_thread(self.store.ingest, batch)
            self.stored += len(batch)
            for site, unit, name in touched:
                seq = await asyncio.to_thread(self.store.contiguous, site, name)
                await client.publish(
                    topic(site, unit, name, "ack"), encode("ack", {"seq": seq}), qos=1, retain=True
                )

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
