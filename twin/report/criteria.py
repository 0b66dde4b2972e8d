"""Release criteria a batch record is judged against (../shared/design/TWIN_MODELS.md).

The example specification of ARI-0001 (PMC6319086 Table 2): what the twin
measures (viability, CAR+) is judged from the harvest; what only a QC lab
measures (CD3+, endotoxin, vector copies) stays "pending" until results are
entered, so the record never claims a release it cannot support.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RELEASE_CRITERIA", "Criterion", "Result", "judge_release"]

SOURCE = "ARI-0001 specification, PMC6319086 Table 2 (TWIN_MODELS.md)"


@dataclass(frozen=True)
class Criterion:
    """One release specification: a measured value compared with a limit."""

    name: str
    unit: str
    op: str  # ">=" or "<="
    limit: float
    harvest_key: str | None  # where the twin records it; None: measured by QC only

    @property
    def text(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.limit:g} {self.unit}".strip()


@dataclass(frozen=True)
class Result:
    """A value against its criterion: pass, fail, pending (not measured) or info."""

    name: str
    value: str
    criterion: str
    verdict: str
    source: str = ""


RELEASE_CRITERIA = (
    Criterion("Viability", "%", ">=", 70.0, "viability_pct"),
    Criterion("CAR+ (transduced)", "%", ">=", 20.0, "transduced_pct"),
    Criterion("CD3+", "%", ">=", 70.0, None),
    Criterion("Endotoxin", "EU/mL", "<=", 0.5, None),
    Criterion("Vector copy number", "copies/cell", "<=", 10.0, None),
)

_OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le}


def judge_release(harvest: dict[str, Any] | None) -> list[Result]:
    """Each criterion judged from the harvest event (or pending/not reached)."""
    results = []
    for c in RELEASE_CRITERIA:
        if harvest is None:
            results.append(Result(c.name, "—", c.text, "not reached", "no harvest in journal"))
        elif c.harvest_key is None or c.harvest_key not in harvest:
            results.append(Result(c.name, "—", c.text, "pending", "QC result not in journal"))
        else:
            value = float(harvest[c.harvest_key])
            ok = _OPS[c.op](value, c.limit)
            results.append(
                Result(c.name, f"{value:.1f} {c.unit}", c.text, "pass" if ok else "fail", "harvest")
            )
    if harvest is not None and "viable_cells" in harvest:
        car = float(harvest["viable_cells"]) * float(harvest.get("transduced_pct", 0.0)) / 100
        results.append(
            Result(
                "Viable CAR+ cells (dose basis)",
                f"{car:.3g}",
                "2e6/kg, max 2e8 (axi-cel label)",
                "info",
                "dose drawn at release against the patient's weight",
            )
        )
    return results
