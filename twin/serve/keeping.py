"""The twin's plant outlives the batch process, as a real bag outlives its controller.

A real bench's cells, bag and controllers carry on when the batch PC dies; an
in-process twin would vanish with it. So the twin keeps its plant in a file
beside the journal (``<journal>.twin``), written after every request that changed
the bag (a setpoint taken, a dose or harvest ended, a pulse fired: the devices say so,
``on_request``), after a read once ``KEEP_WALL_S`` of wall time have passed (a held
batch follows the wall), every ``KEEP_EVERY_S`` of batch time and when the twin
stops; ``poc-twin resume`` starts the twin from it and the
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
from typing import Any

from twin.clock import Clock, wall_monotonic
from twin.errors import PocTwinError
from twin.sim import Plant

__all__ = ["KEEP_EVERY_S", "KEEP_WALL_S", "PlantKeeper", "restore_plant"]

_log = logging.getLogger(__name__)

#: Batch time between two pictures of the plant (a picture costs about 1 ms: RNG states).
KEEP_EVERY_S = 7200.0
#: Wall time after which a device's next read pictures the plant again: a batch waiting
#: on a person follows the wall, where 2 h of batch time are 2 h of a held culture a kill
#: would rewind; fast-forwarding, it is a few pictures a batch.
KEEP_WALL_S = 5.0


#: What a kept plant is made of besides the twin's own classes (``twin.sim``).
_KEPT_OUTSIDE_SIM = {("random", "Random"), ("twin.equipment", "Gas")}


class _PlantUnpickler(pickle.Unpickler):
    """Unpickles a plant and nothing else: the file sits beside the journal, where anyone
    who can write the runs folder could put a pickle that runs code as it loads (a
    ``__reduce__`` naming ``os.system``). Only classes of the twin's models (and the few
    they hold) are found; any other name in the file refuses it before anything runs."""

    def find_class(self, module: str, name: str) -> Any:
        ours = module == "twin.sim" or module.startswith("twin.sim.")
        if "." in name or not (ours or (module, name) in _KEPT_OUTSIDE_SIM):
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a twin plant")
        found = super().find_class(module, name)
        if not isinstance(found, type) or found.__module__ != module:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a twin plant")
        return found


def restore_plant(path: Path, seed: int) -> Plant:
    """The plant as last kept; refuses a file of another bench's seed or not a plant.

    Whatever is wrong with the file (cut short, garbage, written by another version, a
    pickle that is not a plant) is one PocTwinError naming it: never a traceback, and
    nothing outside the twin's model classes is ever called to read it."""
    try:
        with path.open("rb") as f:
            plant = _PlantUnpickler(f).load()
    except Exception as exc:  # a damaged or foreign file can raise anything while loading
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
        self._kept_wall = wall_monotonic()
        self._soon = False

    def heard(self, changed: bool) -> None:
        """A device served a request (``changed``: it changed the bag, e.g. a setpoint taken,
        a dose ended, a pulse fired): picture the plant once this loop turn's requests are
        done, or after a read once the last picture is ``KEEP_WALL_S`` of wall time old.

        So a killed batch's resume starts from the bag as its last act left it (a dose in,
        the pulses fired), not from up to 2 h of batch time before: about 70 pictures of
        the reference batch's ~16 bioreactor writes, its electroporation and ended doses."""
        if changed:
            if not self._soon:
                self._soon = True
                asyncio.get_running_loop().call_soon(self._keep_soon)
        elif wall_monotonic() - self._kept_wall >= KEEP_WALL_S:
            self.keep()

    def _keep_soon(self) -> None:
        self._soon = False
        self.keep()

    def keep(self) -> None:
        """Write a picture of the plant; on a full disk keep the last one and say so once.

        The plant goes on either way (a real bag does not need its controller's disk), and
        the batch's journal, on the same disk, is what stops the batch if writing fails."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._kept_wall = wall_monotonic()
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
