"""Gas dispenser: Alicat-style mass-flow controllers mixing the bag's inlet gas.

Each controller follows its setpoint as a first-order lag (tau ~7 ms, laminar
dP type, TWIN_MODELS.md), integrated analytically so any step size is exact.
Readings carry seeded noise, a zero band and display resolution, and clamp at
1.31 x full scale as the real instruments do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twin.equipment import Gas
from twin.sim.noise import Sensor, quantize, sensor_rng
from twin.sim.params import GasParams, MfcSpec

__all__ = ["GasDispenserModel", "MassFlowController", "MfcReading"]

_GASES = tuple(Gas)  # iterating the enum class itself is slow, and the outlet is built every step


@dataclass(frozen=True)
class MfcReading:
    """One poll of a controller (the fields of an Alicat data frame)."""

    pressure_psia: float
    temperature_c: float
    volumetric_flow: float  # at line conditions (ccm)
    mass_flow: float  # at standard conditions, 25 °C / 14.696 psia (sccm)
    setpoint: float  # sccm


class MassFlowController:
    """One mass-flow controller; the device server writes ``setpoint_sccm`` and ``gas``."""

    def __init__(self, spec: MfcSpec, params: GasParams | None = None, *, seed: int = 0) -> None:
        self.params = params or GasParams()
        self.unit_id: str = spec.unit_id
        self.gas: Gas = spec.gas
        self.full_scale_sccm: float = spec.full_scale_sccm
        self.setpoint_sccm: float = 0.0
        self.flow_sccm: float = 0.0  # true mass flow
        self.supply_available = True  # fault: False when the cylinder or house line is empty
        self.starved_s = 0.0  # how long a setpoint has seen no flow (valve thermal management)
        name = f"gas/{spec.unit_id}"
        p = self.params
        self._flow_rng = sensor_rng(seed, name + "/flow")
        self._pressure = Sensor(seed, name + "/pressure", p.pressure_sensor)
        self._temperature = Sensor(seed, name + "/temperature", p.temperature_sensor)

    def advance(self, dt_s: float) -> None:
        """Follow the setpoint for ``dt_s`` seconds: exact first-order response."""
        if dt_s <= 0.0:
            return
        p = self.params
        if self.supply_available:  # min(top, max(0.0, setpoint)), as conditionals (hot path)
            top = p.over_range * self.full_scale_sccm
            target = self.setpoint_sccm
            target = target if target > 0.0 else 0.0
            target = target if target < top else top
        else:
            target = 0.0
        flow = self.flow_sccm
        if flow != target:  # settled (the usual case) it stays exactly on target: no exp
            self.flow_sccm = target + (flow - target) * math.exp(-dt_s / p.tau_s)
        band = p.zero_band_fs * self.full_scale_sccm
        if self.setpoint_sccm > band and self.flow_sccm < band:
            self.starved_s += dt_s
        else:
            self.starved_s = 0.0

    @property
    def valve_thermal_management(self) -> bool:
        """VTM: the valve has been driven open with no flow for a while (Alicat BC manual)."""
        return self.starved_s >= self.params.vtm_after_s

    def observe(self) -> MfcReading:
        """What the controller reports now."""
        pressure, temperature, volumetric, mass = self.sample()
        setpoint = quantize(self.setpoint_sccm, self.params.flow_resolution_sccm)
        # Positional: a frozen dataclass takes keywords at several times the cost.
        return MfcReading(pressure, temperature, volumetric, mass, setpoint)

    def sample(self) -> tuple[float, float, float, float]:
        """The measured values of :meth:`observe` (pressure, temperature, volumetric and mass
        flow), as a plain tuple: the device server builds a frame from them every poll."""
        p, fs = self.params, self.full_scale_sccm
        mass = self.flow_sccm + self._flow_rng.gauss(0.0, p.flow_noise_fs * fs)
        mass = min(p.over_range * fs, max(0.0, mass))
        if mass < p.zero_band_fs * fs:
            mass = 0.0
        pressure_true = p.line_pressure_psia + p.back_pressure_psi_at_fs * self.flow_sccm / fs
        pressure = self._pressure.read(pressure_true)
        temperature = self._temperature.read(p.gas_temperature_c)
        volumetric = (
            mass
            * (temperature + 273.15)
            / (p.standard_temperature_c + 273.15)
            * p.standard_pressure_psia
            / pressure
        )
        res = p.flow_resolution_sccm
        return pressure, temperature, quantize(volumetric, res), quantize(mass, res)


class GasDispenserModel:
    """The set of controllers feeding the bag; ``outlet_sccm`` is the bag's inlet."""

    def __init__(self, params: GasParams | None = None, *, seed: int = 0) -> None:
        self.params = params or GasParams()
        self.mfcs: dict[str, MassFlowController] = {
            spec.unit_id: MassFlowController(spec, self.params, seed=seed)
            for spec in self.params.mfcs
        }

    def advance(self, dt_s: float) -> None:
        """Advance every controller by ``dt_s`` seconds."""
        for mfc in self.mfcs.values():
            mfc.advance(dt_s)

    def outlet_sccm(self) -> dict[Gas, float]:
        """True mass flow per gas leaving the dispenser (sums controllers on the same gas)."""
        out = dict.fromkeys(_GASES, 0.0)
        for mfc in self.mfcs.values():
            out[mfc.gas] += mfc.flow_sccm
        return out

    def mfc_for(self, gas: Gas) -> MassFlowController:
        """The first controller currently set to ``gas`` (for drivers of the reference run)."""
        for mfc in self.mfcs.values():
            if mfc.gas == gas:
                return mfc
        raise KeyError(f"no mass-flow controller is set to {gas.name}")
