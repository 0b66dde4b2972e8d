"""Fault scenarios: a YAML list of faults that strike a running twin at given batch times.

    scenario: o2-cylinder-runs-out
    description: the O2 supply empties on day 3 and is replaced 2 h later
    faults:
      - {at: 3d, device: gas, fault: supply_out, unit: B, until: 3d 2h}
      - {at: 4d 6h, device: bioreactor, fault: sensor_drift, sensor: ph, rate_per_h: -0.01}

Times are batch time: seconds, or a duration such as ``1d 6h 30m 10s``. Each
entry names a device (an equipment name of the bench), a fault and the fault's
parameters; ``until`` clears it again. Problems are reported as FILE:LINE:COL
(twin/sourcemap.py), all at once. docs/twin/faults.md lists every fault.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twin.errors import InvalidInput, Problem
from twin.sim.faults import BIOREACTOR_SENSORS
from twin.sourcemap import SourceMap, load_yaml, validate_document

__all__ = [
    "Expectation",
    "FaultEntry",
    "LoadedScenario",
    "Scenario",
    "load_scenario",
    "parse_duration",
]

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(d|h|min|m|s)\s*")


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number of seconds or a text like ``1d 6h``, ``90 min``, ``2.5h``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text, seconds, pos = value.strip(), 0.0, 0
        if not text:
            raise ValueError("empty duration")
        while pos < len(text):
            m = _PART.match(text, pos)
            if m is None:
                raise ValueError(f"not a duration: {value!r} (write e.g. 90, 36h, 1d 6h 30m)")
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds < 0:
        raise ValueError(f"a batch time cannot be negative: {value!r}")
    return seconds


Duration = Annotated[float, Field(description="batch time: seconds or '1d 6h 30m'")]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    at: Duration
    device: str
    until: Duration | None = None

    @field_validator("at", "until", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return None if v is None else parse_duration(v)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _until_after_at(self) -> _Entry:
        if self.until is not None and self.until <= self.at:
            raise ValueError(f"until ({self.until:g} s) must come after at ({self.at:g} s)")
        return self


class Silent(_Entry):
    """The device stops answering (``unit``: only that controller of a multi-drop line)."""

    fault: Literal["silent"]
    unit: str | None = Field(None, pattern=r"^[A-Z]$")


class Late(_Entry):
    """Every reply comes ``delay_s`` late."""

    fault: Literal["late"]
    delay_s: float = Field(gt=0)


class Corrupt(_Entry):
    """Every Nth reply is damaged (bad CRC, garbled ASCII, broken Modbus TCP frame)."""

    fault: Literal["corrupt"]
    every: int = Field(1, ge=1)
    mode: Literal["garble", "short", "tid"] = "garble"
    unit: str | None = Field(None, pattern=r"^[A-Z]$")


class SensorStuck(_Entry):
    """A bag sensor freezes (at ``value``, or at its reading when the fault strikes)."""

    fault: Literal["sensor_stuck"]
    sensor: Literal[BIOREACTOR_SENSORS]  # type: ignore[valid-type]
    value: float | None = None


class SensorDrift(_Entry):
    """A bag sensor's reading drifts away from the truth at ``rate_per_h`` units per hour."""

    fault: Literal["sensor_drift"]
    sensor: Literal[BIOREACTOR_SENSORS]  # type: ignore[valid-type]
    rate_per_h: float


class SensorFailed(_Entry):
    """A bag sensor fails: the controller reports no number for it (NaN) until replaced."""

    fault: Literal["sensor_failed"]
    sensor: Literal[BIOREACTOR_SENSORS]  # type: ignore[valid-type]


class HeaterFailure(_Entry):
    """The bag's heater gives no more heat (the controller flags a load failure)."""

    fault: Literal["heater_failure"]


class SupplyOut(_Entry):
    """The gas supply of one mass-flow controller (unit id A-Z) runs out."""

    fault: Literal["supply_out"]
    unit: str = Field(pattern=r"^[A-Z]$")


class PowerLoss(_Entry):
    """The device loses power: it answers nothing; a bioreactor stops heating, rocking,
    perfusing and pumping, a gas dispenser's valves close. At ``until`` it starts again at
    its power-up setpoints, as a controller that keeps none in memory: a bioreactor at
    ``power_up_temperature_c`` with no rocking, every flow at 0. Without ``until`` it stays
    dead."""

    fault: Literal["power_loss"]
    power_up_temperature_c: float = Field(20.0, ge=0.0, le=60.0)


class Contamination(_Entry):
    """Bacteria enter the bag: they cannot be cleared, so no ``until``."""

    fault: Literal["contamination"]
    cells_per_ml: float = Field(1.0e3, gt=0)

    @model_validator(mode="after")
    def _no_until(self) -> Contamination:
        if self.until is not None:
            raise ValueError("a contamination cannot be undone: remove 'until'")
        return self


FaultEntry = Annotated[
    Silent
    | Late
    | Corrupt
    | SensorStuck
    | SensorDrift
    | SensorFailed
    | HeaterFailure
    | SupplyOut
    | PowerLoss
    | Contamination,
    Field(discriminator="fault"),
]
LINK_FAULTS = ("silent", "late", "corrupt")
FAULT_DEVICE_TYPE: dict[str, tuple[str, ...]] = {
    "sensor_stuck": ("bioreactor",),
    "sensor_drift": ("bioreactor",),
    "sensor_failed": ("bioreactor",),
    "heater_failure": ("bioreactor",),
    "contamination": ("bioreactor",),
    "supply_out": ("gas_dispenser",),
    "power_loss": ("bioreactor", "gas_dispenser"),
}
"""Plant faults act on one kind of equipment; link faults on any device."""


class ExpectedAlarm(BaseModel):
    """The alarm a fault must raise: its kind and the device (or process value) it names."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["communication", "limit", "phase_failure", "interlock", "device", "setpoint_lost"]
    source: str | None = None
    pv: str | None = None


class Expectation(BaseModel):
    """What the HIL fault matrix must see when the scenario runs under a recipe."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    recipe: str
    alarm: ExpectedAlarm | None = None  # None: the batch must ride through with no alarm
    within: float | None = None  # from the first fault to the alarm, batch seconds
    hold: Literal["procedure", "unit", "operation", "phase"] | None = None
    then: Literal["restart", "stop", "abort"] | None = None  # the operator, once held
    outcome: Literal["Complete", "Stopped", "Aborted"] = "Complete"

    @field_validator("within", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return parse_duration(v) if isinstance(v, str | int | float) else v  # type: ignore[arg-type]


class Scenario(BaseModel):
    """A named list of faults, and (for the HIL fault matrix) what must follow."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    scenario: str
    description: str = ""
    faults: list[FaultEntry] = Field(default_factory=list)
    expect: Expectation | None = None


_MODELS = (Scenario, Expectation, ExpectedAlarm, Silent, Late, Corrupt, SensorStuck)
_MODELS += (SensorDrift, HeaterFailure)
_MODELS += (SupplyOut, PowerLoss, Contamination)


class LoadedScenario:
    """A validated scenario and where each entry sits in its file."""

    def __init__(self, path: Path, model: Scenario, source: SourceMap) -> None:
        self.path, self.model, self.source = path, model, source

    def check_devices(self, device_types: dict[str, str]) -> None:
        """Every entry names a device of the bench, of the kind its fault needs."""
        problems = []
        for i, entry in enumerate(self.model.faults):
            kind = device_types.get(entry.device)
            need = FAULT_DEVICE_TYPE.get(entry.fault)
            if kind is None:
                known = ", ".join(sorted(device_types)) or "none"
                message = f"no device '{entry.device}' on this bench (devices: {known})"
                problems.append(self.source.problem(["faults", i, "device"], message))
            elif need is not None and kind not in need:
                needs = " or a ".join(need)
                message = f"fault '{entry.fault}' needs a {needs}, '{entry.device}' is a {kind}"
                problems.append(self.source.problem(["faults", i, "fault"], message))
            elif getattr(entry, "unit", None) and kind != "gas_dispenser":
                message = (
                    f"'unit' names one controller of a gas dispenser's shared line; "
                    f"'{entry.device}' is a {kind}"
                )
                problems.append(self.source.problem(["faults", i, "unit"], message))
        if problems:
            raise InvalidInput(problems)


def load_scenario(path: Path) -> LoadedScenario:
    """Read and validate a scenario file; every problem at once, each with FILE:LINE:COL."""
    data, source = load_yaml(path)
    try:
        model = validate_document(Scenario, data, source, _MODELS)
    except InvalidInput as exc:  # the shared messages speak of recipes' phase types
        problems = [
            Problem(p.file, p.line, p.col, p.message.replace("unknown phase type", "unknown fault"))
            for p in exc.problems
        ]
        raise InvalidInput(problems) from None
    return LoadedScenario(path, model, source)
