"""Site side: tail a batch journal and publish every event to the broker, store-and-forward.

Runs on its own real-time asyncio loop, in its own process (``python -m
twin.telemetry forward``, started by ``poc-twin run --broker``): the batch's
virtual-time loop would turn reconnect back-off into no wait at all, and the
forwarder only needs the journal file, which SQLite's WAL lets it read while
the batch writes. The last event the broker acknowledged is kept in a side
file (``<journal>.telemetry.json``), so a forwarder that restarts, or a broker
that was away, resumes where delivery stopped. Events go out in sequence order
on one connection with QoS 1; a duplicate after a reconnect is harmless because
the control site keys every event by (site, batch, seq).

The retained ``head`` is the journal's latest *signed* checkpoint (the journal
signs one every 500 events and at the end when the site has a key): the
signed sequence number and hash, the signature and the key id, which the
control site verifies with the site's registered public key before anchoring.
A journal without any checkpoint (a site without a key, or the first events)
publishes its plain chain head with ``signature`` null.

Identity: the fleet's broker replaces every client id by the login
(``use_username_as_clientid``, docs/telemetry.md "Identities"), so nobody else
can take this connection's id and the site's persistent session (no clean
session: hold requests sent while it is away wait at the broker) survives a
restart. That session is the site's, shared by its batches' forwarders one
after the other: ``_listen`` acts only on this batch's topics, and a finished
forwarder unsubscribes them. Two forwarders of one login alive at once take
the session from each other on every connect, so a session that ends young
does not reset the back-off: they settle into turns instead of a tight loop.

End to end, the control site's retained ``ack`` (its highest seq stored with no gap) is
followed for as long as the connection lasts: what stays unacknowledged past
``resend_after_s`` is sent again (a chunk at a time, the grace doubling while the ack does
not move), and an ended batch is done once that ack reaches its last event, or after
``confirm_s``, saying what is still unacknowledged. The broker's PUBACK only says the broker
has it: a clean session of the control login, taking over the ingest's, loses what the
broker queued for it.

Real waits here (the only ones): polling the journal for new events
(``poll_s``), the back-off between reconnect attempts, the resend grace, the
confirmation wait and, as an ended batch's forwarder leaves, its last requests'
answers. All wait on the world (a batch writing, a broker coming back, a control
site storing), not on batch time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import sqlite3
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

import aiomqtt

from twin.clock import wall_monotonic, wall_now
from twin.engine.inbox import (
    RELAY_ENV,
    RELAYED,
    RELAYED_COMMANDS,
    NoRunningBatch,
    command_address,
    send_command,
)
from twin.ensemble.forecast import brief, read_saved
from twin.journal import CHECKPOINT, Event
from twin.names import UnsafeName, check_safe_name
from twin.telemetry.site import SiteRecord
from twin.telemetry.state import BatchState
from twin.telemetry.topics import (
    BrokerURL,
    TelemetryError,
    decode,
    encode,
    parse_topic,
    topic,
)
from twin.words import UnfitText, check_reason, escaped

__all__ = ["ANSWERS", "AckFile", "Forwarder"]

log = logging.getLogger(__name__)

#: Longest wait for a chunk's PUBACKs before the connection is given up and made again.
PUBLISH_S = 300.0
#: A session that lasted less than this did not show the broker healthy: keep backing off.
STABLE_S = 10.0
#: Longest wait for CONNACK, SUBACK or a single PUBACK. 10 s was too short for a worker
#: process that (re)connects 50 simulated sites at once on a loaded machine.
CONNECT_S = 30.0
#: Longest wait for our batch process to take a request from the control site (it is
#: starting, or a resume is handing the batch over); then the request is "not delivered".
DELIVER_S = 30.0
#: What a site answers a relayed request (``answer``'s ``status``, docs/telemetry.md).
ANSWERS = ("accepted", "refused", "invalid", "not delivered")
#: How long an ended batch's forwarder waits for a control site never heard for the batch.
UNHEARD_S = 5.0
#: Longest wait between two resends to a control site whose ack does not move.
RESEND_MAX_S = 600.0
#: Seconds the control site's ack may lag behind what the broker took before a resend.
RESEND_ENV = "POC_TWIN_TELEMETRY_RESEND_S"
#: Seconds an ended batch's forwarder waits for the control site to acknowledge it all.
CONFIRM_ENV = "POC_TWIN_TELEMETRY_CONFIRM_S"
#: ``forward``'s exit status: the broker has every event, the control site's ack stayed behind.
UNCONFIRMED = 3
GIVE_UP_ENV = "POC_TWIN_TELEMETRY_GIVE_UP_S"
#: Each timing setting: (environment variable, default, 0 allowed (meaning), at most).
SETTINGS = {
    "give_up_s": (GIVE_UP_ENV, 86400.0, True, 30 * 86400.0),  # 0: never give up
    "resend_after_s": (RESEND_ENV, 30.0, False, RESEND_MAX_S),
    "confirm_s": (CONFIRM_ENV, 300.0, True, 3600.0),  # 0: do not wait
}


def seconds_setting(name: str, text: str, *, zero_ok: bool, most: float) -> float:
    """A forwarder's timing setting, in seconds; TelemetryError naming it for anything else
    (a unit, NaN, infinity, a negative; 0 where it would mean a resend every poll)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value > 0 or (zero_ok and value == 0)) and value <= most):
        low = "0" if zero_ok else "more than 0"
        raise TelemetryError(f"{name}={text!r}: give seconds, {low} to {most:g}")
    return value


def settings_from(environ: Mapping[str, str]) -> dict[str, float]:
    """The forwarder's timing settings from the environment (defaults where unset), checked:
    ``run``/``resume`` refuse bad ones (exit 2) before the batch starts or anything is
    signed, not a forwarder that dies on them in the background."""
    return {
        key: seconds_setting(env, environ[env], zero_ok=zero_ok, most=most)
        if env in environ
        else default
        for key, (env, default, zero_ok, most) in SETTINGS.items()
    }


_COLUMNS = "seq, batch_time, wall_time, kind, source, data, prev_hash, hash"


def _unfit_request(operator: object, reason: object) -> str | None:
    """Why a relayed request's user or reason cannot go into the record, or None.

    The user is the control site's signed-in user id: a safe name (twin.names), as the
    control site's ``add-user`` makes it. The reason is its user's words, fit for the
    record as a site user's are (twin.words.check_reason: one line, no control or format
    character, not blank, at most 1,000 characters).
    """
    if not isinstance(operator, str):
        return "the request names no control-site user"
    try:
        check_safe_name(operator, "control-site user")
    except UnsafeName as exc:
        return escaped(exc, 300)
    if not isinstance(reason, str):
        return "the request gives no reason"
    try:
        check_reason(reason)
    except UnfitText as exc:
        return str(exc)
    return None


class AckFile:
    """The last sequence number the broker acknowledged, beside the journal (atomic rename)."""

    def __init__(self, journal_path: Path | str) -> None:
        self.path = Path(f"{journal_path}.telemetry.json")

    def load(self, first_hash: str) -> int:
        """The acked seq, if the file belongs to this journal (same first event)."""
        try:
            body = json.loads(self.path.read_text())
            return int(body["acked_seq"]) if body.get("first_hash") == first_hash else 0
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def read(self) -> dict[str, Any]:
        """The whole file (``acked_seq``, ``control_seq``, ``last_seq``...), {} if none."""
        try:
            body = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}

    def save(self, seq: int, first_hash: str, **more: Any) -> None:
        """``seq`` the broker acknowledged; ``more``: what the control site acknowledged."""
        # (a name of this process's own: a resume's forwarder may save beside the dead one's)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        body = {"acked_seq": seq, "first_hash": first_hash, "at": wall_now().isoformat(), **more}
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.path)


class Forwarder:
    """Publishes one batch journal to the broker and carries control requests back."""

    def __init__(
        self,
        journal_path: Path | str,
        broker: BrokerURL,
        *,
        poll_s: float = 0.2,
        chunk: int = 500,
        backoff_max_s: float = 5.0,
        keepalive_s: int = 30,
        record: SiteRecord | None = None,
        resend_after_s: float = 30.0,
        confirm_s: float = 0.0,
    ) -> None:
        self.journal_path = Path(journal_path)
        self.broker = broker
        self.poll_s = poll_s
        self.chunk = chunk
        self.backoff_max_s = backoff_max_s
        self.keepalive_s = keepalive_s
        #: How long the control site's ack may stay behind what the broker took before the
        #: events after it are sent again (doubling, up to RESEND_MAX_S, while it stays put).
        self.resend_after_s = resend_after_s
        #: How long an ended batch's forwarder waits for the control site's ack to reach the
        #: journal's last event before it stops (0: it does not wait).
        self.confirm_s = confirm_s
        #: The control site's ack for this batch (highest seq stored with no gap), if heard.
        self.control_seq: int | None = None
        #: True once the control site acknowledged the whole ended batch; False if it did not
        #: within ``confirm_s``; None while undecided.
        self.confirmed: bool | None = None
        self.resends = 0
        self._lag_since: float | None = None
        self._resend_wait = resend_after_s
        self.ack = AckFile(journal_path)
        self.acked = 0
        self.first_hash = ""
        self.record = record
        self.batch: str | None = None
        self.state: BatchState | None = None
        self.head: tuple[int, str] = (0, "")
        self.signed_head: dict[str, Any] | None = None
        self._published_head: dict[str, Any] | None = None
        self.ended_seq: int | None = None
        self.connected = asyncio.Event()
        self._control_ack_seen = False
        self.sessions = 0
        self._session_started = 0.0
        self._delivered_at: float | None = None
        self._parent_pid: int | None = None
        self._handling = False  # the listener is handling a control request
        #: The state the batch said it is in after the request being handled (its reply).
        self._delivered_state: str | None = None
        self._db: sqlite3.Connection | None = None

    # -- journal ------------------------------------------------------------------

    def _rows(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        if self._db is None:
            if not self.journal_path.exists():
                return []
            self._db = sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True)
        try:
            return self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # the batch has not created its tables yet

    def _prime(self) -> None:
        """Learn the batch id and rebuild the state fold up to the acknowledged event."""
        if self.batch is not None:
            return
        first = self._rows(0, 1)
        if not first:
            return
        data = json.loads(first[0][5])
        self.first_hash = first[0][7]
        self.acked = self.ack.load(self.first_hash)
        self.batch = str(data.get("batch_id", self.journal_path.stem))
        self.state = BatchState(self.batch)
        done = 0
        while done < self.acked:
            rows = self._rows(done, min(self.chunk * 10, self.acked - done))
            if not rows:
                break
            self._fold(rows)
            done = rows[-1][0]

    def _fold(self, rows: list[tuple[Any, ...]]) -> None:
        assert self.state is not None
        last_reading = None
        for row in rows:
            if row[3] == "reading":
                if '"do_pct"' in row[5]:  # the bioreactor's PVs: only the latest counts
                    last_reading = row
                continue
            data = json.loads(row[5])
            self.state.apply(Event(*row[:5], data, row[6], row[7]))  # type: ignore[arg-type]
            if row[3] == CHECKPOINT:
                self.signed_head = {
                    "seq": data.get("signed_seq"),
                    "hash": data.get("head"),
                    "signature": data.get("signature"),
                    "key_id": data.get("key_id"),
                    "alg": data.get("alg"),
                    "checkpoint_seq": row[0],
                }
            if row[3] == "batch_ended":
                self.ended_seq = row[0]
        if last_reading is not None:
            row = last_reading
            self.state.apply(Event(*row[:5], json.loads(row[5]), row[6], row[7]))  # type: ignore[arg-type]
        self.state.seq, self.head = rows[-1][0], (rows[-1][0], rows[-1][7])

    # -- wire ---------------------------------------------------------------------

    def _topic(self, kind: str, batch: str | None = None) -> str:
        return topic(self.broker.site, self.broker.unit, batch or self.batch or "-", kind)

    def _event_payload(self, row: tuple[Any, ...]) -> bytes:
        seq, bt, wt, kind, source, data, prev, digest = row
        head = json.dumps(
            {
                "v": 1,
                "site": self.broker.site,
                "unit": self.broker.unit,
                "batch": self.batch,
                "seq": seq,
                "batch_time": bt,
                "wall_time": wt,
                "kind": kind,
                "source": source,
                "prev_hash": prev,
                "hash": digest,
            },
            separators=(",", ":"),
        )
        # The data column is already canonical JSON (what the hash covers): splice it in.
        return f'{head[:-1]},"data":{data}}}'.encode()

    def _client(self) -> aiomqtt.Client:
        assert self.batch is not None
        will = aiomqtt.Will(
            self._topic("status"),
            encode("status", {"online": False, "why": "connection lost", "batch": self.batch}),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            **self.broker.client_kwargs(),
            # The broker replaces it by the login; a broker without that option keeps it.
            identifier=f"poc-twin-{self.broker.site}-{self.broker.unit}-{self.batch}"[:128],
            clean_session=False,
            will=will,
            keepalive=self.keepalive_s,
            timeout=CONNECT_S,
            max_inflight_messages=200,
        )
        client.pending_calls_threshold = self.chunk + 10  # a chunk in flight is the design
        return client

    async def _publish_rows(self, client: aiomqtt.Client, rows: list[tuple[Any, ...]]) -> None:
        event_topic = self._topic("event")
        # A chunk is queued at once and up to 200 are in flight; the last waits behind all
        # the others, so its PUBACK may take far longer than a lone message's. A dead link
        # is caught by the keep-alive, not by this timeout (10 s dropped busy fleets).
        sends = [
            client.publish(event_topic, self._event_payload(r), qos=1, timeout=PUBLISH_S)
            for r in rows
        ]
        # State and head go out right behind the events, not after their PUBACKs: same
        # connection, same order, and the dashboard is one round trip sooner.
        self._fold(rows)
        assert self.state is not None
        payload = self.state.as_payload()
        saved = read_saved(self.journal_path)  # the batch's latest forecast, if one was made
        if saved is not None:
            payload["forecast"] = brief(saved)
        state = encode("state", payload)
        sends.append(client.publish(self._topic("state"), state, 1, True, timeout=PUBLISH_S))
        head = self.head_payload()
        if head != self._published_head:
            body = encode("head", head)
            sends.append(client.publish(self._topic("head"), body, 1, True, timeout=PUBLISH_S))
        await asyncio.gather(*sends)
        self._published_head = head
        self.acked = rows[-1][0]
        self._save_ack()

    def _save_ack(self) -> None:
        self.ack.save(self.acked, self.first_hash, control_seq=self.control_seq)

    def head_payload(self) -> dict[str, Any]:
        """The ``head`` message: the latest signed checkpoint, else the plain chain head."""
        if self.signed_head is not None:
            return {"batch": self.batch, **self.signed_head}
        return {"seq": self.head[0], "hash": self.head[1], "signature": None, "batch": self.batch}

    def _own_topics(self) -> dict[str, str]:
        """topic -> kind of what this forwarder subscribes to (the session may hold more)."""
        return {
            self._topic("command"): "command",
            self._topic("ack"): "ack",
            topic(self.broker.site, "-", "-", "suspension"): "suspension",
        }

    async def _listen(self, client: aiomqtt.Client) -> None:
        """Control requests for this batch and this site: hold, suspension, the control ack.

        The site's session may also deliver what another batch's forwarder
        subscribed to: another batch's ack is ignored, its hold is recorded as
        not delivered (``_not_ours``).
        """
        own = self._own_topics()
        async for message in client.messages:
            body = decode(message.payload)
            kind = own.get(str(message.topic))
            if body is None:
                continue
            if kind is None:
                await self._not_ours(client, str(message.topic), body)
                continue
            if kind == "ack":
                seq = body.get("seq")
                if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                    continue
                if not self._control_ack_seen:
                    self._control_ack_seen = True
                    # The control site's own ack is the end-to-end truth: resend what it lacks.
                    self.acked = min(self.acked, seq)
                self._heard_control_ack(seq)
            elif kind == "command":
                self._handling = True
                try:
                    self._delivered_state = None
                    answer = await self._forward_command(body)
                    # The batch's own word of its state after the request ("Holding"), else
                    # the last this forwarder read (it lags: "Running" for an accepted hold).
                    state = self._delivered_state
                    if state is None:
                        state = self.state.status if self.state is not None else ""
                    await self._answer(client, self._topic("answer"), body, answer, state)
                finally:
                    self._handling = False
            elif kind == "suspension" and self.record is not None:
                action = "suspend" if body.get("suspended") else "reinstate"
                self.record.record(
                    self.broker.site,
                    action,
                    escaped(body.get("operator", "?"), 100),
                    escaped(body.get("reason", ""), 1000),
                    request_id=escaped(body.get("id", body.get("at", "")), 100),
                    outcome="recorded",
                )

    def _heard_control_ack(self, seq: int) -> None:
        """Follow the control site's retained ack for as long as we are connected."""
        if seq != self.control_seq:
            self.control_seq = seq
            self._lag_since = None  # it moved: the control site is storing
            self._resend_wait = self.resend_after_s

    def _lagging(self) -> bool:
        """The control site's ack stays behind what the broker took, for longer than the grace
        period: something it was sent did not reach its store (a takeover of its session, a
        broker that lost a queue). Only a control site that has spoken for this batch counts:
        without an ack there is no telling what it lacks."""
        if self.control_seq is None or self.control_seq >= self.acked:
            self._lag_since = None
            return False
        now = wall_monotonic()
        if self._lag_since is None:
            self._lag_since = now
            return False
        return now - self._lag_since >= self._resend_wait

    async def _resend(self, client: aiomqtt.Client, listener: asyncio.Task[None]) -> None:
        """Send again the events after the control site's ack, one chunk of them: when they
        fill its gap its ack jumps to the next gap (or the end) and the next resend starts
        there. A control site that is down gets one chunk per (doubling) grace period, not
        the whole journal again and again."""
        assert self.control_seq is not None
        rows = self._rows(self.control_seq, min(self.chunk, self.acked - self.control_seq))
        if rows:
            log.warning(
                "%s: the control site acknowledged up to event %d of %d for %.0f s: sending "
                "events %d-%d again",
                self.journal_path.name,
                self.control_seq,
                self.acked,
                self._resend_wait,
                rows[0][0],
                rows[-1][0],
            )
            event_topic = self._topic("event")
            sends = [
                client.publish(event_topic, self._event_payload(r), qos=1, timeout=PUBLISH_S)
                for r in rows
            ]
            await self._unless_lost(asyncio.gather(*sends), listener)
            self.resends += 1
        self._lag_since = wall_monotonic()
        self._resend_wait = min(self._resend_wait * 2, max(RESEND_MAX_S, self.resend_after_s))

    async def _answer(
        self,
        client: aiomqtt.Client,
        where: str,
        body: dict[str, Any],
        answer: tuple[str, str],
        state: str = "",
    ) -> None:
        """Tell the control site what became of its request (``answer``, docs/telemetry.md):
        its audit shows the site's outcome, not only that it was sent."""
        status, why = answer
        rid = body.get("id")
        if not isinstance(rid, str) or not rid:
            return  # nothing the control site could match it to
        reply = {"id": escaped(rid, 64), "status": status, "outcome": why[:2000]}
        if state:
            reply["state"] = state[:200]
        reply["at"] = wall_now().isoformat()
        try:
            await client.publish(where, encode("answer", reply), 1, False, timeout=CONNECT_S)
        except aiomqtt.MqttError as exc:  # the site's record has it; the audit says "sent"
            log.warning("%s: answer to request %s not sent: %s", self.journal_path.name, rid, exc)

    async def _not_ours(self, client: aiomqtt.Client, name: str, body: dict[str, Any]) -> None:
        """A hold for another batch of this login reached us: it cannot reach its batch from
        here, so say so in the site's record, the log and the answer rather than drop it."""
        where = parse_topic(name)
        if where is None or where[3] != "command" or where[0] != self.broker.site:
            return
        why = (
            f"received by the forwarder of batch {self.batch}, not of "
            f"{where[2]} (one MQTT login, two batches at once; docs/telemetry.md, Identities)"
        )
        with contextlib.suppress(TelemetryError):  # a topic level that is not a safe name
            answer_topic = topic(where[0], where[1], where[2], "answer")
            await self._answer(client, answer_topic, body, ("not delivered", why))
        why = f"not delivered: {why}"
        log.warning(
            "%s: %s for batch %s %s",
            self.journal_path.name,
            escaped(body.get("command"), 40),
            escaped(where[2], 100),
            why,
        )
        if self.record is not None:
            self.record.record(
                self.broker.site,
                str(body.get("command", "")),
                f"{RELAYED}{escaped(body.get('operator', '?'), 100)}",
                escaped(body.get("reason", ""), 1000),
                request_id=escaped(body.get("id", ""), 100),
                outcome=why,
            )

    async def _forward_command(self, body: dict[str, Any]) -> tuple[str, str]:
        """A hold, or an alarm's acknowledgement, from the control site goes to the running
        batch like an operator's (journalled with who and why); the site's record keeps the
        request and its outcome, which is also the answer returned: (status, why), status
        one of ``ANSWERS``.

        What the site trusts is the broker's word that the message came from a control
        login (docs/access.md, "Relayed from the control site"), not its words: the user it
        names must be a safe name, as every user id is, and the reason must be fit for the
        record (twin.words). Anything else is invalid: nothing reaches the batch, nothing is
        journalled; the site's record and the log say what came, escaped. A batch that has
        ended takes nothing: refused at once, naming its final state.
        """
        command = str(body.get("command", ""))
        operator, reason = body.get("operator"), body.get("reason")
        rid = escaped(body.get("id", ""), 100)
        who = f"{RELAYED}{escaped(operator, 100)}"
        extra: dict[str, Any] = {"relay_token": os.environ.get(RELAY_ENV, "")}
        alarm = body.get("alarm")
        if command == "acknowledge" and isinstance(alarm, int) and not isinstance(alarm, bool):
            extra["alarm"] = alarm
        invalid = _unfit_request(operator, reason)
        if command not in RELAYED_COMMANDS:
            answer = (
                "refused",
                f"the control site may only request hold or acknowledge an alarm, "
                f"not '{escaped(command, 40)}'",
            )
        elif invalid is not None:
            answer = ("invalid", f"{invalid}; nothing was journalled")
        elif command == "acknowledge" and "alarm" not in extra:
            answer = ("refused", "an acknowledgement names its alarm's event number")
        elif (earlier := self._earlier(rid)) is not None:
            return earlier  # a repeat (MQTT delivers at least once): answered, not acted on
        elif (ended := self._ended()) is not None:
            answer = ("refused", ended)
        else:
            assert isinstance(operator, str) and isinstance(reason, str)
            who = f"{RELAYED}{operator}"
            answer = await self._deliver(command, who, reason, extra)
        outcome = f"{answer[0]}: {answer[1]}" if answer[1] else answer[0]
        if outcome != "accepted":
            log.warning(
                "%s: control-site %s by %s: %s",
                self.journal_path.name,
                escaped(command, 40),
                who,
                outcome,
            )
        if self.record is not None:
            what = (
                f"acknowledge alarm {extra['alarm']}" if "alarm" in extra else escaped(command, 40)
            )
            self.record.record(
                self.broker.site,
                what,
                who,
                escaped(reason if reason is not None else "", 1000),
                request_id=rid,
                outcome=outcome,
            )
        return answer

    def _earlier(self, rid: str) -> tuple[str, str] | None:
        """The answer given to request ``rid`` before, if it came before (this site's record
        keeps every request id, across a resume's new forwarder): a hold repeated after the
        batch was restarted would otherwise hold it again."""
        if not rid or self.record is None:
            return None
        outcome = self.record.outcome_of(rid)
        if outcome is None:
            return None
        status = outcome.partition(": ")[0]
        if status == "not delivered":
            return None  # it never reached the batch (another batch's forwarder, a timeout)
        if status not in ANSWERS:
            status = "refused"
        return status, f"a repeat of request {rid}, taken once already ({outcome}): not again"

    def _ended(self) -> str | None:
        """Why nothing can be asked of our batch any more (it ended), else None."""
        if self.state is None or not self.state.ended:
            return None
        return f"batch {self.batch} has ended {self.state.state}: nothing was journalled"

    async def _deliver(
        self, command: str, who: str, reason: str, extra: dict[str, Any]
    ) -> tuple[str, str]:
        """Hand a checked request to the batch; its answer (status, why). While our batch
        process lives but does not take commands yet (starting, or a resume handing over),
        wait a little (``DELIVER_S``) rather than drop the request; once it has ended (its
        last events read meanwhile), refuse it naming the final state."""
        deadline = wall_monotonic() + DELIVER_S
        while True:
            try:
                reply = await send_command(
                    self.journal_path,
                    command,
                    operator=who,
                    password="",
                    reason=reason,
                    extra=extra,
                )
            except NoRunningBatch as exc:
                alive = self._parent_pid is not None and os.getppid() == self._parent_pid
                if alive and wall_monotonic() < deadline:
                    await asyncio.sleep(self.poll_s)  # real time: the batch opens its inbox
                    if (ended := self._ended()) is not None:
                        return "refused", ended
                    continue
                return "not delivered", self._ended() or str(exc)
            status = str(reply.get("status"))
            if isinstance(reply.get("state"), str):
                self._delivered_state = reply["state"]
            if status not in ANSWERS:
                status = "refused"  # an answer the control site can read (none other comes)
            return status, "" if status == "accepted" else str(reply.get("message") or "")

    # -- the loop -----------------------------------------------------------------

    def _superseded(self, parent_pid: int | None) -> bool:
        """Our batch process is gone and another one writes the journal (``resume``): its own
        forwarder delivers from here (and holds the relay secret the batch now takes)."""
        if parent_pid is None or os.getppid() == parent_pid:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(command_address(self.journal_path))
        except OSError:
            return False
        finally:
            sock.close()
        log.info(
            "%s: the batch was resumed by another process: its forwarder takes over",
            self.journal_path.name,
        )
        return True

    def _confirmed(self) -> bool:
        """An ended batch the broker has in full: done once the control site's ack reaches
        its last event, or ``confirm_s`` after the broker took it (then it says what the
        control site still lacks). Anything else: done as it is."""
        if self.ended_seq is None or self.confirm_s <= 0:
            self._save_ack()
            return True
        if self.control_seq is not None and self.control_seq >= self.acked:
            self.confirmed = True
            self._save_ack()
            return True
        now = wall_monotonic()
        if self._delivered_at is None:
            self._delivered_at = now
        # A control site never heard for this batch (none at this site, or it is away): a
        # short wait for its retained ack, not the whole ``confirm_s`` after every batch.
        wait = self.confirm_s if self.control_seq is not None else min(self.confirm_s, UNHEARD_S)
        if now - self._delivered_at < wait:
            return False
        self.confirmed = False
        self._save_ack()
        heard = (
            "no control site acknowledged any of it"
            if self.control_seq is None
            else f"the control site acknowledged only up to event {self.control_seq}: events "
            f"{self.control_seq + 1}-{self.acked} unconfirmed"
        )
        log.warning(
            "%s: the broker has all %d events, but after %.0f s %s (python -m twin.telemetry "
            "forward %s --once sends them again)",
            self.journal_path.name,
            self.acked,
            self.confirm_s,
            heard,
            self.journal_path,
        )
        return True

    def _finished(self, until_ended: bool, parent_pid: int | None) -> bool:
        if self.ended_seq is not None and self.acked >= self.ended_seq and until_ended:
            return True
        parent_gone = parent_pid is not None and os.getppid() != parent_pid
        return (not until_ended or parent_gone) and not self._rows(self.acked, 1)

    @staticmethod
    async def _unless_lost(work: Awaitable[None], listener: asyncio.Task[None]) -> None:
        """Await ``work`` unless the connection ends first (the listener then raises).

        aiomqtt does not fail a QoS 1 publish whose connection dropped: it waits out
        its timeout, 300 s for a chunk. A forwarder closed by the broker (a network
        drop, or another connection of its login taking the session) must reconnect now.
        """
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await task
        listener.result()  # re-raise why the connection ended
        raise aiomqtt.MqttError("the connection ended during a publish")

    async def _answered(self, client: aiomqtt.Client, listener: asyncio.Task[None]) -> None:
        """Until the listener has handled (and answered) every message it was given; at most
        ``DELIVER_S`` and a publish's wait."""
        deadline = wall_monotonic() + DELIVER_S + CONNECT_S
        while (len(client.messages) or self._handling) and not listener.done():
            if wall_monotonic() > deadline:
                log.warning("%s: a control request is still unanswered", self.journal_path.name)
                return
            await asyncio.sleep(0.01)  # real time: the listener answers the site's requests

    async def _session(self, until_ended: bool, parent_pid: int | None) -> bool:
        """One connection: publish until done (True) or the connection drops (raises)."""
        async with self._client() as client:
            self._control_ack_seen = False
            self._published_head = None  # a new session says its head again
            online = {"online": True, "batch": self.batch, "at": wall_now().isoformat()}
            await client.publish(self._topic("status"), encode("status", online), 1, True)
            for name in self._own_topics():
                await client.subscribe(name, qos=1)
            listener = asyncio.create_task(self._listen(client))
            self.connected.set()
            self.sessions += 1
            self._session_started = wall_monotonic()
            try:
                while True:
                    if listener.done():
                        listener.result()  # re-raise why the connection ended
                    rows = self._rows(self.acked, self.chunk)
                    if self._superseded(parent_pid):
                        return True  # the resumed batch's forwarder says online, not us
                    if rows:
                        await self._unless_lost(self._publish_rows(client, rows), listener)
                        continue
                    if self._lagging():
                        await self._resend(client, listener)
                    if self._finished(until_ended, parent_pid) and self._confirmed():
                        why = "batch ended" if self.ended_seq is not None else "batch process ended"
                        if self.ended_seq is not None:
                            # The session outlives us: later acks and holds of an ended batch
                            # would wait there for the site's next forwarder, useless to it.
                            # Before "batch ended": every request that reached us is answered
                            # first, so the control site knows one answered after it never
                            # reached the batch (docs/telemetry.md, "answer").
                            await client.unsubscribe(self._topic("command"))
                            await client.unsubscribe(self._topic("ack"))
                            await self._answered(client, listener)
                        gone = {"online": False, "why": why, "batch": self.batch}
                        if self.ended_seq is not None:
                            gone["answered"] = True  # every request that reached us: answered
                        await client.publish(self._topic("status"), encode("status", gone), 1, True)
                        return True
                    await asyncio.sleep(self.poll_s)  # real time: waiting for the batch to write
            finally:
                self.connected.clear()
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await listener

    async def run(
        self, *, until_ended: bool = True, parent_pid: int | None = None, give_up_s: float = 0
    ) -> bool:
        """Forward until the batch ended and all is delivered; False if it gave up offline."""
        self._parent_pid = parent_pid
        while self.batch is None:
            self._prime()
            if self.batch is None:
                if parent_pid is not None and os.getppid() != parent_pid:
                    return False
                await asyncio.sleep(self.poll_s)  # real time: the batch has not begun yet
        backoff, offline_since = 0.2, None
        try:
            while True:
                sessions = self.sessions
                try:
                    if await self._session(until_ended, parent_pid):
                        return True
                except aiomqtt.MqttError as exc:
                    log.warning("%s: broker connection ended: %s", self.journal_path.name, exc)
                    if self._delivered_at is not None:
                        # Waiting only for the control site's ack, the broker having it all:
                        # the session was lost, or taken by the site's next forwarder (one
                        # login, one session). Reconnecting would republish from that ack and
                        # take it back, again and again: stop, saying what is unconfirmed.
                        self._delivered_at = -math.inf  # the wait is over
                        return self._confirmed()
                if self.sessions != sessions:
                    offline_since = None
                    if wall_monotonic() - self._session_started >= STABLE_S:
                        backoff = 0.2
                offline_since = offline_since or wall_monotonic()
                if give_up_s and wall_monotonic() - offline_since > give_up_s:
                    return False
                if self._superseded(parent_pid):
                    return True
                await asyncio.sleep(backoff)  # real time: the broker is away, try again later
                backoff = min(backoff * 2, self.backoff_max_s)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
