"""QC lab results entered into a batch's journal, so the batch record can judge release.

The twin measures viability and CAR+ at harvest; CD3+, endotoxin and vector copy
number come from a QC lab days later. Each result is appended to the batch's own
journal (same chain, signed with the site key when one is set) as a ``qc_result``
event with who entered it, why and the lab's reference: an electronic record
like any operator action. A later entry for the same test supersedes the earlier
one in the release table; both stay in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.engine.inbox import command_address
from twin.errors import InvalidInput, JournalError, Problem
from twin.journal import Journal, read_events
from twin.report.criteria import CRITERIA_BY_KEY

__all__ = ["QC_RESULT", "QcEntry", "parse_results", "record_qc_results"]

#: Kind of the journal event that carries one QC lab result.
QC_RESULT = "qc_result"


@dataclass(frozen=True)
class QcEntry:
    """One result as entered: which release test, the value in the criterion's unit."""

    test: str
    value: float


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
        try:
            value = float(raw.strip().split()[0])
        except (ValueError, IndexError):
            problems.append(Problem("--result", n, 1, f"{key}: '{raw}' is not a number ({unit})"))
            continue
        top = 100.0 if unit == "%" else 1e6
        if not (0.0 <= value <= top):  # also refuses NaN and inf
            problems.append(
                Problem("--result", n, 1, f"{key}: {raw.strip()} is outside 0-{top:g} {unit}")
            )
            continue
        entries.append(QcEntry(key, value))
    if not items:
        problems.append(Problem("--result", 1, 1, f"no result given; tests: {known}"))
    if problems:
        raise InvalidInput(problems)
    return entries


async def _batch_is_running(journal: Path) -> bool:
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_unix_connection(path=command_address(journal))
        writer.close()
        return True
    return False


def record_qc_results(
    journal: Path,
    entries: list[QcEntry],
    *,
    operator: str,
    reason: str,
    lab_ref: str = "",
    signer: Any = None,
) -> list[dict[str, Any]]:
    """Append one ``qc_result`` event per entry to the batch's journal; return their data."""
    if asyncio.run(_batch_is_running(journal)):
        raise JournalError(
            f"{journal}: a batch process is still writing this journal; enter QC results "
            "after the batch has ended"
        )
    if not any(e.kind == "batch_started" for e in read_events(journal)):
        raise JournalError(f"{journal}: no batch in this journal")
    last = max((e.batch_time for e in read_events(journal)), default=0.0)
    book = Journal.reopen(journal, lambda: last, signer=signer)
    written = []
    try:
        for entry in entries:
            c = CRITERIA_BY_KEY[entry.test]
            data = {
                "test": c.key,
                "name": c.name,
                "value": entry.value,
                "unit": c.unit,
                "criterion": c.text,
                "verdict": "pass" if _meets(c.op, entry.value, c.limit) else "fail",
                "lab_ref": lab_ref,
                "operator": operator,
                "meaning": f"{operator} enters the QC result for {c.name}",
                "reason": reason,
            }
            book.append(QC_RESULT, "qc", data)
            written.append(data)
    finally:
        book.close()
    return written


def _meets(op: str, value: float, limit: float) -> bool:
    return value >= limit if op == ">=" else value <= limit
