"""Control site: every site's telemetry from the broker into the store, and requests back.

One persistent MQTT session (clean_session off, QoS 1), so what sites publish
while the control site is down waits at the broker. Every message is checked as
it arrives (:mod:`twin.control_site.messages`: topic names, size, depth,
schema); one that fails is quarantined with the reason and nothing else waits
on it. Good messages are stored in batches from a queue; after each batch the
control site publishes, per batch, the highest sequence number it holds without
a gap (retained ``ack``): a site that reconnects resends from there, so an event
lost by a broker crash still arrives. Requests to sites go out on the same
connection (:mod:`twin.control_site.supervision`).

Ingest never ends by itself: a database outage is retried, a row the database
refuses is isolated and quarantined, a lost broker is reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiomqtt

from twin.control_site.messages import Poison, SiteMessage, check_message, refused_by_store
from twin.control_site.store import Store
from twin.telemetry.topics import ROOT, SITE_KINDS, BrokerURL, TelemetryError, encode, topic

__all__ = ["Ingest"]

log = logging.getLogger(__name__)
#: How long an ack may wait for its PUBACK behind the incoming flood (seconds).
ACK_TIMEOUT_S = 60.0
#: Acks of every batch stored since the last round go out this often (seconds).
ACK_EVERY_S = 1.0


class StoreOutage(Exception):
    """The database takes no writes now (down, locked, full): retry, never quarantine."""


class Ingest:
    """Subscribes to every site; checks, stores de-duplicated, quarantines; publishes acks."""

    def __init__(
        self, broker: BrokerURL, store: Store, *, flush_max: int = 5000, keepalive_s: int = 30
    ) -> None:
        self.broker = broker
        self.keepalive_s = keepalive_s
        self.store = store
        self.flush_max = flush_max
        self.queue: asyncio.Queue[SiteMessage | Poison] = asyncio.Queue()
        self.client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()
        #: Why the last connection to the broker failed or ended (None: never did).
        self.last_error: str | None = None
        self.stored = 0
        self.quarantined = 0
        self.pending: list[SiteMessage | Poison] = []
        self._acks_due: dict[tuple[str, str, str], int] = {}

    async def run(self) -> None:
        """Connect (again and again, real-time back-off) and ingest until cancelled."""
        backoff = 0.2
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc) or type(exc).__name__
            except Exception:  # a bug must cost a reconnect, not the control site's ingest
                log.exception("ingest session failed; reconnecting")
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
            for kind in SITE_KINDS:
                await client.subscribe(f"{ROOT}/+/+/+/{kind}", qos=1)
            writer = asyncio.create_task(self._writer())
            acker = asyncio.create_task(self._acker(client))
            self.ready.set()
            try:
                async for message in client.messages:
                    # Bounded work whatever the payload (size first): the loop never stalls.
                    self.queue.put_nowait(check_message(str(message.topic), message.payload))
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
        """Store what arrived, in flushes; quarantine what was refused; retry outages.

        The messages were acknowledged to the broker when they arrived, so this
        queue is their only copy: a database outage (PostgreSQL restarting, a
        locked or full disk) must not drop them. It is logged and the same flush
        retried. A row the database refuses while it takes other writes is not
        an outage: it is isolated and quarantined, so it cannot block the rest.
        """
        backoff = 0.5
        while True:
            if not self.pending:
                self.pending = [await self.queue.get()]
            while len(self.pending) < self.flush_max and not self.queue.empty():
                self.pending.append(self.queue.get_nowait())
            try:
                poison = [m for m in self.pending if isinstance(m, Poison)]
                good = [m for m in self.pending if isinstance(m, SiteMessage)]
                if poison:
                    await self._quarantine(poison)
                    self.pending = list(good)  # a retry must not quarantine them twice
                if good:
                    await self._store_isolating(good)
            except StoreOutage as exc:
                log.warning("storing %d messages failed (%s); retrying", len(self.pending), exc)
                await asyncio.sleep(backoff)  # real time: waiting for the database
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            self.pending = []

    async def _quarantine(self, poison: list[Poison]) -> None:
        """Record refused messages; if even that is refused (not an outage), log and drop them.

        A message already refused must never hold up the ones behind it.
        """
        try:
            await asyncio.to_thread(self.store.quarantine, poison)
        except Exception as exc:  # the store's driver has its own error types
            if not await asyncio.to_thread(self.store.writable):
                raise StoreOutage(f"quarantine: {exc}") from exc
            for p in poison:
                log.error("dropped a refused message on %s (%s): %s", p.topic, p.reason, exc)
            return
        self.quarantined += len(poison)
        for p in poison:
            log.warning("quarantined a message on %s: %s", p.topic, p.reason)

    async def _store_isolating(self, messages: list[SiteMessage]) -> None:
        """Store a flush; one the database refuses is halved until the bad rows stand alone.

        Each refusal is first told apart from an outage by a write probe: with
        the database down, nothing is split or quarantined, the flush is retried.
        """
        try:
            touched = await asyncio.to_thread(self._store, messages)
        except Exception as exc:  # the store's driver has its own error types
            if not await asyncio.to_thread(self.store.writable):
                raise StoreOutage(str(exc)) from exc
            if len(messages) == 1:
                await self._quarantine([refused_by_store(messages[0], f"{exc}")])
                return
            half = len(messages) // 2
            await self._store_isolating(messages[:half])
            await self._store_isolating(messages[half:])
            return
        self.stored += len(messages)
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
            sends = {}
            for (site, unit, name), seq in due.items():
                try:  # names were checked on the way in; an ack must never end ingest anyway
                    where = topic(site, unit, name, "ack")
                except TelemetryError as exc:
                    log.error("no ack for %s/%s/%s: %s", site, unit, name, exc)
                    continue
                body = encode("ack", {"seq": seq})
                sends[(site, unit, name)] = client.publish(
                    where, body, qos=1, retain=True, timeout=ACK_TIMEOUT_S
                )
            results = await asyncio.gather(*sends.values(), return_exceptions=True)
            failed = [k for k, r in zip(sends, results, strict=True) if isinstance(r, Exception)]
            for key in failed:
                self._acks_due.setdefault(key, due[key])
            if failed:
                log.warning("%d of %d acks not confirmed; sent again", len(failed), len(due))

    def _store(self, batch: list[SiteMessage]) -> list[tuple[str, str, str, int]]:
        """Store a flush; (site, unit, batch, gap-free seq) of every batch it touched."""
        touched = self.store.ingest(batch)
        return [(s, u, b, self.store.contiguous(s, b)) for s, u, b in touched]

    # -- requests to sites ---------------------------------------------------------

    async def publish_request(
        self, site: str, unit: str, batch: str, kind: str, body: dict[str, Any], *, retain: bool
    ) -> None:
        """Send one request to a site (QoS 1); MqttError if the broker is not reachable."""
        if self.client is None:
            raise aiomqtt.MqttError("the control site is not connected to the broker")
        await self.client.publish(topic(site, unit, batch, kind), encode(kind, body), 1, retain)
