"""What happens where a batch's process died and came back: the same steps live and on replay.

Resume performs them on live equipment; a replay of a resumed batch performs
them again where the record has the ``deviation`` event, on recorded answers,
so a resumed batch replays event for event like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from twin.engine.batch import Batch
from twin.engine.states import Command
from twin.errors import CommandRefused, JournalError
from twin.replay.devices import Boundary, Feed

__all__ = ["RE_READ", "hold_after_interruption"]

#: How each kind of device is re-read after an interruption: (journal name, method).
RE_READ = {
    "bioreactor": ("pv", "read"),
    "gas_dispenser": ("pv", "read"),
    "electroporator": ("status", "status"),
}


async def hold_after_interruption(
    batch: Batch,
    deviation: dict[str, Any],
    kinds: dict[str, str],
    feed: Feed,
    boundary: Boundary,
    open_equipment: Callable[[], Awaitable[None]] | None = None,
    recorded_on: Callable[[], bool] = lambda: True,
    signed: Callable[[], None] | None = None,
) -> None:
    """Record the interruption, re-read every device, hold, then let waiting calls go on.

    A device that fails its re-read (no answer, a reading with no number) is alarmed and
    the batch comes back Held all the same, the control modules watching for it to answer.

    Calls the phase had in flight at the interruption end as interrupted (the hold
    cancels the phase); others (a hold's safe states) go on once the boundary is passed.
    On replay, ``recorded_on`` says whether the record goes on before its next boundary: a
    resume that itself died mid-way is re-enacted only as far as it got. ``signed`` journals
    the resuming person's signature of the deviation, in the deviation's own commit.
    """
    task = asyncio.current_task()
    assert task is not None
    feed.enacting = (task, boundary)
    with batch.journal.together():  # the deviation and its signature: one commit
        batch.journal.append("deviation", "batch", deviation)
        if signed is not None:
            signed()
    if open_equipment is not None:
        await open_equipment()
    for name, device in batch.equipment.items():
        if not recorded_on():
            return  # the resume that wrote this record died here; so does its re-enactment
        what, method = RE_READ[kinds[name]]
        try:
            await batch.ctx.read(name, what, getattr(device, method))
        except JournalError:
            raise  # the record failed, not the device
        except Exception as exc:  # alarmed; the batch is held below all the same
            batch.device_failed_at_resume(name, exc)
    if not recorded_on():
        return
    try:
        batch.command(Command.HOLD, who="engine", why=deviation["hold_reason"])
    except CommandRefused:  # held when it died: the hold in force is driven again
        batch.hold_again(deviation["hold_reason"])
    feed.enacting = None
    feed.pass_boundary(boundary)
