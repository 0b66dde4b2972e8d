"""One replayed batch: the recorded recipe and bench, the engine, recorded answers and inputs.

Replay and resume both start here. The engine is built exactly as
:mod:`twin.runner` builds it, but its equipment answers from the record
(:mod:`twin.replay.devices`), its journal compares (:mod:`twin.replay.journal`),
and what came from outside the engine (operator commands, identity scans) is
handed to it again at the point of the record where it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from twin.bench import LoadedBench
from twin.clock import Clock, VirtualTimeLoop
from twin.engine.batch import Batch
from twin.engine.lots import LotScan, NoScanWanted
from twin.errors import CommandRefused
from twin.journal import Event
from twin.recipe import LoadedRecipe
from twin.replay.devices import Feed, is_interruption, replay_equipment
from twin.replay.interruption import hold_after_interruption
from twin.replay.journal import ReplayJournal
from twin.replay.recording import Recording

__all__ = ["ReplaySession", "is_input"]

#: Grace after an event's recorded batch time before its absence counts as a divergence.
LATE_S = 1.0


def is_input(event: Event) -> bool:
    """True for what reached the engine from outside: an operator's command or scan."""
    if event.kind in ("identity_confirmation", "lot_scan"):
        return True
    if event.kind != "command":
        return False
    who = str(event.data.get("operator", ""))
    return who != "engine" and not who.startswith("alarm:")


@dataclass
class ReplaySession:
    """The engine re-run against a record, until the record is reproduced or it diverges."""

    recording: Recording
    recipe: LoadedRecipe
    bench: LoadedBench
    command_path: Path
    beyond_the_record: bool = False
    clock: Clock = field(init=False)
    journal: ReplayJournal = field(init=False)
    feed: Feed = field(init=False)
    batch: Batch = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.clock = Clock(started_at=self._clock_zero(), zone=self.bench.zone)
        decisions = self.recording.decisions
        self.journal = ReplayJournal(
            decisions,
            self.clock.now,
            path=self.command_path,
            beyond_the_record=self.beyond_the_record,
            catch_up=self._catch_up if self.bench.model.clock == "wall" else None,
        )
        self.feed = Feed(
            decisions,
            set(self.bench.model.equipment),
            self.clock,
            cursor=lambda: self.journal.cursor,
            ends_at_interruption=lambda task: self.batch.ends_at_interruption(task),
            inputs=is_input,
            reached=self.journal.reached,
        )
        self.kinds = {name: self.bench.spec(name).equipment_type for name in self.bench.configs}
        header = self.recording.header
        self.batch = Batch(
            self.recipe,
            replay_equipment(self.bench, self.feed),
            self.journal,
            self.clock,
            batch_id=header["batch_id"],
            operator=header["operator"],
            patient_id=header.get("patient_id"),
            bag_id=header.get("bag_id"),
            command_path=self.command_path,
            lots=header.get("lots") or None,
            # recorded before a scan needed an expiry: judged as it was
            lot_expiry_required=header.get("lot_expiry_required") is True,
        )

    def _clock_zero(self) -> datetime:
        """The recorded batch's date and time at batch time 0 (its dates, e.g. a lot's expiry,
        are judged as they were); older records give it from their first event."""
        started = self.recording.started
        zero = self.recording.header.get("clock_zero")
        if isinstance(zero, str):
            return datetime.fromisoformat(zero)
        return datetime.fromisoformat(started.wall_time) - timedelta(seconds=started.batch_time)

    def _catch_up(self, batch_time: float) -> None:
        """The replay's clock on to ``batch_time`` (a wall-clock bench's record)."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        loop.advance_to(self.clock.origin + batch_time)

    async def start(self) -> asyncio.Task[object]:
        """Write the recorded header, start the inputs, the watchdog and the engine."""
        started = self.recording.started
        await self.clock.sleep_until(started.batch_time)
        self.journal.append(started.kind, started.source, started.data)
        recorded = self.journal.recorded
        if len(recorded) > 1:
            # The engine began at its first event: on a wall-clock bench the runner's reads
            # of the devices' identities and the starting person's signature took real time
            # after batch_started (on the twin's virtual clock, none).
            await self.clock.sleep_until(recorded[1].batch_time)
        self._tasks = [
            asyncio.create_task(self._inputs(), name="replay inputs"),
            asyncio.create_task(self._watchdog(), name="replay watchdog"),
        ]
        return asyncio.create_task(self.batch.run(), name="replayed batch")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a broken input is the replay's failure, said plainly
                self.journal.diverge(None, f"{task.get_name()} failed: {exc!r}")

    async def _inputs(self) -> None:
        """Hand each recorded command and scan to the engine where the record has it."""
        for index, event in enumerate(self.journal.recorded):
            if not is_input(event) and not is_interruption(event):
                continue
            await self.journal.reached(index)
            d = event.data
            if is_interruption(event):
                loop = asyncio.get_running_loop()
                assert isinstance(loop, VirtualTimeLoop)
                await loop.settle()  # as far as the resume's engine got before its gap
                loop.advance_to(self.clock.origin + event.batch_time)
                ends = self.feed.next_boundary(index).index
                await hold_after_interruption(
                    self.batch,
                    d,
                    self.kinds,
                    self.feed,
                    self.feed.boundary(index),
                    recorded_on=lambda ends=ends: self.journal.cursor < ends,
                )
                continue
            await self.clock.sleep_until(event.batch_time)
            if event.kind == "command":
                with contextlib.suppress(CommandRefused, ValueError):
                    self.batch.command(
                        d["command"],
                        who=d["operator"],
                        why=d.get("reason", ""),
                        level=d.get("level", "procedure"),
                        via=d.get("via"),
                    )
            elif event.kind == "lot_scan":
                with contextlib.suppress(NoScanWanted):  # the engine waits elsewhere: diverged
                    self.batch.present_lot(
                        LotScan(
                            d["material"],
                            d["lot"],
                            date.fromisoformat(d["expiry"]) if d.get("expiry") else None,
                            d.get("gtin"),
                        ),
                        who=d["operator"],
                        why=d.get("reason", ""),
                    )
            else:
                self.batch.present_identity(
                    d["patient_id"], d["bag_id"], who=d["operator"], why=d.get("reason", "")
                )

    async def _watchdog(self) -> None:
        """An engine that waits where the record goes on has diverged: say so, do not hang."""
        journal = self.journal
        while not journal.done.done():
            index = journal.cursor
            due = journal.recorded[index].batch_time + LATE_S
            await self.clock.sleep_until(due)
            if journal.cursor == index and not journal.done.done():
                journal.diverge(
                    journal.recorded[index],
                    "the replayed engine did not produce this event (it waits for something else)",
                )
