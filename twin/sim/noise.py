"""Seeded sensor noise: one random stream per sensor, so a run is reproducible from its seed.

Each sensor owns a ``random.Random`` seeded from the plant seed and the sensor's
name (string seeds hash with SHA-512, stable across processes), so reading one
sensor more often never shifts the noise another sensor reports.
"""

from __future__ import annotations

import random

from twin.sim.params import SensorSpec

__all__ = ["Sensor", "quantize", "sensor_rng"]


def sensor_rng(seed: int, name: str) -> random.Random:
    """The random stream of one named sensor for one plant seed."""
    return random.Random(f"poc-twin/{seed}/{name}")


def quantize(value: float, resolution: float) -> float:
    """Round to the instrument's display resolution (and drop float dust)."""
    if resolution <= 0.0:
        return value
    return round(round(value / resolution) * resolution, 10)


class Sensor:
    """A reading of a true value with gaussian noise and display resolution."""

    def __init__(self, seed: int, name: str, spec: SensorSpec) -> None:
        self.name = name
        self.spec = spec
        self._rng = sensor_rng(seed, name)

    def read(self, true_value: float) -> float:
        """What the instrument shows for ``true_value`` now."""
        noisy = true_value + self._rng.gauss(0.0, self.spec.noise_sd)
        return quantize(noisy, self.spec.resolution)
