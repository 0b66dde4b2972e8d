"""Site telemetry against a real Mosquitto: delivery, order, store-and-forward, ACLs, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from twin.journal import CHECKPOINT, read_events
from twin.signing import generate_site_key, head_message, load_public_key
from twin.telemetry.broker import BrokerConfig, Mosquitto, free_port
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL

REPO = Path(__file__).resolve().parents[2]
POC = [sys.executable, "-m", "twin.cli"]


def poc_twin(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    code = "from twin.cli import main; main()"
    # no forwarder outlives a test; no control site here to confirm delivery
    env = {**os.environ, "POC_TWIN_TELEMETRY_GIVE_UP_S": "45", "POC_TWIN_TELEMETRY_CONFIRM_S": "0"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


async def collect(
    url: str,
    pattern: str,
    until: callable,
    timeout: float = 30,
    subscribed: asyncio.Event | None = None,
) -> list:
    """Subscribe as a client of ``url`` and gather (topic, body) until ``until(messages)``;
    ``subscribed`` is set once the broker granted the subscription (no guessing wait)."""
    got: list[tuple[str, dict]] = []
    client = aiomqtt.Client(**BrokerURL.parse(url).client_kwargs())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout), client as c:
            await c.subscribe(pattern, qos=1)
            if subscribed is not None:
                subscribed.set()
            async for message in c.messages:
                got.append((str(message.topic), json.loads(message.payload)))
                if until(got):
                    return got
    return got


def test_batch_with_broker_delivers_every_event_in_order(broker: BrokerConfig, tmp_path: Path):
    journal = tmp_path / "a1.sqlite"

    async def scenario() -> tuple[list, subprocess.CompletedProcess[str]]:
        def ended(got: list) -> bool:
            return any(t.endswith("/status") and b.get("why") == "batch ended" for t, b in got)

        subscribed = asyncio.Event()
        listener = asyncio.create_task(
            collect(broker.url("control"), "poc-twin/site-a/+/a1/#", ended, subscribed=subscribed)
        )
        await asyncio.wait_for(subscribed.wait(), 10)
        url = broker.url("site-a", unit="cleanroom-1")
        run = await asyncio.to_thread(
            poc_twin,
            "run",
            "recipes/smoke.yaml",
            "--journal",
            str(journal),
            "--batch-id",
            "a1",
            "-q",
            "--broker",
            url,
        )
        return await listener, run

    got, run = asyncio.run(scenario())
    assert run.returncode == 0, run.stderr
    assert "every event delivered" in run.stdout
    seqs = [b["seq"] for t, b in got if t == "poc-twin/site-a/cleanroom-1/a1/event"]
    recorded = [e.seq for e in read_events(journal)]
    assert seqs == recorded  # every event, once, in journal order
    states = [b for t, b in got if t.endswith("/state")]
    assert states[-1]["state"] == "Complete"
    assert states[-1]["pv"]["temperature_c"] > 30


def test_broker_away_then_back_everything_arrives(tmp_path: Path):
    """The site runs with no broker; when one comes up, the whole journal arrives, in order."""
    config = BrokerConfig(tmp_path / "late-broker", port=free_port())
    config.add_site("site-a")
    config.add_control("control")
    journal = tmp_path / "late.sqlite"
    run = poc_twin(
        "run",
        "recipes/smoke.yaml",
        "--journal",
        str(journal),
        "--batch-id",
        "late",
        "-q",
        "--broker",
        config.url("site-a"),
    )
    assert run.returncode == 0, run.stderr
    assert "unreachable" in run.stderr
    assert "telemetry still pending" in run.stderr
    total = len(list(read_events(journal)))

    async def later() -> list:
        def complete(got: list) -> bool:
            return sum(t.endswith("/event") for t, _ in got) >= total

        listener = asyncio.create_task(collect(config.url("control"), "poc-twin/#", complete))
        await asyncio.sleep(0.3)  # real time: subscriber attached before the broker gets data
        return await listener

    # the first session of the control user subscribes before the detached forwarder's back-off
    with Mosquitto(config):
        got = asyncio.run(later())
    seqs = [b["seq"] for t, b in got if t.endswith("/event")]
    assert seqs == list(range(1, total + 1))
    ack = json.loads(Path(f"{journal}.telemetry.json").read_text())
    assert ack["acked_seq"] == total


def test_a_site_can_neither_read_nor_write_another_sites_topics(broker: BrokerConfig, tmp_path):
    """site-b subscribes to site-a's topics and forges on one connection: its login is its
    client id, so a second connection of site-b would close the first (test_identities.py)."""

    async def scenario() -> tuple[list, list]:
        ready = asyncio.Event()
        control = asyncio.create_task(
            collect(broker.url("control"), "poc-twin/site-a/u/x/#", lambda g: False, 3, ready)
        )
        await asyncio.wait_for(ready.wait(), 10)
        spied: list[str] = []
        async with aiomqtt.Client(**BrokerURL.parse(broker.url("site-b")).client_kwargs()) as b:
            await b.subscribe("poc-twin/site-a/#", qos=1)
            # forging site-a's event, and lifting site-b's own suspension: both refused
            await b.publish("poc-twin/site-a/u/x/event", b'{"v":1,"seq":1}', qos=1)
            await b.publish("poc-twin/site-b/-/-/suspension", b'{"v":1}', qos=1)
            site_a = BrokerURL.parse(broker.url("site-a")).client_kwargs()
            async with aiomqtt.Client(**site_a) as a:
                await a.publish("poc-twin/site-a/u/x/event", b'{"v":1,"seq":2}', qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    async for message in b.messages:
                        spied.append(str(message.topic))
        seen = await control
        return spied, seen

    spied, seen = asyncio.run(scenario())
    assert spied == []  # site-b read nothing of site-a
    assert [b["seq"] for _, b in seen] == [2]  # only site-a's own message got through


def test_tls_listener_delivers_and_refuses_an_unknown_ca(broker: BrokerConfig, tmp_path: Path):
    journal = tmp_path / "tls.sqlite"
    run = poc_twin("run", "recipes/smoke.yaml", "--journal", str(journal), "-q", "--batch-id", "t1")
    assert run.returncode == 0, run.stderr
    url = broker.url("site-a", tls=True, unit="mobile-1")
    assert url.startswith("mqtts://")
    forwarder = Forwarder(journal, BrokerURL.parse(url))
    assert asyncio.run(forwarder.run(until_ended=True, give_up_s=5))
    assert forwarder.acked == len(list(read_events(journal)))

    async def connect_without_our_ca() -> None:
        no_ca = BrokerURL.parse(url.split("?")[0])  # the system trust store only
        async with aiomqtt.Client(**no_ca.client_kwargs(), timeout=5):
            pass

    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(connect_without_our_ca())


def test_the_published_head_is_the_latest_signed_checkpoint(broker: BrokerConfig, tmp_path: Path):
    """A site with a key publishes heads the control site can verify with its public key."""
    keys = tmp_path / "keys"
    private, public = generate_site_key("site-a", keys)
    journal = tmp_path / "signed.sqlite"
    run = poc_twin(
        "run",
        "recipes/smoke.yaml",
        "--journal",
        str(journal),
        "--batch-id",
        "signed1",
        "-q",
        "--site-key",
        str(private),
    )
    assert run.returncode == 0, run.stderr
    checkpoints = [e for e in read_events(journal) if e.kind == CHECKPOINT]
    assert len(checkpoints) >= 2  # one every 500 events and one at the end

    async def scenario() -> list:
        def last_signed(got: list) -> bool:
            return any(b.get("checkpoint_seq") == checkpoints[-1].seq for _, b in got)

        subscribed = asyncio.Event()
        listener = asyncio.create_task(
            collect(
                broker.url("control"),
                "poc-twin/site-a/+/signed1/head",
                last_signed,
                subscribed=subscribed,
            )
        )
        await asyncio.wait_for(subscribed.wait(), 10)
        assert await Forwarder(journal, BrokerURL.parse(broker.url("site-a"))).run()
        return await listener

    heads = [body for _, body in asyncio.run(scenario())]
    signed = [h for h in heads if h["signature"]]
    # One head per chunk the forwarder sends: each names a checkpoint, in order, the last
    # one among them (how many depends on chunking, not on what is being tested).
    by_seq = {c.seq: c for c in checkpoints}
    named = [h["checkpoint_seq"] for h in signed]
    assert named == sorted(set(named)) and named[-1] == checkpoints[-1].seq
    assert heads.index(signed[0]) + len(signed) == len(heads)  # once signed, always signed
    key = load_public_key(public)
    for head in signed:
        checkpoint = by_seq[head["checkpoint_seq"]]
        assert (head["seq"], head["hash"]) == (checkpoint.seq - 1, checkpoint.prev_hash)
        key.verify(bytes.fromhex(head["signature"]), head_message(head["seq"], head["hash"]))


def test_the_batch_state_carries_its_latest_forecast(broker: BrokerConfig, tmp_path: Path):
    """A forecast kept beside the journal travels to the control site with the batch's state."""
    from twin.ensemble.forecast import BRIEF_KEYS, save
    from twin.telemetry.credentials import BROKER_ENV

    journal = tmp_path / "f1.sqlite"
    ran = poc_twin("run", "recipes/smoke.yaml", "--journal", str(journal), "--batch-id", "f1", "-q")
    assert ran.returncode == 0, ran.stderr
    forecast = {k: None for k in BRIEF_KEYS} | {
        "made_at_day": 0.2,
        "harvest_day": {"p5": 0.25, "p50": 0.26, "p95": 0.3},
        "p_release": 0.9,
        "donor": {"growth_potential": {"p5": 0.9, "p50": 1.0, "p95": 1.1}},  # not sent
    }
    save(journal, forecast)

    async def scenario() -> tuple[list, subprocess.CompletedProcess[str]]:
        def ended(got: list) -> bool:
            return any(t.endswith("/state") and b.get("ended") for t, b in got)

        subscribed = asyncio.Event()
        listener = asyncio.create_task(
            collect(
                broker.url("control"), "poc-twin/site-a/+/f1/state", ended, subscribed=subscribed
            )
        )
        await asyncio.wait_for(subscribed.wait(), 10)
        env = {**os.environ, BROKER_ENV: broker.url("site-a", unit="cleanroom-1")}
        forward = await asyncio.to_thread(
            subprocess.run,
            # no control site here to confirm delivery
            [sys.executable, "-m", "twin.telemetry", "forward", str(journal), "--once",
             "--confirm-s", "0"],
            capture_output=True, text=True, timeout=60, cwd=REPO, env=env,
        )  # fmt: skip
        return await listener, forward

    got, forward = asyncio.run(scenario())
    assert forward.returncode == 0, forward.stderr
    state = [b for _, b in got][-1]
    assert state["ended"] and state["forecast"]["harvest_day"] == forecast["harvest_day"]
    assert state["forecast"]["p_release"] == 0.9 and "donor" not in state["forecast"]
