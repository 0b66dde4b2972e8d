"""Phase parameters as data: one typed model per phase type of the phase library.

The engine's phase library (``twin.engine.phases``) gives each of these its
logic; here they are only what a recipe may say, checked before anything runs.
Field names carry their unit (``_c``, ``_ml``, ``_h``, ``_sccm``, ``_pct``); a value
may also be written with a unit (``"2 d"``, ``"500 uL"``), see ``twin.recipe.units``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from twin.recipe.monitors import Monitor
from twin.recipe.units import (
    CellDensity,
    Flow,
    Hours,
    Minutes,
    Percent,
    Rpm,
    Seconds,
    Temperature,
    TemperatureDelta,
    Volume,
    VolumesPerDay,
)

__all__ = [
    "AddMaterial",
    "Condition",
    "ConfirmIdentity",
    "Culture",
    "Electroporate",
    "Harvest",
    "MediaExchange",
    "Perfusion",
    "Phase",
    "SampleCheck",
    "SetGas",
    "SetRocking",
    "SetTemperature",
    "Wait",
]

GasName = Literal["air", "o2", "n2", "co2"]
MaterialName = Literal["medium", "activator", "il2", "vector", "base"]


class _Phase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str | None = Field(None, description="Label shown in the batch record")
    monitors: list[Monitor] = Field(default_factory=list)
    #: How far a failure of this phase propagates (a lost device always holds the batch).
    on_failure: Literal["hold_phase", "hold_unit", "hold", "abort"] = "hold"


class SetTemperature(_Phase):
    """Write the temperature setpoint and wait until the process value is within tolerance."""

    phase: Literal["set_temperature"]
    bioreactor: str = "bioreactor"
    setpoint_c: Temperature
    tolerance_c: Annotated[TemperatureDelta, Field(gt=0)] = 0.5
    timeout_min: Annotated[Minutes, Field(gt=0)] = 180.0


class SetGas(_Phase):
    """Set fixed mass flows on gas lines (e.g. 5% CO2 in air)."""

    phase: Literal["set_gas"]
    gas_dispenser: str = "gas"
    flows_sccm: dict[GasName, Annotated[Flow, Field(ge=0)]]


class SetRocking(_Phase):
    """Set the rocking rate (mixing and oxygen transfer)."""

    phase: Literal["set_rocking"]
    bioreactor: str = "bioreactor"
    rpm: Annotated[Rpm, Field(ge=0)]


class AddMaterial(_Phase):
    """Dose a material through the bioreactor's addition port."""

    phase: Literal["add"]
    bioreactor: str = "bioreactor"
    material: MaterialName
    volume_ml: Annotated[Volume, Field(gt=0)]


class Perfusion(BaseModel):
    """Start perfusion once the culture is dense enough, at a rate in working volumes per day."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    start_at_cells_per_ml: Annotated[CellDensity, Field(gt=0)]
    volumes_per_day: Annotated[VolumesPerDay, Field(gt=0, le=3)]


class Culture(_Phase):
    """Hold culture conditions for a time: DO control, perfusion, daily samples."""

    phase: Literal["culture"]
    bioreactor: str = "bioreactor"
    gas_dispenser: str = "gas"
    duration_h: Annotated[Hours, Field(gt=0)]
    do_setpoint_pct: Annotated[Percent, Field(gt=0, le=100)] | None = None
    perfusion: Perfusion | None = None
    #: pH control: CO2 in the sparge gas lowers pH (PI loop); below the band with no CO2 left
    #: to take away, base is dosed (at most every ``base_interval_h``).
    ph_setpoint: Annotated[float, Field(gt=5.5, lt=8.5)] | None = None
    ph_deadband: Annotated[float, Field(ge=0, le=0.5)] = 0.05
    base_dose_ml: Annotated[Volume, Field(gt=0)] = 1.0
    base_interval_h: Annotated[Hours, Field(gt=0)] = 1.0
    sample_every_h: Annotated[Hours, Field(gt=0)] | None = None
    poll_s: Annotated[Seconds, Field(ge=1, le=600)] = 60.0


class SampleCheck(_Phase):
    """Take and count a sample; fail the phase if it misses the in-process limits."""

    phase: Literal["sample"]
    bioreactor: str = "bioreactor"
    min_viability_pct: Annotated[Percent, Field(ge=0, le=100)] | None = None
    min_viable_cells_per_ml: Annotated[CellDensity, Field(ge=0)] | None = None


class MediaExchange(_Phase):
    """Exchange spent medium for fresh through the perfusion line (cells retained)."""

    phase: Literal["media_exchange"]
    bioreactor: str = "bioreactor"
    volume_ml: Annotated[Volume, Field(gt=0)]
    rate_ml_per_h: Annotated[float, Field(gt=0, le=2000)] = 100.0


class Condition(BaseModel):
    """A process value crossing a threshold, e.g. density above 2e6 cells/mL."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    pv: Literal["temperature_c", "do_pct", "ph", "volume_ml", "viable_cells_per_ml"]
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> Condition:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self

    def met(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < float(self.below or 0)


class Wait(_Phase):
    """Wait for a time, or until a condition holds (failing after ``timeout_h``)."""

    phase: Literal["wait"]
    bioreactor: str = "bioreactor"
    duration_h: Annotated[Hours, Field(gt=0)] | None = None
    until: Condition | None = None
    timeout_h: Annotated[Hours, Field(gt=0)] = 24.0
    poll_s: Annotated[Seconds, Field(ge=1, le=600)] = 60.0

    @model_validator(mode="after")
    def _time_or_condition(self) -> Wait:
        if (self.duration_h is None) == (self.until is None):
            raise ValueError("give exactly one of 'duration_h' or 'until'")
        return self


class ConfirmIdentity(_Phase):
    """Chain of identity: an operator scans patient and bag ids; both must match the batch's."""

    phase: Literal["confirm_identity"]


class Electroporate(_Phase):
    """Move the culture through the electroporator chamber, portion by portion, and pulse each."""

    phase: Literal["electroporate"]
    bioreactor: str = "bioreactor"
    electroporator: str = "electroporator"
    volume_ml: Annotated[Volume, Field(gt=0)]
    chamber_ul: Annotated[float, Field(gt=0)] = 5000.0
    voltage_v: Annotated[float, Field(gt=0)]
    pulse_width_us: Annotated[float, Field(gt=0)]
    pulse_count: Annotated[int, Field(ge=1)] = 1
    gap_mm: Annotated[float, Field(gt=0)] = 2.0


class Harvest(_Phase):
    """Stop feeds and drain the bag to the final-product bag."""

    phase: Literal["harvest"]
    bioreactor: str = "bioreactor"
    gas_dispenser: str = "gas"


Phase = Annotated[
    SetTemperature
    | SetGas
    | SetRocking
    | AddMaterial
    | Culture
    | SampleCheck
    | MediaExchange
    | Wait
    | ConfirmIdentity
    | Electroporate
    | Harvest,
    Field(discriminator="phase"),
]

#: Every phase model, for did-you-mean on unknown keys.
PHASE_MODELS: tuple[type[BaseModel], ...] = (
    SetTemperature,
    SetGas,
    SetRocking,
    AddMaterial,
    Perfusion,
    Culture,
    SampleCheck,
    MediaExchange,
    Wait,
    Condition,
    ConfirmIdentity,
    Electroporate,
    Harvest,
    Monitor,
)
