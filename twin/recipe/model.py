"""The recipe as a typed model: ISA-88 procedure -> unit procedures -> operations -> phases."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from twin.names import SAFE_NAME_RULE, UnsafeName, check_safe_name
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


def _safe_name(value: str) -> str:
    try:
        return check_safe_name(value, "")
    except UnsafeName:
        raise ValueError(f"{value!r} is not a safe name: {SAFE_NAME_RULE}") from None


#: An identifier that may become part of a file name (the journal's) or a topic.
SafeName = Annotated[str, AfterValidator(_safe_name)]

EquipmentType = Literal["bioreactor", "gas_dispenser", "electroporator"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Header(_Strict):
    """Who made the recipe and whether it is an approved master-file version."""

    #: Prefix of the default batch id, and so of the journal's file name: a safe name.
    id: SafeName
    product: Annotated[str, Field(min_length=1)]
    version: SafeName
    status: Literal["draft", "approved"]
    author: str
    approved_by: str | None = None
    approved_on: date | None = None
    description: str = ""
    #: What a batch of it is for: a ``product`` is judged against release criteria; a
    #: ``commissioning`` or ``development`` run only on whether it ran as written.
    purpose: Literal["product", "commissioning", "development"] = "product"


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
        if self.type == "gas_dispenser" and self.on_stop == "control":
            raise ValueError(
                "on_stop: control: a stopped batch ends, and its DO and pH loops with it, so "
                "O2, N2 and CO2 would flow on at their last outputs with nothing controlling "
                "them; a gas dispenser is made safe at a stop: use 'safe'"
            )
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

    def fixed_lots(self) -> dict[str, set[str]]:
        """The lots the recipe itself fixes, by material, for materials whose every ``add``
        fixes its lot (a ``run --lot`` for them is never used)."""
        fixed: dict[str, set[str]] = {}
        free: set[str] = set()
        for unit in self.procedure:
            for op in unit.operations:
                for ph in op.phases:
                    if ph.phase != "add":
                        continue
                    lot = getattr(ph, "lot", None)
                    if lot is None:
                        free.add(str(ph.material))
                    else:
                        fixed.setdefault(str(ph.material), set()).add(lot)
        return {material: lots for material, lots in fixed.items() if material not in free}

    @property
    def confirms_identity(self) -> bool:
        """Whether a phase confirms the chain of identity: the batch needs its patient and bag."""
        return any(
            ph.phase == "confirm_identity"
            for unit in self.procedure
            for op in unit.operations
            for ph in op.phases
        )


ALL_MODELS: tuple[type[BaseModel], ...] = (
    Header,
    EquipmentRequirement,
    Operation,
    UnitProcedure,
    Recipe,
    Parameter,
    *PHASE_MODELS,
)
