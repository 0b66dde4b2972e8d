"""The twin's plant outlives the batch process, as a real bag outlives its controller.

A real bench's cells, bag and controllers carry on when the batch PC dies; an
in-process twin would vanish with it. So the twin keeps its plant in a file
beside the journal (``<journal>.twin``), written every ``KEEP_EVERY_S`` of batch
time and when the twin stops; ``poc-twin resume`` starts the twin from it and the
plant integrates the outage under its last actuator settings. The file is the
twin's own business (the engine never reads it): a pickle of the plant, written
to a temporary file and renamed, so a kill leaves either the old or the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
from pathlib import Path

from twin.clock import Clock
from twin.errors import PocTwinError
from twin.sim import Plant

__all__ = ["KEEP_EVERY_S", "PlantKeeper", "restore_plant"]

_log = logging.getLogger(__name__)

#: Batch time between two pictures of the plant (a picture costs a few ms: RNG states).
KEEP_EVERY_S = 7200.0


def restore_plant(path: Path, seed: int) -> Plant:
    """The plant as last kept; refuses a file of another bench's seed or not a plant."""
    try:
        with path.open("rb") as f:
            plant = pickle.load(f)  # our own file, beside the journal
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise PocTwinError(f"{path}: the twin's kept plant cannot be read ({exc})") from None
    if not isinstance(plant, Plant) or plant.seed != seed:
        raise PocTwinError(f"{path}: not this bench's twin plant (seed {seed})")
    return plant


class PlantKeeper:
    """Writes the plant to ``path`` every ``every_s`` of batch time and once more at stop."""

    def __init__(self, plant: Plant, path: Path, clock: Clock, every_s: float = KEEP_EVERY_S):
        self.plant = plant
        self.path = path
        self.clock = clock
        self.every_s = every_s
        self._task: asyncio.Task[None] | None = None
        #: Why the last picture could not be written (None once one is written again).
        self.error: OSError | None = None

    def keep(self) -> None:
        """Write a picture of the plant; on a full disk keep the last one and say so once.

        The plant goes on either way (a real bag does not need its controller's disk), and
        the batch's journal, on the same disk, is what stops the batch if writing fails."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                pickle.dump(self.plant, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if self.error is None:
                stays = "the last picture stays" if self.path.exists() else "none is kept yet"
                _log.warning(
                    "%s: the twin's plant cannot be kept (%s); %s",
                    self.path,
                    exc.strerror or exc,
                    stays,
                )
            self.error = exc
        else:
            self.error = None

    async def _run(self) -> None:
        due = self.clock.now()
        while True:
            self.keep()
            due += self.every_s
            await self.clock.sleep_until(due)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="twin keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.keep()
