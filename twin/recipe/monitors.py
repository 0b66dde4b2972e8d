"""Monitors a recipe declares: limits on a process value, with deadband, delay and a reaction."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MONITORED_PVS", "Monitor", "MonitoredPV", "Reaction"]

#: Process values a monitor may watch: the bioreactor's polled PVs and the last counted sample.
MonitoredPV = Literal[
    "temperature_c",
    "do_pct",
    "ph",
    "volume_ml",
    "viable_cells_per_ml",
    "viability_pct",
    "glucose_mm",
    "lactate_mm",
]
MONITORED_PVS: tuple[str, ...] = get_args(MonitoredPV)

Reaction = Literal["none", "hold_phase", "hold_unit", "hold", "abort"]


class Monitor(BaseModel):
    """An alarm: raised when ``pv`` stays beyond a limit for ``delay_min``; cleared inside the
    limit by ``deadband``. ``reaction`` says how far the batch is held (or aborted)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str | None = None
    pv: MonitoredPV
    equipment: str = "bioreactor"
    high: float | None = None
    low: float | None = None
    deadband: Annotated[float, Field(ge=0)] = 0.0
    delay_min: Annotated[float, Field(ge=0)] = 0.0
    reaction: Reaction = "none"

    @model_validator(mode="after")
    def _has_a_limit(self) -> Monitor:
        if self.high is None and self.low is None:
            raise ValueError("a monitor needs a high or a low limit (or both)")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low limit {self.low:g} must be below high limit {self.high:g}")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.equipment}.{self.pv}"
