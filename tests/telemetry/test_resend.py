"""Events the control site missed are sent again while the forwarder stays connected.

The control site's retained ``ack`` (its highest seq stored with no gap) is what the
forwarder follows: when it stays behind what the broker took for longer than the grace
period, the events after it are sent again; an ended batch is done only when the ack
reaches its last event, or, after a bounded wait, says what is still unacknowledged.
A subscriber on the control login plays the control site (through a real Mosquitto): it
stores what it receives, drops a range of events, and publishes its ack as the real one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from twin.journal import read_events
from twin.telemetry.broker import BrokerConfig
from twin.telemetry.topics import BrokerURL

REPO = Path(__file__).resolve().parents[2]
DROPPED = range(40, 78)  # 38 events, as many as the tester lost


def run_as(journal: Path) -> tuple[str, ...]:
    return ("--journal", str(journal), "--batch-id", "rs")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    journal = tmp_path_factory.mktemp("resend") / "rs.sqlite"
    ran = subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", "recipes/smoke.yaml", "-q", *run_as(journal)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return journal


async def control_site(
    url: str, unit: str, batch: str, stored: set[int], ready: asyncio.Event, drop_for_good: bool
) -> None:
    """Store events, drop DROPPED the first time (or always), ack the gap-free seq."""
    seen: set[int] = set()
    async with aiomqtt.Client(**BrokerURL.parse(url).client_kwargs()) as client:
        await client.subscribe(f"poc-twin/site-a/{unit}/{batch}/event", qos=1)
        ready.set()
        acked = -1
        async for message in client.messages:
            seq = json.loads(message.payload)["seq"]
            if seq in DROPPED and (drop_for_good or seq not in seen):
                seen.add(seq)
                continue  # lost on the control site's side, e.g. its session taken over
            stored.add(seq)
            contiguous = 0
            while contiguous + 1 in stored:
                contiguous += 1
            if contiguous != acked:
                acked = contiguous
                ack = str(message.topic).rsplit("/", 1)[0] + "/ack"
                body = json.dumps({"v": 1, "seq": contiguous})
                await client.publish(ack, body, qos=1, retain=True)


def forward(broker: BrokerConfig, journal: Path, unit: str, drop_for_good: bool):
    """``python -m twin.telemetry forward`` of ``journal`` (batch ``rs``) as unit ``unit`` (its
    own retained ack) to a control site that drops DROPPED once, or for good."""
    batch = "rs"
    total = len(list(read_events(journal)))

    async def scenario() -> tuple[subprocess.CompletedProcess[str], set[int]]:
        stored: set[int] = set()
        ready = asyncio.Event()
        site = asyncio.create_task(
            control_site(broker.url("control"), unit, batch, stored, ready, drop_for_good)
        )
        await asyncio.wait_for(ready.wait(), 10)
        env = {
            **os.environ,
            "POC_TWIN_BROKER": broker.url("site-a", unit=unit),
            "POC_TWIN_TELEMETRY_RESEND_S": "1",
            "POC_TWIN_TELEMETRY_CONFIRM_S": "6",
            "POC_TWIN_TELEMETRY_GIVE_UP_S": "30",
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "twin.telemetry", "forward", str(journal)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        site.cancel()
        return done, stored

    done, stored = asyncio.run(scenario())
    return done, stored, total


def test_events_the_control_site_missed_are_resent_until_its_ack_is_complete(
    broker: BrokerConfig, smoke: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "rs1.sqlite"
    journal.write_bytes(smoke.read_bytes())
    done, stored, total = forward(broker, journal, "resend-1", drop_for_good=False)
    assert done.returncode == 0, done.stderr
    assert stored == set(range(1, total + 1))  # the dropped range came again: no gap
    assert "sending events 40-" in done.stderr  # the forwarder said what it resent
    ack = json.loads(Path(f"{journal}.telemetry.json").read_text())
    assert ack["acked_seq"] == total and ack["control_seq"] == total


def test_a_gap_that_stays_is_said_not_claimed_delivered(
    broker: BrokerConfig, smoke: Path, tmp_path: Path
) -> None:
    """The control site never stores 40-77: the forwarder gives up waiting after its bound,
    exits 3 and says which events the control site has not acknowledged."""
    journal = tmp_path / "rs2.sqlite"
    journal.write_bytes(smoke.read_bytes())
    done, stored, total = forward(broker, journal, "resend-2", drop_for_good=True)
    assert done.returncode == 3, done.stderr
    assert f"events 40-{total} unconfirmed" in done.stderr
    assert not stored & set(DROPPED)
    ack = json.loads(Path(f"{journal}.telemetry.json").read_text())
    assert ack["acked_seq"] == total and ack["control_seq"] == 39
