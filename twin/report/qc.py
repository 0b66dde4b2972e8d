"""QC lab results entered into a batch's journal, so the batch record can judge release.

The twin measures viability and CAR+ at harvest; CD3+, endotoxin and vector copy
number come from a QC lab days later. Each result is appended to the batch's own
journal (same chain, signed with the site key when one is set) as a ``qc_result``
event with who entered it, why and the lab's reference: an electronic record
like any operator action. A later entry for the same test supersedes the earlier
one in the release table; both stay in the journal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.access.entries import ended_journal
from twin.access.users import Signer
from twin.errors import InvalidInput, Problem
from twin.report.criteria import CRITERIA_BY_KEY

__all__ = ["QC_RESULT", "QcEntry", "parse_results", "record_qc_results", "result_data"]

#: Kind of the journal event that carries one QC lab result.
QC_RESULT = "qc_result"


@dataclass(frozen=True)
class QcEntry:
    """One result as entered: which release test, the value in the criterion's unit."""

    test: str
    value: float


#: A number as a lab writes it: ASCII digits, a point, an exponent (no '_', no other
#: script's digits, which ``float`` would take: '7_0' is 70 to it, '٩٠' 90).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _number(raw: str, unit: str) -> float | None:
    """The value of one result: a number, optionally followed by its unit; None otherwise
    (a second number, a word, a typo: never the first token of something else)."""
    text = raw.strip()
    match = _NUMBER.match(text)
    if match is None:
        return None
    rest = text[match.end() :].strip()
    if rest and rest.lower() != unit.lower():
        return None
    return float(match.group()) + 0.0  # -0 is 0


def parse_results(items: list[str]) -> list[QcEntry]:
    """``cd3=92.5`` style entries; every problem named at once, nothing recorded otherwise."""
    entries: list[QcEntry] = []
    problems: list[Problem] = []
    known = ", ".join(sorted(CRITERIA_BY_KEY))
    for n, item in enumerate(items, start=1):
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep:
            problems.append(Problem("--result", n, 1, f"'{item}': write TEST=VALUE, e.g. cd3=92.5"))
            continue
        if key not in CRITERIA_BY_KEY:
            problems.append(Problem("--result", n, 1, f"unknown test '{key}'; tests: {known}"))
            continue
        unit = CRITERIA_BY_KEY[key].unit
        value = _number(raw, unit)
        if value is None:
            problems.append(
                Problem(
                    "--result",
                    n,
                    1,
                    f"{key}: '{raw}' is not a number in {unit} (digits 0-9 and a point, "
                    f"optionally followed by '{unit}')",
                )
            )
            continue
        top = 100.0 if unit == "%" else 1e6
        if not (0.0 <= value <= top):  # also refuses NaN and inf
            problems.append(
                Problem("--result", n, 1, f"{key}: {raw.strip()} is outside 0-{top:g} {unit}")
            )
            continue
        if any(e.test == key for e in entries):  # the record would judge by the last one
            problems.append(
                Problem("--result", n, 1, f"{key} given twice: enter each test's result once")
            )
            continue
        entries.append(QcEntry(key, value))
    if not items:
        problems.append(Problem("--result", 1, 1, f"no result given; tests: {known}"))
    if problems:
        raise InvalidInput(problems)
    return entries


def record_qc_results(
    journal: Path,
    entries: list[QcEntry],
    *,
    person: Signer,
    reason: str,
    lab_ref: str = "",
    signer: Any = None,
) -> list[dict[str, Any]]:
    """Append one ``qc_result`` event per entry, each signed by ``person``; return their data.

    ``signer`` is the site key that signs the journal's head.
    """
    written = []
    with ended_journal(journal, "enter QC results", site_signer=signer) as ended:
        for entry in entries:
            name = CRITERIA_BY_KEY[entry.test].name
            data = result_data(
                entry,
                operator=person.user,
                meaning=f"{person.name} enters the QC result for {name}",
                reason=reason,
                lab_ref=lab_ref,
            )
            ended.append_signed(QC_RESULT, "qc", data, person)
            written.append(data)
    return written


def result_data(
    entry: QcEntry, *, operator: str, meaning: str, reason: str, lab_ref: str
) -> dict[str, Any]:
    """A ``qc_result`` event's data: the result against its release criterion."""
    c = CRITERIA_BY_KEY[entry.test]
    meets = entry.value >= c.limit if c.op == ">=" else entry.value <= c.limit
    return {
        "test": c.key,
        "name": c.name,
        "value": entry.value,
        "unit": c.unit,
        "criterion": c.text,
        "verdict": "pass" if meets else "fail",
        "lab_ref": lab_ref,
        "operator": operator,
        "meaning": meaning,
        "reason": reason,
    }
