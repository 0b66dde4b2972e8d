"""What a batch's journal says when no process serves its commands (CLI.md, ``command``).

A batch listens for commands only while its process runs. When nothing answers, the
journal, the only truth, tells an operator why: the batch has ended (no command can change
it), its process died (``poc-twin resume`` brings it back), or it has not begun yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twin.engine.states import ProceduralState
from twin.journal import read_events

__all__ = ["RecordedBatch", "read_recorded", "unserved"]

#: Labels of the states a batch ends in (Complete, Stopped, Aborted).
FINAL = frozenset(s.label for s in ProceduralState if s.is_final)


@dataclass(frozen=True)
class RecordedBatch:
    """A batch as its journal last recorded it."""

    batch_id: str | None  # None: no batch_started event yet
    state: str  # the procedure's last state; Idle before its first transition
    ended: bool  # in a final state (its process may have died before closing the record)
    closed: bool = False  # ``batch_ended`` recorded: nothing more will be written


def read_recorded(path: Path) -> RecordedBatch:
    """Read ``path``'s batch id and final procedure state; raises JournalError if unreadable."""
    batch_id: str | None = None
    state, closed = "Idle", False
    for event in read_events(path):
        if event.kind == "batch_started":
            batch_id = str(event.data.get("batch_id", path.stem))
        elif event.kind == "transition" and event.source.startswith("procedure:"):
            state = str(event.data["to"])
        elif event.kind == "batch_ended":
            state, closed = str(event.data.get("state", state)), True
    return RecordedBatch(batch_id, state, closed or state in FINAL, closed)


def unserved(path: Path) -> str:
    """Why no batch process answered for ``path``, in one sentence from the journal.

    Each is a refusal (exit 4, the only failure CLI.md lists for ``command``): the batch has
    ended, its process died, or it has not begun (its process may still be starting, and
    the engine listens before the procedure's first transition: try again).
    """
    from twin.engine.inbox import address_held

    recorded = read_recorded(path)
    name = f"batch {recorded.batch_id}"
    if recorded.ended:
        return (
            f"{name} has ended {recorded.state}; no command can change it "
            "(a new batch must be started)"
        )
    if recorded.batch_id is None or recorded.state == "Idle":
        return (
            f"{path} records no batch that has begun: its process is still starting "
            "(try again in a moment) or died before the batch began"
        )
    if address_held(path):  # claimed, not yet listening: a resume re-runs the record
        return (
            f"another process holds {name} (last recorded state {recorded.state}) and does "
            "not take commands yet: it is being resumed (poc-twin resume re-runs its record "
            "first) or started; try again in a moment"
        )
    return (
        f"no process is running {name}, which has not ended (last recorded state "
        f"{recorded.state}): its process died; bring it back with "
        f"poc-twin resume {path} --operator NAME --reason TEXT"
    )
