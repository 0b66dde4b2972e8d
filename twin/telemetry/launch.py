"""How ``poc-twin run --broker`` uses telemetry: check the site may start, then forward.

The forwarder runs as a child process on a real-time loop (see forwarder.py);
the batch's own process and loop are untouched, so a site with a broker runs
its batch exactly as one without. When the batch ends, ``finish`` waits a
little for delivery; if the broker is away the forwarder stays behind, detached,
and delivers when the broker returns (the ack file remembers where it was).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt

from twin.engine.inbox import RELAY_ENV
from twin.telemetry.credentials import BROKER_ENV, resolve_broker
from twin.telemetry.forwarder import UNCONFIRMED, AckFile, settings_from
from twin.telemetry.site import SiteRecord, Suspension
from twin.telemetry.topics import BrokerURL, decode, encode, topic

__all__ = ["SiteTelemetry", "fetch_suspension"]


async def fetch_suspension(broker: BrokerURL, timeout_s: float = 5.0) -> Suspension | None:
    """The control site's retained suspension for this site, or None if the broker is away.

    Deterministic, no guessing wait: after subscribing we publish a probe to our own
    status topic; the broker delivers retained messages before the probe comes back.

    The broker binds the client id to the login (docs/telemetry.md, "Identities"),
    so this connection resumes the site's persistent session, which a forwarder of
    another batch of this site may hold: it takes the session over for a moment
    (that forwarder reconnects) and must not wipe it, hence no clean session; the
    probe topic is unsubscribed again so the session keeps only what it had.
    """
    probe = secrets.token_hex(8)
    suspension_topic = topic(broker.site, "-", "-", "suspension")
    probe_topic = topic(broker.site, broker.unit, "-", "status")
    found: Suspension = Suspension(False)
    client = aiomqtt.Client(
        **broker.client_kwargs(),
        identifier=broker.username or broker.site,
        clean_session=False,
        timeout=timeout_s,
    )
    # The session's queued messages come too: a hold or acknowledgement the control site
    # sent while the batch's process was dead. Only what this check reads is acknowledged;
    # the broker sends the rest again to the forwarder, which takes the session next.
    # (Before, each was acknowledged here and dropped: a hold never reached the resumed
    # batch.) aiomqtt does not expose paho's manual acknowledgement: its client does.
    paho = client._client
    paho.manual_ack_set(True)
    try:
        async with asyncio.timeout(timeout_s), client:
            await client.subscribe(suspension_topic, qos=1)
            await client.subscribe(probe_topic, qos=1)
            await client.publish(probe_topic, encode("status", {"probe": probe}), qos=1)
            async for message in client.messages:
                body = decode(message.payload) or {}
                if message.topic.matches(suspension_topic):
                    paho.ack(message.mid, message.qos)
                    found = Suspension.from_payload(body)
                elif message.topic.matches(probe_topic) and body.get("probe") == probe:
                    paho.ack(message.mid, message.qos)
                    await client.unsubscribe(probe_topic)
                    return found
                elif message.topic.matches(probe_topic):
                    paho.ack(message.mid, message.qos)  # an earlier check's probe: ours too
    except (aiomqtt.MqttError, TimeoutError, OSError):
        return None
    return None


class SiteTelemetry:
    """The telemetry of one batch run: suspension check, forwarder child, final delivery."""

    def __init__(self, broker_url: str, journal_path: Path) -> None:
        self.broker_url = broker_url
        #: The password may come from POC_TWIN_BROKER_PASSWORD_FILE; the child inherits it.
        self.broker = resolve_broker(broker_url)
        settings_from(os.environ)  # the forwarder's timings: refused here, not in the child
        self.journal_path = Path(journal_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.live = True
        #: Shared with the forwarder child only: its hold requests from the control site
        #: are the control site's (authenticated there), not a site user's signature.
        self.relay_token = secrets.token_hex(32)

    def suspension(self) -> tuple[Suspension, bool]:
        """(suspension, heard from the broker); offline, the site's own record decides."""
        record = SiteRecord.beside(self.journal_path)
        try:
            live = asyncio.run(fetch_suspension(self.broker))
            if live is not None:
                action = "suspend" if live.suspended else "reinstate"
                if live.suspended or record.suspension(self.broker.site).suspended:
                    rid = f"{action}:{live.at}"
                    record.record(
                        self.broker.site,
                        action,
                        live.operator,
                        live.reason,
                        request_id=rid,
                        outcome="recorded",
                    )
                return live, True
            self.live = False
            return record.suspension(self.broker.site), False
        finally:
            record.close()

    def start(self) -> None:
        """Start the forwarder child; the URL (with its password) travels in the environment,
        never on its command line, where ``ps`` would show it to every user."""
        env = {**os.environ, BROKER_ENV: self.broker_url, RELAY_ENV: self.relay_token}
        with Path(f"{self.journal_path}.telemetry.log").open("ab") as log:
            self.proc = self._spawn(env, log)

    def _spawn(self, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twin.telemetry",
                "forward",
                str(self.journal_path),
                "--parent-pid",
                str(os.getpid()),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives Ctrl-C of the batch: it still has to deliver
        )

    def finish(self, wait_s: float = 15.0) -> bool:
        """Wait (real time) for delivery of the whole journal; False if it is still pending."""
        return self.outcome(wait_s)[0] == "stored"

    def outcome(self, wait_s: float = 15.0) -> tuple[str, str]:
        """Wait (real time) for the forwarder, then say where the journal's events are:
        ``stored`` (the control site acknowledged the last one), ``unconfirmed`` (the broker
        has them all, the control site's ack stayed behind), ``pending`` (the forwarder
        still works, detached), ``gave up``; and one sentence for the person."""
        if self.proc is None:
            return "stored", "no forwarder"
        if not self.live:
            wait_s = min(wait_s, 2.0)  # the broker was away at start: do not hold the operator
        try:
            code: int | None = self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            code = None
        body = AckFile(self.journal_path).read()
        sent, stored = body.get("acked_seq"), body.get("control_seq")
        heard = (
            "no control site has acknowledged any of it"
            if not isinstance(stored, int)
            else f"the control site has acknowledged up to event {stored}"
        )
        if code == 0:
            if isinstance(stored, int) and isinstance(sent, int) and stored >= sent:
                return "stored", f"every event delivered and stored by the control site ({sent})"
            return "stored", f"every event delivered to the broker ({sent}); {heard}"
        if code == UNCONFIRMED:
            return "unconfirmed", (
                f"every event delivered to the broker ({sent}), but {heard}: events "
                f"{(stored if isinstance(stored, int) else 0) + 1}-{sent} are not confirmed "
                f"(see {self.journal_path}.telemetry.log)"
            )
        if code is None:
            return "pending", f"still pending: the broker has up to event {sent or 0}; {heard}"
        return "gave up", f"not delivered: the broker has up to event {sent or 0}; {heard}"
