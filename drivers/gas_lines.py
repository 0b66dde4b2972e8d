"""What every gas-dispenser driver shares: gas names in bench files and the line limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container

import pydantic

from twin.equipment import Gas
from twin.errors import EquipmentError

__all__ = ["GAS_KEYS", "GasLimitsConfig", "close_o2_and_n2", "gas_key"]

#: Gas names as a bench file writes them.
GAS_KEYS = {"air": Gas.AIR, "o2": Gas.O2, "n2": Gas.N2, "co2": Gas.CO2}


def gas_key(name: str) -> str:
    """A bench file's gas name, checked and lower-cased."""
    key = name.lower()
    if key not in GAS_KEYS:
        raise ValueError(f"unknown gas {name!r}; expected one of {', '.join(GAS_KEYS)}")
    return key


class GasLimitsConfig(pydantic.BaseModel, extra="forbid", allow_inf_nan=False):
    """Full scale (capacity) of each gas line and the O2 cap (sccm), from the bench file."""

    full_scale_sccm: dict[str, float] = {"air": 500.0, "o2": 200.0, "n2": 500.0, "co2": 50.0}
    o2_cap_sccm: float = pydantic.Field(default=100.0, ge=0.0)

    @pydantic.field_validator("full_scale_sccm")
    @classmethod
    def _known_gases(cls, value: dict[str, float]) -> dict[str, float]:
        out = {gas_key(k): v for k, v in value.items()}
        if any(v <= 0 for v in out.values()):
            raise ValueError("full scale must be above 0 sccm")
        return out


async def close_o2_and_n2(
    name: str, lines: Container[Gas], set_flow: Callable[[Gas, float], Awaitable[None]]
) -> None:
    """A gas dispenser's safe state: close O2 and N2, keep air and CO2 (the culture keeps its
    pH); tries both lines, then reports every failure at once."""
    failures: list[str] = []
    for gas in (Gas.O2, Gas.N2):
        if gas not in lines:
            continue
        try:
            await set_flow(gas, 0.0)
        except EquipmentError as exc:
            failures.append(f"{gas.name}: {exc}")
    if failures:
        raise EquipmentError(name, "safe state incomplete: " + "; ".join(failures))
