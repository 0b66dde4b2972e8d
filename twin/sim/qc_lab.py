"""The twin's simulated QC lab: results for the release tests the twin models, on its samples.

A batch's QC samples go to a lab whose results come days later and are entered by QA
(``poc-twin qc``). A batch on the twin has no lab, so its record left every QC-only
criterion pending and the vector copy limit (<= 10 copies/cell) could not be judged.
This lab is part of the simulated world like the twin's devices and its person at the
bag (:mod:`twin.sim.bedside`): ``poc-twin run --simulated-qc-lab`` attaches it, only to
a bench whose plant is the twin. It hears every journalled sample sent for QC, reads
the twin's true state at that moment (what a real lab measures in the retained
aliquot), and once the batch has ended enters one ``qc_result`` per test it can
answer, under the name ``twin:qc-lab``: not a site user, so unsigned, and the batch
record says the results are simulated.

It answers only what the twin models: vector copies per cell (lentiviral integration,
docs/twin/biology.md). CD3+, endotoxin, sterility and mycoplasma have no model in the
twin (no non-T cells, no contamination), so they stay pending in the record rather than
being made up. The assay's own error is not modelled (no cited figure in
TWIN_MODELS.md): the lab reports the twin's value at the assay's resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twin.access.esign import SIMULATED_PERSON
from twin.journal import Event, Journal
from twin.report.criteria import CRITERIA_BY_KEY
from twin.report.qc import QC_RESULT, QcEntry, result_data

__all__ = ["MEASURES", "NAME", "TwinQcLab"]

#: What the journal names the simulated lab (no site user is named so).
NAME = f"{SIMULATED_PERSON}qc-lab"

#: The release tests the twin can answer: test -> (the twin's value, the assay's resolution).
MEASURES: dict[str, tuple[Callable[[Any], float], float]] = {
    "vcn": (lambda state: float(state.vector_copies), 0.01),
}


@dataclass(frozen=True)
class _Aliquot:
    """One QC sample as the lab received it: the sample event and what it measures."""

    sample_seq: int
    sample_name: str
    batch_time: float
    values: dict[str, float]


class TwinQcLab:
    """Subscribe :meth:`hear` to the journal; call :meth:`report` once the batch has ended."""

    def __init__(self, plant: Any) -> None:
        self.plant = plant
        self.aliquots: list[_Aliquot] = []

    def hear(self, event: Event) -> None:
        tests = event.data.get("qc_tests") if event.kind == "sample" else None
        if not tests:
            return
        state = self.plant.bioreactor.state  # the bag as it is when the sample is drawn
        values = {}
        for test in tests:
            if test in MEASURES:
                read, resolution = MEASURES[test]
                values[test] = round(round(read(state) / resolution) * resolution, 6)
        if values:
            name = str(event.data.get("name") or "sample")
            self.aliquots.append(_Aliquot(event.seq, name, event.batch_time, values))

    def report(self, journal: Journal) -> list[dict[str, Any]]:
        """Enter the results of every aliquot received (the latest sample's last, so it is
        the one the record judges release by); returns what was entered."""
        entered = []
        for aliquot in self.aliquots:
            for test, value in aliquot.values.items():
                data = result_data(
                    QcEntry(test, value),
                    operator=NAME,
                    meaning=f"the twin's simulated QC lab reports {CRITERIA_BY_KEY[test].name}",
                    reason=f"simulated QC of the {aliquot.sample_name} on the twin",
                    lab_ref=f"twin sample event {aliquot.sample_seq}",
                )
                data["sample_seq"] = aliquot.sample_seq
                journal.append(QC_RESULT, "qc", data)
                entered.append(data)
        return entered
