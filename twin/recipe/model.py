"""The recipe as a typed model: ISA-88 procedure -> unit procedures -> operations -> phases."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from twin.recipe.monitors import Monitor
from twin.recipe.parameters import Parameter
from twin.recipe.phases import PHASE_MODELS, Phase

__all__ = [
    "ALL_MODELS",
    "DEFAULT_REACTIONS",
    "EquipmentReaction",
    "EquipmentRequirement",
    "Header",
    "Operation",
    "Recipe",
    "UnitProcedure",
]

EquipmentType = Literal["bioreactor", "gas_dispenser", "electroporator"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Header(_Strict):
    """Who made the recipe and whether it is an approved master-file version."""

    id: str
    product: str
    version: str
    status: Literal["draft", "approved"]
    author: str
    approved_by: str | None = None
    approved_on: date | None = None
    description: str = ""


#: What a hold or a stop does to one equipment item (an abort always makes it safe):
#: ``control`` keeps its regulatory control and monitoring going (temperature, DO and pH)
#: and stops additions (perfusion, pumps, base); ``safe`` drives it to its safe state and
#: its control loops stop writing to it (monitoring goes on).
EquipmentReaction = Literal["control", "safe"]

#: The defaults by equipment type: a held culture is kept alive, an idle chamber disarmed.
DEFAULT_REACTIONS: dict[str, dict[str, str]] = {
    "bioreactor": {"hold": "control", "stop": "safe"},
    "gas_dispenser": {"hold": "control", "stop": "safe"},
    "electroporator": {"hold": "safe", "stop": "safe"},
}


class EquipmentRequirement(_Strict):
    """A piece of equipment the recipe needs; the bench says which device fills it."""

    type: EquipmentType
    #: What a hold does to this item (default by type: DEFAULT_REACTIONS).
    on_hold: EquipmentReaction | None = None
    #: What a controlled stop does to it once the current phase has shut down.
    on_stop: EquipmentReaction | None = None

    @model_validator(mode="after")
    def _electroporator_is_made_safe(self) -> EquipmentRequirement:
        if self.type == "electroporator" and "control" in (self.on_hold, self.on_stop):
            raise ValueError("an electroporator has no control loop to keep: use 'safe'")
        return self

    def reaction(self, to: str) -> str:
        """``control`` or ``safe``: what a ``hold``, ``stop`` or ``abort`` does to this item."""
        if to == "abort":
            return "safe"
        declared = self.on_hold if to == "hold" else self.on_stop
        return declared or DEFAULT_REACTIONS[self.type][to]


class Operation(_Strict):
    """An ordered set of phases that together do one process step (e.g. activation)."""

    operation: str
    phases: list[Phase] = Field(min_length=1)


class UnitProcedure(_Strict):
    """The operations carried out on one unit (e.g. the expansion bioreactor)."""

    unit_procedure: str
    operations: list[Operation] = Field(min_length=1)


class Recipe(_Strict):
    """A whole master recipe as the process engineer wrote it."""

    recipe: Header
    #: Named values with units and ranges, used in phases as ``$name`` (resolved at load).
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    equipment: dict[str, EquipmentRequirement] = Field(min_length=1)
    #: Monitors active for the whole batch (each phase may add its own).
    monitors: list[Monitor] = Field(default_factory=list)
    procedure: list[UnitProcedure] = Field(min_length=1)


ALL_MODELS: tuple[type[BaseModel], ...] = (
    Header,
    EquipmentRequirement,
    Operation,
    UnitProcedure,
    Recipe,
    Parameter,
    *PHASE_MODELS,
)
