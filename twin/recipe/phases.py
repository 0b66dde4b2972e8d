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
    BodyMass,
    CellDensity,
    Cells,
    Concentration,
    DosePerKg,
    Flow,
    Hours,
    Minutes,
    Percent,
    Rpm,
    Seconds,
    Temperature,
    TemperatureDelta,
    Titre,
    Volume,
    VolumesPerDay,
)

__all__ = [
    "AddMaterial",
    "Condition",
    "ConfirmIdentity",
    "Culture",
    "Electroporate",
    "Feed",
    "Formulate",
    "Harvest",
    "MediaExchange",
    "Perfusion",
    "PerfusionStep",
    "Phase",
    "SampleCheck",
    "SetGas",
    "SetRocking",
    "SetTemperature",
    "Target",
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
    """Dose a material through the bioreactor's addition port: a fixed volume, or (vector)
    the volume for a multiplicity of infection, from the latest count:
    volume = MOI x viable cells in the bag / titre, refused above ``max_volume_ml``."""

    phase: Literal["add"]
    bioreactor: str = "bioreactor"
    material: MaterialName
    volume_ml: Annotated[Volume, Field(gt=0)] | None = None
    moi: Annotated[float, Field(gt=0, le=100)] | None = None
    titre: Annotated[Titre, Field(gt=0)] | None = None
    max_volume_ml: Annotated[Volume, Field(gt=0)] | None = None
    #: The lot dosed, when the recipe fixes it (else ``run --lot MATERIAL=LOT``).
    lot: str | None = Field(None, min_length=1, max_length=64)
    #: Wait for the operator to scan the container before dosing (``poc-twin scan-lot``):
    #: the scan must show this material, the fixed lot if there is one, and no past expiry.
    scan_lot: bool = False

    @model_validator(mode="after")
    def _volume_or_moi(self) -> AddMaterial:
        if (self.volume_ml is None) == (self.moi is None):
            raise ValueError("give exactly one of 'volume_ml' or 'moi' (with 'titre')")
        if self.moi is not None:
            if self.material != "vector":
                raise ValueError("'moi' doses a vector: material must be 'vector'")
            if self.titre is None or self.max_volume_ml is None:
                raise ValueError("a dose by 'moi' needs the vector's 'titre' and a 'max_volume_ml'")
        return self

    @property
    def planned_ml(self) -> float:
        """The volume the phase may add at most (fixed, or the MOI dose's ceiling)."""
        return float(self.volume_ml if self.volume_ml is not None else self.max_volume_ml or 0)


class PerfusionStep(BaseModel):
    """A higher perfusion rate from a density on (a perfusion ramp)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    at_cells_per_ml: Annotated[CellDensity, Field(gt=0)]
    volumes_per_day: Annotated[VolumesPerDay, Field(gt=0, le=3)]


class Perfusion(BaseModel):
    """Start perfusion once the culture is dense enough, at a rate in working volumes per day."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    start_at_cells_per_ml: Annotated[CellDensity, Field(gt=0)]
    volumes_per_day: Annotated[VolumesPerDay, Field(gt=0, le=3)]
    #: Later, higher rates as the culture grows denser (in rising order of density).
    ramp: list[PerfusionStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rising(self) -> Perfusion:
        densities = [self.start_at_cells_per_ml, *(s.at_cells_per_ml for s in self.ramp)]
        if densities != sorted(densities) or len(set(densities)) != len(densities):
            raise ValueError("perfusion ramp densities must rise, above start_at_cells_per_ml")
        return self


class Feed(BaseModel):
    """Add a material after a scheduled sample whose count or glucose says the culture needs
    it (at most once per sample)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    material: Literal["medium", "il2"] = "medium"
    volume_ml: Annotated[Volume, Field(gt=0)]
    when_glucose_below: Annotated[Concentration, Field(gt=0)] | None = None
    when_cells_per_ml_above: Annotated[CellDensity, Field(gt=0)] | None = None
    max_feeds: Annotated[int, Field(ge=1, le=100)] = 10

    @model_validator(mode="after")
    def _one_trigger(self) -> Feed:
        if (self.when_glucose_below is None) == (self.when_cells_per_ml_above is None):
            raise ValueError(
                "give exactly one of 'when_glucose_below' or 'when_cells_per_ml_above'"
            )
        return self


class Target(BaseModel):
    """End the culture early once a sample shows enough cells for the dose: total viable
    cells, CAR+ viable cells, or a dose per kg of the patient's weight (times a margin for QC
    and losses)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    viable_cells: Annotated[Cells, Field(gt=0)] | None = None
    car_positive_cells: Annotated[Cells, Field(gt=0)] | None = None
    car_positive_cells_per_kg: Annotated[DosePerKg, Field(gt=0)] | None = None
    patient_weight: Annotated[BodyMass, Field(gt=0, le=250)] | None = None
    margin: Annotated[float, Field(ge=1, le=100)] = 1.0
    #: Culture hours before a sample may end the culture: CAR+ by flow right after a
    #: non-viral transfer counts cells still expressing delivered cargo that fades in days.
    not_before_h: Annotated[Hours, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _one_target(self) -> Target:
        given = [
            x is not None
            for x in (self.viable_cells, self.car_positive_cells, self.car_positive_cells_per_kg)
        ]
        if sum(given) != 1:
            raise ValueError(
                "give exactly one of 'viable_cells', 'car_positive_cells' or "
                "'car_positive_cells_per_kg'"
            )
        if (self.car_positive_cells_per_kg is None) != (self.patient_weight is None):
            raise ValueError("a dose per kg needs the 'patient_weight' (and only it)")
        return self

    def cells_needed(self) -> tuple[float, bool]:
        """(cells needed, whether they are CAR+ cells) including the margin."""
        if self.viable_cells is not None:
            return self.viable_cells * self.margin, False
        if self.car_positive_cells is not None:
            return self.car_positive_cells * self.margin, True
        dose = float(self.car_positive_cells_per_kg or 0) * float(self.patient_weight or 0)
        return dose * self.margin, True


#: Shortest interval between a culture's scheduled samples (hours).
MIN_SAMPLE_EVERY_H = 0.25


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
    #: At most every 15 min: a sample is drawn, counted off-line and decided on (the twin's
    #: count takes a minute, a lab's longer), and each one takes volume from the bag.
    #: Sooner, samples followed each other with no culture time between (a 1 h culture
    #: sampled every 1e-9 h ran 37 h and drained the bag).
    sample_every_h: Annotated[Hours, Field(ge=MIN_SAMPLE_EVERY_H)] | None = None
    poll_s: Annotated[Seconds, Field(ge=1, le=600)] = 60.0
    #: Feeds decided on each scheduled sample (by glucose or density).
    feeds: list[Feed] = Field(default_factory=list)
    #: End before ``duration_h`` (then the maximum) once a sample shows the target reached.
    target: Target | None = None

    @model_validator(mode="after")
    def _samples_for_decisions(self) -> Culture:
        if (self.feeds or self.target is not None) and self.sample_every_h is None:
            raise ValueError("feeds and a target are decided on samples: give 'sample_every_h'")
        return self


QcTest = Literal["sterility", "endotoxin", "mycoplasma", "cd3", "cd4_cd8", "car", "vcn"]


class SampleCheck(_Phase):
    """Take and count a sample; fail the phase if it misses the in-process limits."""

    phase: Literal["sample"]
    bioreactor: str = "bioreactor"
    min_viability_pct: Annotated[Percent, Field(ge=0, le=100)] | None = None
    min_viable_cells_per_ml: Annotated[CellDensity, Field(ge=0)] | None = None
    #: Tests the QC lab runs on this sample (their results come later, `poc-twin qc`).
    qc: list[QcTest] = Field(default_factory=list)


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


class Formulate(_Phase):
    """The patient's dose from the harvest: the harvest volume that holds the dose (CAR+
    viable cells per kg x body weight), washed and resuspended in the infusion bag's volume;
    fails, formulating nothing, when the harvest holds less than one dose or the bag would
    be denser than ``max_cells_per_ml``."""

    phase: Literal["formulate"]
    bioreactor: str = "bioreactor"
    #: CAR+ viable cells per kg; labelled doses are 0.2-5e6/kg: 1e9/kg is far past any.
    dose_per_kg: Annotated[DosePerKg, Field(gt=0, le=1.0e9)]
    patient_weight: Annotated[BodyMass, Field(gt=0, le=250)]
    final_volume_ml: Annotated[Volume, Field(gt=0, le=1000)]
    #: All viable cells (CAR+ or not) per mL of the infusion bag at most.
    max_cells_per_ml: Annotated[CellDensity, Field(gt=0, le=1.0e10)] = 1.0e8


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
    | Harvest
    | Formulate,
    Field(discriminator="phase"),
]

#: Every phase model, for did-you-mean on unknown keys.
PHASE_MODELS: tuple[type[BaseModel], ...] = (
    SetTemperature,
    SetGas,
    SetRocking,
    AddMaterial,
    Perfusion,
    PerfusionStep,
    Feed,
    Target,
    Culture,
    SampleCheck,
    MediaExchange,
    Wait,
    Condition,
    ConfirmIdentity,
    Electroporate,
    Harvest,
    Formulate,
    Monitor,
)
