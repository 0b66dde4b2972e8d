"""Interlocks: checks on every write that no recipe, typo, parameter or replay can bypass.

They run in the engine's write path (``BatchContext.write``), below the phases,
so a phase cannot skip them: temperature setpoints inside the bioreactor's limits,
gas flows inside full scale and O2 inside its cap, and no gene transfer (an
electroporation pulse, a vector dose) before the chain of identity has been confirmed
for this batch.
"""

from __future__ import annotations

from typing import Any

from twin.equipment import Gas
from twin.errors import InterlockTripped

__all__ = ["check_write"]


def _within(value: float, span: tuple[float, float]) -> bool:
    return span[0] <= value <= span[1]


def check_write(
    equipment: str, item: Any, parameter: str, value: Any, *, identity_confirmed: bool
) -> None:
    """Raise InterlockTripped if writing ``value`` to ``parameter`` is not allowed now."""
    limits = getattr(item, "limits", None)
    if parameter == "temperature_sp" and limits is not None:
        if not _within(float(value), limits.temperature_c):
            lo, hi = limits.temperature_c
            raise InterlockTripped(
                f"{equipment}: temperature setpoint {value:g} °C outside {lo:g}-{hi:g} °C"
            )
    elif parameter.endswith("_flow_sp") and limits is not None:
        gas = Gas[parameter.removesuffix("_flow_sp").upper()]
        full = limits.full_scale_sccm.get(gas, 0.0)
        if float(value) > full:
            raise InterlockTripped(
                f"{equipment}: {gas.name} flow {value:g} sccm > full scale {full:g}"
            )
        if gas is Gas.O2 and float(value) > limits.o2_cap_sccm:
            raise InterlockTripped(
                f"{equipment}: O2 flow {value:g} sccm above the O2 cap {limits.o2_cap_sccm:g} sccm"
            )
    elif parameter == "pulse" and not identity_confirmed:
        raise InterlockTripped(
            f"{equipment}: no electroporation before the chain of identity is confirmed"
        )
    elif parameter == "add_vector" and not identity_confirmed:
        raise InterlockTripped(
            f"{equipment}: no vector before the chain of identity is confirmed (gene transfer "
            "is to one patient's cells)"
        )
