"""The control site's audit of a request shows what the site did with it, not only "sent".

The site answers every relayed request (``answer``, docs/telemetry.md) with its outcome;
the control site writes that into its ``requests`` row. A request the site can no longer
take (its batch ended, its forwarder gone) is recorded as not delivered, never left "sent".
Real Mosquitto, real batches (``poc-twin run --broker``), the real control site.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
from dashboard import started_site
from site_journals import poc_twin, running_batch, wait_until
from site_users import PEOPLE
from test_supervision import post

from twin.clock import wall_monotonic
from twin.control_site.serve import ControlSite
from twin.control_site.store import open_store
from twin.engine.inbox import send_command
from twin.journal import read_events
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.site import SiteRecord
from twin.telemetry.topics import BrokerURL, encode

REPO = Path(__file__).resolve().parents[2]


def outcome(site: ControlSite, batch: str, action: str = "hold") -> str:
    rows = site.store.query(
        "SELECT outcome FROM requests WHERE batch=? AND action=? ORDER BY at", (batch, action)
    )
    return str(rows[-1][0]) if rows else ""


async def settled(site: ControlSite, batch: str, action: str = "hold", timeout: float = 15) -> str:
    """The request's outcome once it is more than "sent" (or as it stands after ``timeout``)."""
    deadline = wall_monotonic() + timeout
    while outcome(site, batch, action) in ("", "sending", "sent") and wall_monotonic() < deadline:
        await asyncio.sleep(0.1)  # real time: the site answers over the broker
    return outcome(site, batch, action)


def stale(site: ControlSite, state: str = "Running") -> None:
    """The control site's view a moment behind the site's: it still sees the batch running."""
    unit = "cleanroom-2"
    site.store.batch_status = lambda s, b: (unit, False)  # type: ignore[method-assign]
    site.store.batch_states = lambda s, b: (state, state)  # type: ignore[method-assign]


def test_a_hold_the_site_refuses_is_audited_with_the_sites_answer(
    broker: BrokerConfig, alarm_recipe: Path, tmp_path: Path
) -> None:
    """The batch held itself on an alarm a moment ago; the control site's page still shows
    it running and sends alice's hold. The site refuses it (not valid in Held): the
    control site's audit says so and why, not "sent"."""
    port = free_port()
    journal = tmp_path / "ans1.sqlite"
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> tuple[str, str, list[tuple[Any, ...]]]:
        site = await started_site(broker, tmp_path, port)
        url = broker.url("site-a", unit="cleanroom-2")
        try:
            async with running_batch(alarm_recipe, journal, "ans1", url) as proc:
                await wait_until(lambda: site.store.batch_state("site-a", "ans1") == "Held")
                await wait_until(Path(f"{journal}.telemetry.json").exists)
                stale(site)
                status, text = await asyncio.to_thread(
                    post, f"{base}/batch/site-a/ans1/hold", "night check"
                )
                assert status == 200, text
                refused = await settled(site, "ans1")
                abort = await send_command(
                    journal, "abort", operator="sam", password=PEOPLE["sam"][2], reason="over"
                )
                assert abort["status"] == "accepted", abort
                assert await proc.wait() == 3
            commands = [
                (e.data.get("operator"), e.data.get("command"), e.data.get("accepted"))
                for e in read_events(journal)
                if e.kind == "command"
            ]
            return refused, outcome(site, "ans1"), commands
        finally:
            await site.stop()

    refused, final, commands = asyncio.run(scenario())
    assert refused.startswith("refused at the site: "), refused
    assert "Held" in refused
    assert final == refused
    # the site journalled alice's hold as refused, with who
    assert ("control-site:alice", "hold", False) in commands
    rows = SiteRecord.beside(journal).requests()
    holds = [r for r in rows if r[0] == "hold"]
    assert len(holds) == 1 and holds[0][3].startswith("refused: ")


def test_a_hold_that_reaches_an_ended_batch_is_recorded_not_sent(
    broker: BrokerConfig, tmp_path: Path
) -> None:
    """The batch finished its last phase and its forwarder left; the control site's view
    still showed it running when alice pressed hold. Nothing at the site can take it: the
    control site's audit says so (the batch ended Complete), never "sent" and silence."""
    port = free_port()
    journal = tmp_path / "ans2.sqlite"
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> str:
        site = await started_site(broker, tmp_path, port)
        url = broker.url("site-a", unit="cleanroom-2")
        try:
            recipe = REPO / "recipes" / "smoke.yaml"
            async with running_batch(recipe, journal, "ans2", url) as proc:
                assert await proc.wait() == 0

            def gone() -> bool:
                rows = site.store.query(
                    "SELECT online FROM batches WHERE site='site-a' AND batch='ans2'"
                )
                return bool(rows) and rows[0][0] == 0

            await wait_until(gone)
            stale(site)
            status, text = await asyncio.to_thread(
                post, f"{base}/batch/site-a/ans2/hold", "late check"
            )
            assert status == 200, text
            return await settled(site, "ans2", timeout=5)
        finally:
            await site.stop()

    final = asyncio.run(scenario())
    assert final.startswith("not delivered: "), final
    assert "ended Complete" in final and "nothing was journalled" in final


def test_a_forwarder_refuses_a_request_for_its_ended_batch_at_once(tmp_path: Path) -> None:
    """While an ended batch's forwarder still waits for the control site's last ack, a
    hold that reaches it is refused at once, naming the final state, and recorded."""
    journal = tmp_path / "ans3.sqlite"
    ran = poc_twin("run", "recipes/smoke.yaml", "--journal", str(journal), "--batch-id", "ans3")
    assert ran.returncode == 0, ran.stderr
    record = SiteRecord.beside(journal)
    forwarder = Forwarder(
        journal, BrokerURL.parse("mqtt://site-a@127.0.0.1:1/?unit=cleanroom-2"), record=record
    )
    forwarder._prime()
    forwarder._fold(forwarder._rows(0, 100_000))
    body = {"id": "r1", "command": "hold", "operator": "alice", "reason": "late"}
    started = wall_monotonic()
    said = asyncio.run(forwarder._forward_command(body))
    assert wall_monotonic() - started < 1.0
    assert said == ("refused", "batch ans3 has ended Complete: nothing was journalled")
    ended = "refused: batch ans3 has ended Complete: nothing was journalled"
    assert record.requests()[0][3] == ended


def test_a_request_delivered_twice_is_acted_on_once(broker: BrokerConfig, tmp_path: Path) -> None:
    """MQTT delivers a request at least once: alice's hold comes again after the batch was
    held and restarted (a reconnect's redelivery). The batch is not held a second time; the
    repeat is answered with what became of the first."""
    journal = tmp_path / "dup1.sqlite"
    recipe = tmp_path / "long.yaml"  # a 30-day culture: still running while people act
    recipe.write_text(
        (REPO / "recipes" / "smoke.yaml").read_text().replace("duration_h: 6", "duration_h: 720")
    )
    where = "poc-twin/site-a/cleanroom-2/dup1"
    hold = {"id": "dup-1", "command": "hold", "operator": "alice", "reason": "smell check"}

    def procedure(state: str) -> Callable[[], bool]:
        def reached() -> bool:
            states = [
                e.data["to"]
                for e in read_events(journal)
                if e.kind == "transition" and e.source.startswith("procedure:")
            ]
            return bool(states) and states[-1] == state

        return reached

    async def scenario() -> list[dict[str, Any]]:
        control = BrokerURL.parse(broker.url("control"))
        url = broker.url("site-a", unit="cleanroom-2")
        answers: list[dict[str, Any]] = []
        async with aiomqtt.Client(**control.client_kwargs(), clean_session=True) as client:
            await client.subscribe(f"{where}/answer", qos=1)

            async def answered(n: int) -> None:
                async with asyncio.timeout(30):
                    while len(answers) < n:
                        answers.append(json.loads((await anext(client.messages)).payload))

            async with running_batch(recipe, journal, "dup1", url) as proc:
                await wait_until(Path(f"{journal}.telemetry.json").exists)
                for _ in range(2):
                    await client.publish(f"{where}/command", encode("command", hold), qos=1)
                    await answered(len(answers) + 1)
                    if len(answers) == 1:
                        assert answers[0]["status"] == "accepted", answers[0]
                        await wait_until(procedure("Held"))
                        restart = await send_command(
                            journal,
                            "restart",
                            operator="sam",
                            password=PEOPLE["sam"][2],
                            reason="smell fine",
                        )
                        assert restart["status"] == "accepted", restart
                        await wait_until(procedure("Running"))
                abort = await send_command(
                    journal, "abort", operator="sam", password=PEOPLE["sam"][2], reason="over"
                )
                assert abort["status"] == "accepted", abort
                assert await proc.wait() == 3
        return answers

    first, repeat = asyncio.run(scenario())
    holds = [
        e
        for e in read_events(journal)
        if e.kind == "command" and e.data.get("command") == "hold" and e.data.get("accepted")
    ]
    assert [e.data["operator"] for e in holds] == ["control-site:alice"]
    assert first["id"] == repeat["id"] == "dup-1"
    assert first["status"] == repeat["status"] == "accepted"
    # the batch's state after the hold, as the batch said it (before: the forwarder's last
    # read, "Running", as if the hold had changed nothing)
    assert first["state"].startswith("Holding"), first
    assert "a repeat of request dup-1" in repeat["outcome"] and "not again" in repeat["outcome"]
    states = [
        e.data["to"]
        for e in read_events(journal)
        if e.kind == "transition" and e.source.startswith("procedure:")
    ]
    assert states.count("Held") == 1, states


def test_only_a_site_that_answers_has_its_unanswered_requests_recorded_undelivered(
    tmp_path: Path,
) -> None:
    """A site on older code (or behind a broker that refuses its answers) never answers:
    its "batch ended" says nothing of the requests it took, so a hold it took stays "sent".
    A site that answers says so in that status: one it left unanswered never reached it."""
    store = open_store(str(tmp_path / "control.sqlite"))
    outcomes = {}
    for batch, answers in (("old1", False), ("new1", True)):
        running = {"batch": batch, "state": "Running", "seq": 5, "ended": False}
        store.ingest([("site-a", "cleanroom-2", batch, "state", running)])
        store.record_request(f"r-{batch}", "site-a", batch, "hold", "alice", "check", "sending")
        store.settle_request(f"r-{batch}", "sent")
        ended: dict[str, Any] = {"online": False, "why": "batch ended", "batch": batch}
        if answers:
            ended["answered"] = True
        store.ingest([("site-a", "cleanroom-2", batch, "status", ended)])
        rows = store.query("SELECT outcome FROM requests WHERE id=?", (f"r-{batch}",))
        outcomes[batch] = rows[0][0]
    assert outcomes["old1"] == "sent"
    assert outcomes["new1"].startswith("not delivered: batch new1 had ended")
