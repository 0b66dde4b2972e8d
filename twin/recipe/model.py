"""The recipe as a typed model: ISA-88 procedure -> unit procedures -> operations -> phases."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from twin.recipe.monitors import Monitor
from twin.recipe.parameters import Parameter
from twin.recipe.phases import PHASE_MODELS, Phase

__all__ = [
    "ALL_MODELS",
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


class EquipmentRequirement(_Strict):
    """A piece of equipment the recipe needs; the bench says which device fills it."""

    type: EquipmentType


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
