"""What Ctrl-C and the stop signals share: a handler on the batch's own loop, and acts
taken between two scans of the control modules (``Batch.between_scans``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twin.engine.batch import Batch

__all__ = ["BetweenScans", "on_signal"]


def on_signal(signum: int, callback: Callable[..., object], *args: Any) -> bool:
    """Have the running loop call ``callback(*args)`` on ``signum``, between two of its
    callbacks; False where it cannot: no Unix signals on this loop, or not the main thread
    (the signal then keeps its default)."""
    try:
        asyncio.get_running_loop().add_signal_handler(signum, callback, *args)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


class BetweenScans:
    """Acts a signal asks for, each taken once no scan of the control modules waits for a
    device's answer: replay then finds the act where the run took it."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()  # kept alive until done

    def then(self, batch: Batch, act: Callable[[], object]) -> None:
        async def between_scans() -> None:
            await batch.between_scans()
            act()

        task = asyncio.get_running_loop().create_task(between_scans())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
