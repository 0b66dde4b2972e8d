"""Quantities in recipes: a number in the field's own unit, or a string with a unit.

``setpoint_c: 37`` and ``setpoint_c: "37 °C"`` mean the same; ``duration_h: "2 d"``
is 48 h; ``"37 h"`` for a temperature is refused with what was expected. Each
phase field declares its dimension; the value is stored in the field's unit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = [
    "DIMENSIONS",
    "BodyMass",
    "CellDensity",
    "Cells",
    "Concentration",
    "DosePerKg",
    "Flow",
    "Hours",
    "Minutes",
    "Percent",
    "Rpm",
    "Seconds",
    "Temperature",
    "TemperatureDelta",
    "Titre",
    "Volume",
    "VolumesPerDay",
    "convert",
    "dimension_of",
]

#: Each dimension: its unit symbols and the factor to the canonical unit (first listed).
DIMENSIONS: dict[str, dict[str, float]] = {
    "temperature": {"°C": 1.0, "degC": 1.0, "C": 1.0},
    "time": {"h": 1.0, "s": 1 / 3600, "min": 1 / 60, "d": 24.0},
    "volume": {"mL": 1.0, "uL": 1e-3, "µL": 1e-3, "L": 1e3},
    "flow": {"sccm": 1.0, "mL/min": 1.0, "slpm": 1e3},
    "fraction": {"%": 1.0},
    "rotation": {"rpm": 1.0},
    "density": {"cells/mL": 1.0, "/mL": 1.0, "e6/mL": 1e6, "e6 cells/mL": 1e6},
    "exchange": {"vvd": 1.0, "/d": 1.0},
    "titre": {"TU/mL": 1.0, "IU/mL": 1.0, "e8 TU/mL": 1e8, "e9 TU/mL": 1e9},
    "cells": {"cells": 1.0, "e6 cells": 1e6, "e9 cells": 1e9},
    "dose": {"cells/kg": 1.0, "e6 cells/kg": 1e6, "e6/kg": 1e6},
    "mass": {"kg": 1.0, "g": 1e-3},
    "concentration": {"mM": 1.0, "mmol/L": 1.0, "g/L glucose": 1000 / 180.16},
    "copies": {"copies/cell": 1.0},  # integrated vector copies per cell (VCN)
}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$")


def dimension_of(unit: str) -> str | None:
    """The dimension a unit symbol belongs to (None if unknown)."""
    for dimension, units in DIMENSIONS.items():
        if unit in units:
            return dimension
    return None


def convert(value: Any, dimension: str, unit: str) -> float:
    """A recipe value as a float in ``unit``; raises ValueError saying what was expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected a {dimension} in {unit}, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a {dimension} in {unit}, got {value!r}")
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(f"expected a {dimension} such as '12 {unit}', got '{value}'")
    number, symbol = float(match.group(1)), match.group(2)
    if symbol is None:
        return number
    units = DIMENSIONS[dimension]
    if symbol not in units:
        other = dimension_of(symbol)
        known = ", ".join(units)
        if other is not None:
            raise ValueError(f"'{value}' is a {other}; expected a {dimension} in {known}")
        raise ValueError(f"unknown unit '{symbol}' in '{value}'; expected a {dimension} in {known}")
    return number * units[symbol] / units[unit]


def _quantity(dimension: str, unit: str) -> Callable[[Any], float]:
    def validate(value: Any) -> float:
        return convert(value, dimension, unit)

    return validate


Temperature = Annotated[float, BeforeValidator(_quantity("temperature", "°C"))]
TemperatureDelta = Annotated[float, BeforeValidator(_quantity("temperature", "°C"))]
Hours = Annotated[float, BeforeValidator(_quantity("time", "h"))]
Minutes = Annotated[float, BeforeValidator(_quantity("time", "min"))]
Seconds = Annotated[float, BeforeValidator(_quantity("time", "s"))]
Volume = Annotated[float, BeforeValidator(_quantity("volume", "mL"))]
Flow = Annotated[float, BeforeValidator(_quantity("flow", "sccm"))]
Percent = Annotated[float, BeforeValidator(_quantity("fraction", "%"))]
Rpm = Annotated[float, BeforeValidator(_quantity("rotation", "rpm"))]
CellDensity = Annotated[float, BeforeValidator(_quantity("density", "cells/mL"))]
VolumesPerDay = Annotated[float, BeforeValidator(_quantity("exchange", "vvd"))]
Titre = Annotated[float, BeforeValidator(_quantity("titre", "TU/mL"))]
Cells = Annotated[float, BeforeValidator(_quantity("cells", "cells"))]
DosePerKg = Annotated[float, BeforeValidator(_quantity("dose", "cells/kg"))]
BodyMass = Annotated[float, BeforeValidator(_quantity("mass", "kg"))]
Concentration = Annotated[float, BeforeValidator(_quantity("concentration", "mM"))]
