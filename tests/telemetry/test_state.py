"""The ``state`` a site publishes, folded from its journal, names what the batch itself says
(``Batch.status``): a hold below the procedure, a pause over it, a scan a phase waits for.

A real batch on the twin (virtual time), its journal folded event by event as the forwarder
folds it; at each point the fold's status is the batch's own. Before, the fold followed only
the procedure's transitions: a held unit showed "Running" at the control site."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from bedside import ROOT, scanned_smoke

from twin.bench import load_bench, open_bench
from twin.clock import Clock
from twin.engine.batch import Batch
from twin.engine.lots import LotScan
from twin.engine.states import ProceduralState as S
from twin.journal import Event, Journal
from twin.recipe import load_recipe
from twin.telemetry.state import BatchState

HOUR = 3600.0


class Run:
    """A batch running on the twin, its journal folded into a BatchState as it grows."""

    def __init__(self, batch: Batch, clock: Clock, events: list[Event], fold: BatchState):
        self.batch, self.clock, self.events, self.fold = batch, clock, events, fold

    async def until(self, predicate: Callable[[Event], bool]) -> Event:
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            await self.clock.sleep(1.0)

    def agree(self) -> str:
        """The fold's status, checked against the batch's own."""
        assert self.fold.status == self.batch.status
        return self.fold.status


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[asyncio.Task[Any], Any]] = []

    async def start(recipe: Path, **batch_args: Any) -> Run:
        clock = Clock()
        journal = Journal(tmp_path / f"{len(started)}.sqlite", clock.now)
        events: list[Event] = []
        fold = BatchState("B1")
        journal.subscribe(events.append)
        journal.subscribe(fold.apply)
        ctx = open_bench(load_bench(ROOT / "benches" / "sim.yaml"), clock)
        opened = await ctx.__aenter__()
        batch = Batch(
            load_recipe(recipe),
            opened.equipment,
            journal,
            clock,
            batch_id="B1",
            operator="kim",
            **batch_args,
        )
        started.append((asyncio.create_task(batch.run()), ctx))
        return Run(batch, clock, events, fold)

    yield start
    for task, ctx in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctx.__aexit__(None, None, None)


async def test_the_folded_state_names_a_hold_below_a_pause_and_a_container_scan(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    run = await running(scanned_smoke(tmp_path))
    await run.until(lambda e: e.kind == "lot_requested")
    await run.clock.sleep(60)
    assert run.agree() == "Running (waiting for a scan of the activator container)"
    assert run.fold.as_payload()["status"] == run.batch.status
    run.batch.present_lot(
        LotScan("activator", "TA-1", run.clock.batch_datetime().date()), who="kim", why="scan"
    )
    await run.until(
        lambda e: e.kind == "transition" and "culture" in e.source and e.data["to"] == "Running"
    )
    await run.clock.sleep(HOUR)
    assert run.agree() == "Running"
    run.batch.command("hold", who="kim", why="look at the bag", level="unit")
    await run.clock.sleep(10 * 60)
    assert run.agree() == "Running (unit:expansion_bioreactor Held)"
    assert run.fold.status_reason == "unit:expansion_bioreactor: look at the bag"
    run.batch.command("pause", who="kim", why="shift change")
    await run.clock.sleep(10 * 60)
    assert run.batch.state is S.PAUSED
    assert run.agree() == "Paused (unit:expansion_bioreactor Held)"
    assert run.fold.status_reason == "shift change"
    run.batch.command("resume", who="kim", why="back")
    await run.clock.sleep(60)
    run.batch.command("restart", who="kim", why="bag fine", level="unit")
    await run.clock.sleep(10 * 60)
    assert run.agree() == "Running"
    run.batch.command("hold", who="kim", why="DO probe", level="phase")
    await run.clock.sleep(10 * 60)
    assert run.agree().startswith("Running (phase:expansion_bioreactor/culture/")
    assert run.agree().endswith(":culture Held)")


async def test_the_folded_state_names_the_identity_scan_awaited(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    recipe = tmp_path / "identity.yaml"  # the smoke recipe, its culture after an identity scan
    recipe.write_text(
        (ROOT / "recipes" / "smoke.yaml")
        .read_text()
        .replace(
            "          - {phase: add, material: activator",
            "          - {phase: confirm_identity, on_failure: abort}\n"
            "          - {phase: add, material: activator",
        )
    )
    run = await running(recipe, patient_id="P-0042", bag_id="BAG-7781")
    await run.until(lambda e: e.kind == "identity_requested")
    await run.clock.sleep(60)
    assert run.agree() == "Running (waiting for the identity scan)"
    run.batch.command("hold", who="kim", why="wrong bag brought")
    await run.clock.sleep(10 * 60)
    assert run.agree() == "Held"
    assert run.fold.status_reason == "wrong bag brought"
    run.batch.command("restart", who="kim", why="right bag here")
    await run.until(lambda e: len([e for e in run.events if e.kind == "identity_requested"]) > 1)
    await run.clock.sleep(60)
    assert run.agree() == "Running (waiting for the identity scan)"
    run.batch.present_identity("P-0042", "BAG-7781", who="kim", why="scanned at the bag")
    await run.clock.sleep(60)
    assert run.agree() == "Running"


def test_alarm_counts_cover_every_alarm_and_go_down_as_they_are_acknowledged(
    tmp_path: Path,
) -> None:
    """The message lists the latest 20 alarms; its counts cover all of them (the control site
    said "20 alarm(s)" for 129, and never fewer after acknowledgements)."""
    t = iter(float(s) for s in range(0, 10**6, 60))
    journal = Journal(tmp_path / "a.sqlite", lambda: next(t), signer=None)
    fold = BatchState("B1")
    journal.subscribe(fold.apply)
    journal.append("batch_started", "batch", {"batch_id": "B1", "recipe": {"id": "x"}})
    raised = [
        journal.append("alarm", "bioreactor", {"alarm": "t", "message": f"temperature {i}"})
        for i in range(129)
    ]
    payload = fold.as_payload()
    assert len(payload["alarms"]) == 20 and payload["alarms"][-1]["message"] == "temperature 128"
    assert (payload["alarms_raised"], payload["alarms_unacknowledged"]) == (129, 129)
    for alarm in raised[:100]:
        journal.append("alarm_ack", "batch", {"alarm_seq": alarm.seq, "user": "kim"})
    journal.append("alarm_ack", "batch", {"alarm_seq": raised[0].seq, "user": "sam"})  # twice
    payload = fold.as_payload()
    assert (payload["alarms_raised"], payload["alarms_unacknowledged"]) == (129, 29)
    journal.close()
