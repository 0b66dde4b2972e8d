"""Review by exception: what a QA reviewer must look at, worst first.

A clean batch reads "no exceptions" and the reviewer signs; anything else is
listed here with its severity, so nothing needing judgement hides in the detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twin.access.esign import SIMULATED_PERSON

if TYPE_CHECKING:
    from twin.report.record import BatchRecord

__all__ = ["SEVERITIES", "review_by_exception"]

#: critical: the record cannot support release; major: needs an investigation; minor: note.
SEVERITIES = ("critical", "major", "minor")


def _first(texts: list[str], shown: int = 3, sep: str = "; ", where: str = "Deviations") -> str:
    """The first ``shown`` of ``texts``, and how many more there are: a line that counts N
    lists N, or says how many more the record's table ``where`` lists."""
    left = len(texts) - shown
    listed = sep.join(texts[:shown])
    return f"{listed}{sep}and {left} more (under {where})" if left > 0 else listed


def review_by_exception(r: BatchRecord) -> list[tuple[str, str]]:
    """(severity, sentence) for each exception, critical first."""
    found: list[tuple[str, str]] = []
    chain = r.chain
    if not chain.ok:
        found.append(
            (
                "critical",
                f"Journal does NOT verify: event {chain.first_bad_seq} {chain.reason}; "
                f"only events 1-{chain.events} can be trusted.",
            )
        )
    sig = r.signatures
    if sig is not None and not sig.ok:
        found.append(
            ("critical", f"Signature check failed at event {sig.first_bad_seq}: {sig.reason}.")
        )
    for sentence in r.malformed:
        found.append(("critical", sentence[0].upper() + sentence[1:] + "."))
    if not r.ended:
        found.append(
            (
                "critical",
                f"The batch has no end in the journal (last state {r.final_state}): "
                "the process died or is still running.",
            )
        )
    elif r.final_state != "Complete":
        found.append(("critical", f"Batch ended {r.final_state}, not Complete."))
    for res in r.in_process + r.release:
        if res.verdict == "fail":
            found.append(("critical", f"{res.name}: {res.value} fails {res.criterion}."))
    for sentence in r.timing:
        found.append(("major", f"Timing: {sentence}."))
    for cut in r.harvest_cuts:
        found.append(("major", cut[0].upper() + cut[1:] + "."))
    short = [m.cut_short for m in r.materials if m.cut_short]
    if short:
        found.append(
            (
                "major",
                f"{len(short)} addition(s) cut short: " + _first(short, where="Materials"),
            )
        )
    if r.purpose == "product":
        unlotted = [m for m in r.materials if m.lot == "not recorded"]
        if unlotted:
            names = ", ".join(sorted({m.material for m in unlotted}))
            found.append(("minor", f"{len(unlotted)} addition(s) without a lot ({names})."))
    else:
        found.append(
            (
                "minor",
                f"A {r.purpose} batch: judged on running as written, not against release criteria.",
            )
        )
    interruptions = [d for d in r.deviations if d.kind == "interruption"]
    if interruptions:  # whatever state it died in (held too: then no new hold is opened)
        found.append(
            (
                "major",
                f"{len(interruptions)} interruption(s) of the batch process: "
                + _first([d.text for d in interruptions]),
            )
        )
    for sentence in r.ended_early:  # a unit procedure, operation or phase cut short
        found.append(("major", sentence[0].upper() + sentence[1:] + "."))
    holds = [d for d in r.deviations if d.kind == "hold"]  # at every level, each once
    if holds:
        found.append(("major", f"{len(holds)} hold(s): " + _first([d.text for d in holds])))
    if r.alarms:
        found.append(
            (
                "major",
                f"{len(r.alarms)} alarm(s) raised: " + _first([a.text for a in r.alarms]),
            )
        )
    unacknowledged = [a for a in r.alarms if a.seq not in r.acknowledged]
    if unacknowledged:
        found.append(
            (
                "major",
                f"{len(unacknowledged)} alarm(s) not acknowledged: "
                + _first([f"event {a.seq}" for a in unacknowledged], 5, ", ", "Alarms"),
            )
        )
    simulated = [a for a in r.actions if a.who.startswith(SIMULATED_PERSON)]
    if simulated:
        by_whom: dict[str, set[str]] = {}
        for a in simulated:
            by_whom.setdefault(a.who, set()).add(a.action.split(" (")[0])
        acts = "; ".join(f"{who}: {', '.join(sorted(a))}" for who, a in sorted(by_whom.items()))
        found.append(
            (
                "major",
                f"{len(simulated)} act(s) by the twin's simulated people ({acts}), "
                "not by a person: a simulated batch.",
            )
        )
    wrong = [d for d in r.deviations if d.kind == "lot scan"]
    if wrong:
        found.append(
            (
                "major",
                f"{len(wrong)} material scan(s) refused (wrong material or lot, expired or "
                "no expiry): " + _first([d.text for d in wrong]),
            )
        )
    refused = [d for d in r.deviations if d.kind == "refused command"]
    if refused:
        found.append(("major", f"{len(refused)} operator command(s) refused."))
    if r.header.get("recipe_status") not in (None, "approved"):
        found.append(
            ("major", f"Recipe status is '{r.header.get('recipe_status')}', not approved.")
        )
    pending = [res.name for res in r.release if res.verdict == "pending"]
    if pending:
        found.append(("minor", "QC results not in the journal: " + ", ".join(pending) + "."))
    if sig is not None and sig.checkpoints == 0:
        found.append(("minor", "Journal is not signed by a site key (hash chain only)."))
    elif sig is not None and sig.verified == 0 and sig.checkpoints:
        found.append(
            (
                "minor",
                f"{sig.checkpoints} signed checkpoint(s) present but not checked "
                "(no public key given).",
            )
        )
    if r.unsigned:
        found.append(
            (
                "minor",
                f"{len(r.unsigned)} act(s) by a person without an e-signature "
                f"({', '.join(r.unsigned[:5])}{', ...' if len(r.unsigned) > 5 else ''}): "
                "their identities are as recorded by the batch system, not authenticated.",
            )
        )
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: order[f[0]])
