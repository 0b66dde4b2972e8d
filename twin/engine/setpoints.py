"""The setpoints a device reports back, against those the batch put in force.

A controller that restarted (a power cut at the bench; a device that power-cycled while
the batch's PC was down and ``resume`` brought the batch back) or that someone changed at
its own panel holds other setpoints than the batch wrote, while the engine goes on
believing its own: a held culture would sit at a controller's power-up temperature
overnight with nothing alarmed. Every reading carries what the device holds (the
temperature loop's active setpoint, each mass-flow controller's setpoint, the rocking
rate), so the control modules compare it at each scan (:func:`lost`): a difference is an
alarm (``setpoint_lost``) and the batch's setpoint is written again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["lost", "reported"]

#: How far a reported value may be from the one written before it counts as lost: the
#: register's or the frame's resolution (a temperature setpoint, a flow setpoint with two
#: decimals), a measured rocking rate's own unsteadiness.
_ABS = {"temperature_sp": 0.05, "rocking_sp": 1.0}
_REL = {"temperature_sp": 0.0, "rocking_sp": 0.1}
_FLOW_ABS, _FLOW_REL = 0.05, 0.005


def reported(kind: str, pv: Any) -> Iterator[tuple[str, float]]:
    """(parameter, value the device holds) of each setpoint a reading reports back, named as
    the batch's setpoints are journalled."""
    if kind == "bioreactor":
        yield "temperature_sp", pv.temperature_sp_c
        yield "rocking_sp", pv.rocking_rpm
    elif kind == "gas_dispenser":
        # By name: a live reading's lines come in the line's order, a replayed one's as
        # the journal keeps them (sorted); the alarm must name them alike.
        for gas, sccm in sorted(pv.setpoint_sccm.items(), key=lambda line: line[0].name):
            yield f"{gas.name.lower()}_flow_sp", sccm


def _differs(parameter: str, held: float, value: float) -> bool:
    tolerance = _ABS.get(parameter, _FLOW_ABS) + _REL.get(parameter, _FLOW_REL) * abs(value)
    return not abs(held - value) <= tolerance  # (a NaN differs)


def lost(
    kind: str, pv: Any, in_force: dict[tuple[str, str], Any], name: str
) -> list[tuple[str, float, Any]]:
    """(parameter, what the device holds, the batch's value) of each setpoint of item
    ``name`` the device no longer holds; ``in_force`` maps (item, parameter) to the
    batch's (value, unit, write)."""
    found = []
    for parameter, held in reported(kind, pv):
        kept = in_force.get((name, parameter))
        if kept is None or not isinstance(kept[0], int | float):
            continue  # never written by this batch: the device's own
        if _differs(parameter, held, float(kept[0])):
            found.append((parameter, held, kept[0]))
    return found
