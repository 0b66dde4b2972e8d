"""Seeded sensor noise: one random stream per sensor, so a run is reproducible from its seed.

Each sensor owns a ``random.Random`` seeded from the plant seed and the sensor's
name (string seeds hash with SHA-512, stable across processes), so reading one
sensor more often never shifts the noise another sensor reports.
"""

from __future__ import annotations

import random
from math import cos as _cos
from math import log as _log
from math import sin as _sin
from math import sqrt as _sqrt
from math import tau as _TWO_PI

from twin.sim.params import SensorSpec

__all__ = ["Sensor", "quantize", "sensor_rng"]


def sensor_rng(seed: int, name: str) -> random.Random:
    """The random stream of one named sensor for one plant seed."""
    return random.Random(f"poc-twin/{seed}/{name}")


_STEPS_PER_UNIT = {float(f"1e-{d}"): 10**d for d in range(1, 11)}
"""Decimal resolutions (0.1 ... 1e-10) and how many of their steps make one unit."""

_EXACT_UNITS = 100_000
"""Below this magnitude ``steps / 10**d`` is exactly ``round(steps * 10**-d, 10)``."""


def quantize(value: float, resolution: float) -> float:
    """Round to the instrument's display resolution (and drop float dust).

    ``round(x, 10)`` goes through a decimal string (~0.4 us, every reading of every
    sensor). For a decimal resolution and a modest value one division gives the very
    same float: both are the double nearest ``steps / 10**d`` (the product is within
    2.3e-16 relative of it, far inside the 5e-11 rounding half-width below 1e5).
    """
    if resolution <= 0.0:
        return value
    steps = round(value / resolution)
    per_unit = _STEPS_PER_UNIT.get(resolution)
    if per_unit is not None and -_EXACT_UNITS * per_unit < steps < _EXACT_UNITS * per_unit:
        return steps / per_unit
    return round(steps * resolution, 10)


class Sensor:
    """A reading of a true value with gaussian noise and display resolution."""

    def __init__(self, seed: int, name: str, spec: SensorSpec) -> None:
        self.name = name
        self.spec = spec
        self._rng = sensor_rng(seed, name)

    def read(self, true_value: float) -> float:
        """What the instrument shows for ``true_value`` now.

        ``quantize(true_value + rng.gauss(0.0, sd), resolution)`` with both calls written
        out (~25,000 readings a batch day): the same operations on the same stream, so the
        same floats (Python's Box-Muller gauss, its second value kept in ``gauss_next``).
        """
        rng, spec = self._rng, self.spec
        z = rng.gauss_next
        rng.gauss_next = None
        if z is None:
            x2pi = rng.random() * _TWO_PI
            g2rad = _sqrt(-2.0 * _log(1.0 - rng.random()))
            z = _cos(x2pi) * g2rad
            rng.gauss_next = _sin(x2pi) * g2rad
        noisy = true_value + (0.0 + z * spec.noise_sd)
        resolution = spec.resolution
        per_unit = _STEPS_PER_UNIT.get(resolution)
        if per_unit is None:
            return quantize(noisy, resolution)
        steps = round(noisy / resolution)
        if -_EXACT_UNITS * per_unit < steps < _EXACT_UNITS * per_unit:
            return steps / per_unit
        return round(steps * resolution, 10)
