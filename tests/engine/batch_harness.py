"""A batch of a shipped recipe running on the sim bench, for engine tests (virtual time)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from twin.access.users import ENV_USERS, UserStore
from twin.bench import OpenBench, load_bench, open_bench
from twin.clock import Clock
from twin.engine.batch import Batch
from twin.engine.states import ProceduralState
from twin.journal import Event, Journal
from twin.recipe import load_recipe
from twin.sim.bedside import BedsideOperator

ROOT = Path(__file__).resolve().parents[2]
S = ProceduralState
HOUR = 3600.0


def draft_recipe(recipe_id: str) -> str:
    """The ``recipe:`` block of a draft commissioning recipe (no patient material): the
    start of every recipe an engine test writes; its equipment and procedure follow."""
    return (
        "recipe:\n"
        f"  id: {recipe_id}\n"
        "  product: Commissioning test (no patient material)\n"
        "  version: 1.0.0\n"
        "  status: draft\n"
        "  purpose: commissioning\n"
        "  author: Process Development\n"
    )


@dataclass
class Running:
    batch: Batch
    bench: OpenBench
    journal: Journal
    clock: Clock
    events: list[Event]

    async def until(self, predicate: Callable[[Event], bool]) -> Event:
        """Wait (in batch time) for the first event that matches."""
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            await self.clock.sleep(1.0)

    async def until_phase_running(self, name: str) -> Event:
        """Wait until the phase whose path contains ``name`` (e.g. "2:culture") runs."""
        return await self.until(
            lambda e: e.kind == "transition" and name in e.source and e.data["to"] == "Running"
        )

    async def until_state(self, state: S) -> None:
        while self.batch.state is not state:
            await self.clock.sleep(1.0)

    def kinds(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def procedure_states(self) -> list[str]:
        return [
            e.data["to"]
            for e in self.events
            if e.kind == "transition" and e.source.startswith("procedure:")
        ]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    """Start a batch of a shipped recipe on the sim bench; yields a factory taking the recipe
    (``scan_after_s``: the twin's simulated person scans identity and lots when asked)."""
    started: list[tuple[asyncio.Task[Any], Any]] = []

    async def start(
        recipe: str = "smoke.yaml",
        text: str | None = None,
        bench_text: str | None = None,
        scan_after_s: float | None = None,
        **batch_args: Any,
    ) -> Running:
        path = ROOT / "recipes" / recipe
        if text is not None:
            path = tmp_path / recipe
            path.write_text(text)
        loaded = load_recipe(path)
        bench_path = ROOT / "benches" / "sim.yaml"
        if bench_text is not None:
            bench_path = tmp_path / "bench.yaml"
            bench_path.write_text(bench_text)
        bench = load_bench(bench_path)
        clock = Clock()
        journal = Journal(tmp_path / f"{len(started)}.sqlite", clock.now)
        events: list[Event] = []
        journal.subscribe(events.append)
        ctx = open_bench(bench, clock)
        opened = await ctx.__aenter__()
        users = UserStore.open(Path(os.environ[ENV_USERS])) if ENV_USERS in os.environ else None
        batch = Batch(
            loaded,
            opened.equipment,
            journal,
            clock,
            batch_id="B1",
            operator="alice",
            users=users,
            **batch_args,
        )
        if scan_after_s is not None:  # the twin's person at the bag scans what is asked
            bedside = BedsideOperator(clock, scan_after_s)
            journal.subscribe(bedside.hear)
            bedside.attend(batch)
        task = asyncio.create_task(batch.run())
        started.append((task, ctx))
        return Running(batch, opened, journal, clock, events)

    yield start
    for task, ctx in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctx.__aexit__(None, None, None)


async def finished(run: Running) -> S:
    """Wait for the batch to end (at most 30 batch days)."""
    async with run.clock.timeout(30 * 86400):
        while not run.batch.state.is_final:
            await run.clock.sleep(60.0)
    return run.batch.state
