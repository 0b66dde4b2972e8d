"""The equipment interfaces the engine drives: small async Protocols, one per kind of device.

Drivers in ``drivers/`` implement them over a wire protocol; the engine never
learns which driver, which endpoint, or whether the device is the twin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "Bioreactor",
    "BioreactorLimits",
    "BioreactorPV",
    "CellSample",
    "DeviceIdentity",
    "Electroporator",
    "ElectroporatorLimits",
    "ElectroporatorStatus",
    "Equipment",
    "Gas",
    "GasDispenser",
    "GasDispenserLimits",
    "GasDispenserPV",
    "Material",
    "PulseProgram",
    "PulseResult",
]


@dataclass(frozen=True)
class DeviceIdentity:
    """What a device says it is: the commissioning record of a bench check."""

    vendor: str
    model: str
    serial: str
    firmware: str


class Material(IntEnum):
    """What a bioreactor addition port can deliver (the code travels on the wire)."""

    MEDIUM = 1
    ACTIVATOR = 2  # CD3/CD28 reagent (TransAct-like)
    IL2 = 3
    VECTOR = 4  # lentiviral vector
    BASE = 5  # sodium bicarbonate for pH


class Gas(IntEnum):
    """Gas numbers as Alicat-style controllers number them (AG<n>)."""

    AIR = 0
    CO2 = 4
    N2 = 8
    O2 = 11


@dataclass(frozen=True)
class BioreactorLimits:
    """Setpoint limits of a bioreactor, from the bench file; refused before a batch starts."""

    temperature_c: tuple[float, float] = (4.0, 40.0)
    rocking_rpm: tuple[float, float] = (0.0, 40.0)
    perfusion_ml_per_day: tuple[float, float] = (0.0, 2000.0)
    working_volume_ml: tuple[float, float] = (50.0, 1000.0)


@dataclass(frozen=True)
class BioreactorPV:
    """Process values a bioreactor controller reports each poll."""

    temperature_c: float
    temperature_sp_c: float
    do_pct: float  # dissolved oxygen, % air saturation
    ph: float
    volume_ml: float
    rocking_rpm: float
    perfusion_ml_per_day: float
    viable_cells_per_ml: float  # in-line capacitance estimate
    heartbeat: int
    status: int  # bit field, see docs/devices/bioreactor-modbus.md


@dataclass(frozen=True)
class CellSample:
    """An in-process sample counted off line (cell counter): the figures release relies on."""

    viable_cells_per_ml: float
    viability_pct: float
    glucose_mm: float
    lactate_mm: float
    transduced_pct: float


@runtime_checkable
class Bioreactor(Protocol):
    """A rocking-bag or stirred-tank bioreactor with its own temperature loop."""

    name: str
    limits: BioreactorLimits

    async def identify(self) -> DeviceIdentity:
        """Who answers at this endpoint: checked when a bench is commissioned."""
        ...

    async def read(self) -> BioreactorPV:
        """One poll of every process value."""
        ...

    async def set_temperature(self, celsius: float) -> None:
        """New temperature setpoint for the controller's own loop."""
        ...

    async def set_rocking(self, rpm: float) -> None:
        """Rocking rate: sets mixing and oxygen transfer (kLa)."""
        ...

    async def set_perfusion(self, ml_per_day: float) -> None:
        """Fresh-medium perfusion rate (0 stops it)."""
        ...

    async def add(self, material: Material, volume_ml: float) -> None:
        """Dose a material through the addition port; returns when the pump has finished."""
        ...

    async def sample(self) -> CellSample:
        """Draw and count a sample: the in-process check."""
        ...

    async def harvest(self) -> float:
        """Drain the bag to the final-product bag; returns the harvested volume in mL."""
        ...

    async def harvested_ml(self) -> float:
        """What the last harvest drained (mL), also one a hold or abort stopped part-way."""
        ...

    async def added_ml(self) -> float:
        """What the current or last addition has pumped (mL): the pump's own total, read
        after a hold or abort stopped an addition part-way."""
        ...

    async def safe_state(self) -> None:
        """Hold safe: keep temperature, stop perfusion and additions."""
        ...


@dataclass(frozen=True)
class GasDispenserLimits:
    """Full scale per gas and the O2 cap no recipe can exceed (sccm)."""

    full_scale_sccm: dict[Gas, float] = field(
        default_factory=lambda: {Gas.AIR: 500.0, Gas.CO2: 50.0, Gas.N2: 500.0, Gas.O2: 200.0}
    )
    o2_cap_sccm: float = 100.0


@dataclass(frozen=True)
class GasDispenserPV:
    """Measured mass flow and setpoint of each gas line (sccm)."""

    mass_flow_sccm: dict[Gas, float]
    setpoint_sccm: dict[Gas, float]


@runtime_checkable
class GasDispenser(Protocol):
    """A set of mass-flow controllers mixing the bioreactor's inlet gas."""

    name: str
    limits: GasDispenserLimits

    async def identify(self) -> DeviceIdentity:
        """Who answers at this endpoint."""
        ...

    async def read(self) -> GasDispenserPV:
        """One poll of every gas line."""
        ...

    async def set_flow(self, gas: Gas, sccm: float) -> None:
        """New mass-flow setpoint for one gas line."""
        ...

    async def safe_state(self) -> None:
        """Close O2 and N2, keep air and CO2 so the culture keeps its pH."""
        ...


@dataclass(frozen=True)
class ElectroporatorLimits:
    """Hardware ranges of a square-wave electroporator."""

    voltage_v: tuple[float, float] = (0.0, 3500.0)
    pulse_width_us: tuple[float, float] = (3.0, 10000.0)
    pulse_count: tuple[int, int] = (1, 10)
    chamber_ul: tuple[float, float] = (10.0, 5000.0)
    gap_mm: tuple[float, float] = (0.5, 4.0)  # 1, 2 and 4 mm cuvettes, flow chambers


@dataclass(frozen=True)
class PulseProgram:
    """One electroporation program (square wave)."""

    voltage_v: float
    pulse_width_us: float
    pulse_count: int
    gap_mm: float


@dataclass(frozen=True)
class PulseResult:
    """What the electroporator measured while pulsing."""

    field_v_per_cm: float
    peak_current_a: float
    pulses_delivered: int


@dataclass(frozen=True)
class ElectroporatorStatus:
    """State of the electroporator: armed, chamber loaded, last fault."""

    armed: bool
    loaded_ul: float
    fault: str


@runtime_checkable
class Electroporator(Protocol):
    """A square-wave electroporator with a chamber fed from the bioreactor bag."""

    name: str
    limits: ElectroporatorLimits

    async def identify(self) -> DeviceIdentity:
        """Who answers at this endpoint."""
        ...

    async def status(self) -> ElectroporatorStatus:
        """Armed, loaded volume and last fault."""
        ...

    async def load(self, volume_ul: float) -> None:
        """Draw cell suspension from the bag into the chamber."""
        ...

    async def program(self, program: PulseProgram) -> None:
        """Set voltage, pulse width, count and gap (read back before arming)."""
        ...

    async def pulse(self) -> PulseResult:
        """Arm and fire the programmed pulses."""
        ...

    async def unload(self) -> None:
        """Empty the chamber into the recovery bag on the output line."""
        ...

    async def recover(self) -> float:
        """Return the recovery bag's cells to the culture bag; the mL returned."""
        ...

    async def safe_state(self) -> None:
        """Disarm: no pulse can be fired."""
        ...


Equipment = Bioreactor | GasDispenser | Electroporator
