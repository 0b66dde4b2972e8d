"""One simulated bench: the gas dispenser feeds the bag, the bag feeds the electroporator.

Time moves only through :meth:`Plant.advance_to`, in fixed internal steps laid on
a grid of multiples of the step from batch time 0, so advancing to the same time
in different chunk sizes takes the same steps (chunks that do not fall on the
grid add one short step each, which the analytic fast parts make harmless).
"""

from __future__ import annotations

import math

from twin.sim.bioreactor import BioreactorModel
from twin.sim.electroporator import ElectroporatorModel
from twin.sim.gas import GasDispenserModel
from twin.sim.params import PlantParams
from twin.sim.population import Inoculum

__all__ = ["Plant"]


class Plant:
    """The coupled models of one bench on one batch clock (seconds since batch start)."""

    def __init__(
        self,
        params: PlantParams | None = None,
        *,
        seed: int = 0,
        inoculum: Inoculum | None = None,
    ) -> None:
        self.params = params or PlantParams()
        self.seed = seed
        self.t: float = 0.0
        self.gas = GasDispenserModel(self.params.gas, seed=seed)
        self.bioreactor = BioreactorModel(self.params.bioreactor, seed=seed, inoculum=inoculum)
        self.electroporator = ElectroporatorModel(
            self.params.electroporator, bag=self.bioreactor, seed=seed
        )
        self._step = self.params.bioreactor.step_s

    def advance_to(self, t: float) -> None:
        """Integrate the true state up to batch time t (s). No-op if t <= current time."""
        if not t > self.t:  # also refuses NaN
            return
        if math.isinf(t):
            raise ValueError("cannot advance to infinite time")
        h = self._step
        gas, bag = self.gas, self.bioreactor
        now = self.t
        floor = math.floor
        while now < t:
            grid_next = (floor(now / h + 1e-9) + 1.0) * h
            nxt = grid_next if grid_next < t else t  # min(grid_next, t)
            dt = nxt - now
            gas.advance(dt)
            bag.set_inlet(gas.outlet_sccm())
            bag.advance(dt)
            now = nxt
        self.t = t
