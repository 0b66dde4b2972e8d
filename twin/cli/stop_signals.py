"""SIGTERM or SIGHUP at a running batch: hold it, then let the process stop.

A service manager stopping the batch PC's service, ``kill PID``, or the terminal window
closing asks the process to stop. Dying there (Python's default) leaves the batch mid-step
with nothing in its record and its equipment as it happened to be. Instead the batch is
held (a journalled ``hold`` command by ``system``, naming the signal: an input from
outside the engine, replayed as one, as an operator's), its equipment
driven as the hold declares, and once it is Held the run ends, leaving it Held for
``poc-twin resume`` (exit 4, as ``resume`` leaves a batch Held). A batch stopping or
aborting already finishes first; a second signal stops the process at once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from twin.cli.signals import BetweenScans, on_signal
from twin.engine.states import Command, ProceduralState
from twin.errors import CommandRefused

if TYPE_CHECKING:
    from twin.engine.batch import Batch
    from twin.journal import Event

__all__ = ["StopSignals"]

#: The signals that ask a batch process to stop, and what the record calls each.
SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP (the terminal closed)"}


class StopSignals:
    """SIGTERM / SIGHUP for one ``poc-twin run``: hold the batch, end the run once Held.

    ``attach`` goes in run_batch's ``on_batch``; the object is a journal subscriber (it
    hears the batch reach Held). ``stopped_by`` names the signal once one came.
    """

    def __init__(self, journal_path: Path, console: Console) -> None:
        self.journal_path = journal_path
        self.console = console
        self.batch: Batch | None = None
        #: The signal that asked the process to stop (None: none came).
        self.stopped_by: str | None = None
        self._run: asyncio.Task[object] | None = None
        self._acting = BetweenScans()

    def attach(self, batch: Batch) -> None:
        """From now until the batch ends, SIGTERM and SIGHUP hold it and end the run."""
        self.batch = batch
        self._run = asyncio.current_task()
        for signum in SIGNALS:
            on_signal(signum, self.received, signum)

    def received(self, signum: int) -> None:
        """A signal: acted on between two scans of the control modules; a second one ends
        the run at once."""
        if self.stopped_by is not None or self.batch is None:
            self.act(signum)
        else:
            self._acting.then(self.batch, lambda: self.act(signum))

    def act(self, signum: int) -> None:
        """Hold the batch (once Held, the run ends); a second signal ends it at once."""
        batch = self.batch
        if batch is None or batch.state.is_final:
            return
        name = SIGNALS[signal.Signals(signum)]
        if self.stopped_by is not None:
            self.console.print(f"{name} again: stopping now, the batch {batch.state.label}")
            self._end_run()
            return
        self.stopped_by = name
        state = batch.state
        if state is ProceduralState.HELD:
            self._say(name, "it is Held")
            self._end_run()
            return
        try:
            batch.command(
                Command.HOLD,
                who="system",
                why=f"{name}: the batch process was asked to stop; poc-twin resume brings "
                "the batch back",
                via="signal",
            )
        except CommandRefused:  # stopping, aborting or holding: it gets there by itself
            self._say(name, f"it is {state.label}; the process stops once it is Held or ended")
            return
        self._say(name, "holding it; the process stops once it is Held")

    def __call__(self, event: Event) -> None:
        """Journal subscriber: the batch Held after a stop signal ends the run."""
        if (
            self.stopped_by is not None
            and event.kind == "transition"
            and event.source.startswith("procedure:")
            and event.data.get("to") == "Held"
        ):
            asyncio.get_running_loop().call_soon(self._end_run)

    def _say(self, name: str, what: str) -> None:
        self.console.print(
            f"{name}: {what}; poc-twin resume {self.journal_path} brings it back",
            highlight=False,
            markup=False,
        )

    def _end_run(self) -> None:
        if self._run is not None and not self._run.done():
            self._run.cancel()
