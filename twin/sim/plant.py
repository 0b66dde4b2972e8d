"""One simulated bench: the gas dispenser feeds the bag, the bag feeds the electroporator.

Time moves only through :meth:`Plant.advance_to`, in fixed internal steps laid on
a grid of multiples of the step from batch time 0, so advancing to the same time
in different chunk sizes takes the same steps (chunks that do not fall on the
grid add one short step each, which the analytic fast parts make harmless).

Like the instrument it stands for, the bag updates its process values once a
second (``PlantParams.update_s``): a device asked at ``t`` answers from the bag's
state at the last whole update before ``t``, and the time in between is
integrated with the next update, so nothing is lost; five requests within the
same second (one scan of every device) cost one model step, not five. The gas
lines follow ``t`` exactly: a mass flow controller settles in milliseconds.
"""

from __future__ import annotations

import math

from twin.sim.bioreactor import BioreactorModel
from twin.sim.donor import DonorProfile
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
        donor: DonorProfile | None = None,
    ) -> None:
        self.params = params or PlantParams()
        self.seed = seed
        self.donor = donor
        self.t: float = 0.0
        self.gas = GasDispenserModel(self.params.gas, seed=seed)
        self.bioreactor = BioreactorModel(
            self.params.bioreactor, seed=seed, inoculum=inoculum, donor=donor
        )
        self.electroporator = ElectroporatorModel(
            self.params.electroporator, bag=self.bioreactor, seed=seed
        )
        self._step = self.params.bioreactor.step_s
        self._update = self.params.update_s
        self._bag_t = 0.0

    def advance_to(self, t: float) -> None:
        """Integrate the true state up to batch time t (s). No-op if t <= current time.

        The gas lines follow t exactly (a mass flow controller answers within
        milliseconds); the bag is integrated to its last update at or before t.
        """
        if not t > self.t:  # also refuses NaN
            return
        if math.isinf(t):
            raise ValueError("cannot advance to infinite time")
        u = self._update
        t_bag = math.floor(t / u + 1e-9) * u
        h = self._step
        gas, bag = self.gas, self.bioreactor
        now, gas_t = self._bag_t, self.t
        floor = math.floor
        while now < t_bag:
            grid_next = (floor(now / h + 1e-9) + 1.0) * h
            nxt = grid_next if grid_next < t_bag else t_bag  # min(grid_next, t_bag)
            if nxt > gas_t:
                gas.advance(nxt - gas_t)
                gas_t = nxt
            bag.set_inlet(gas.outlet_sccm())
            bag.advance(nxt - now)
            now = nxt
        if t > gas_t:
            gas.advance(t - gas_t)
        self._bag_t = now
        self.t = t
