"""``poc-twin replay``: re-run a recorded batch against its recorded device I/O and compare.

The engine of today, given the recipe and the bench the journal recorded, the
device answers it recorded and the operator inputs it recorded, must take the
same decisions, event for event and at the same batch times. After a change to
the recipe (``--recipe``) or to the engine, the first event that differs is
named. A record that ends without ``batch_ended`` (a process that died) is
reproduced up to its last event.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from twin.clock import run_batch_loop
from twin.replay.journal import Divergence
from twin.replay.recording import Recording, load_recording
from twin.replay.session import ReplaySession

__all__ = ["ReplayResult", "replay", "replay_async"]


@dataclass(frozen=True)
class ReplayResult:
    """How a replay compared with its record."""

    journal: Path
    recorded: int
    reproduced: int
    record_ended: bool
    divergence: Divergence | None
    recipe_sha256: str
    recorded_sha256: str

    @property
    def identical(self) -> bool:
        return self.divergence is None and self.reproduced == self.recorded


async def _cancel(task: asyncio.Task[object] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def replay_async(recording: Recording, recipe: Path | None = None) -> ReplayResult:
    """Replay on the running (virtual-time) loop."""
    with recording.recipe(recipe) as loaded, recording.bench() as bench:
        session = ReplaySession(
            recording, loaded, bench, command_path=Path(f"{recording.path}.replay")
        )
        journal = session.journal
        run = await session.start()
        await asyncio.wait({run, journal.done}, return_when=asyncio.FIRST_COMPLETED)
        if run.done() and not journal.done.done():
            exc = run.exception()
            if exc is not None:
                journal.diverge(None, f"the replayed engine failed: {exc}")
            else:
                final = run.result()
                journal.append("batch_ended", "batch", {"state": getattr(final, "label", final)})
                if not journal.exhausted:
                    journal.diverge(None, "the replayed batch ended here; the record goes on")
        await _cancel(run)
        await _cancel(session.batch.phase_task)
        await session.stop()
        return ReplayResult(
            journal=recording.path,
            recorded=len(journal.recorded),
            reproduced=journal.cursor,
            record_ended=recording.ended,
            divergence=journal.divergence,
            recipe_sha256=loaded.sha256,
            recorded_sha256=recording.header["recipe"]["sha256"],
        )


def replay(path: Path | str, recipe: Path | None = None) -> ReplayResult:
    """Replay the batch recorded in ``path`` (always in virtual time: the record sets the pace)."""
    recording = load_recording(path)
    return run_batch_loop(lambda: replay_async(recording, recipe), virtual=True, pace=None)
