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

__all__ = ["CRITERIA_BY_KEY", "RELEASE_CRITERIA", "Criterion", "Result", "judge_release"]

SOURCE = "ARI-0001 specification, PMC6319086 Table 2 (TWIN_MODELS.md)"


@dataclass(frozen=True)
class Criterion:
    """One release specification: a measured value compared with a limit."""

    key: str  # what a QC entry names it by (``poc-twin qc ... --result cd3=92``)
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
    Criterion("viability", "Viability", "%", ">=", 70.0, "viability_pct"),
    Criterion("car", "CAR+ (transduced)", "%", ">=", 20.0, "transduced_pct"),
    Criterion("cd3", "CD3+", "%", ">=", 70.0, None),
    Criterion("endotoxin", "Endotoxin", "EU/mL", "<=", 0.5, None),
    Criterion("vcn", "Vector copy number", "copies/cell", "<=", 10.0, None),
)
CRITERIA_BY_KEY = {c.key: c for c in RELEASE_CRITERIA}

_OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le}


def judge_release(
    harvest: dict[str, Any] | None,
    qc: dict[str, tuple[float, int]] | None = None,
    simulated: set[int] | frozenset[int] = frozenset(),
) -> list[Result]:
    """Each criterion judged from the QC lab's result when one is in the journal (the latest
    entry wins: a re-test supersedes), else from the harvest, else pending/not reached.
    ``simulated``: events of results the twin's simulated QC lab entered (so labelled)."""
    results = []
    qc = qc or {}
    for c in RELEASE_CRITERIA:
        if c.key in qc:
            value, seq = qc[c.key]
            verdict = "pass" if _OPS[c.op](value, c.limit) else "fail"
            lab = "twin's simulated QC lab" if seq in simulated else "QC"
            results.append(
                Result(c.name, f"{value:g} {c.unit}", c.text, verdict, f"{lab}, event {seq}")
            )
        elif harvest is None:
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
