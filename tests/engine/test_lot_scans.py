"""Material lot scans at a running batch's command address, as every client sends them (the
command line, the station, a script): the batch's own check decides, and journals the scan.
All on virtual time, against the twin over the wire."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from batch_harness import S, finished
from bedside import scanned_smoke
from site_users import PEOPLE

from twin.engine.inbox import send_command
from twin.engine.lots import LotScan, NoScanWanted, scan_from
from twin.report import build_record


async def scan(run: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """kim's signed scan of a container, sent as any client sends it."""
    return await send_command(
        run.journal.path,
        "scan-lot",
        operator="kim",
        password=PEOPLE["kim"][2],
        reason="activator container at the bedside",
        extra=extra,
    )


async def test_a_container_scanned_without_an_expiry_is_refused_and_journalled(
    running: Any, tmp_path: Path
) -> None:
    """No expiry, no dose: a GS1 label without AI 17 (as the command line parses it), a lot
    sent with no expiry or an empty one (a script), and an expiry before the batch date are
    each refused by the batch with why, journalled and signed, and the addition waits on; an
    expiry on the batch date itself is in date and doses."""
    run = await running(str(scanned_smoke(tmp_path, "lot: TA-2291")))
    asked = await run.until(lambda e: e.kind == "lot_requested")
    no_ai17 = scan_from("activator", "(01)09506000134352(10)TA-2291", None, None)
    assert no_ai17.expiry is None  # a label may lack it: the batch says no, not the parser
    today = run.clock.batch_datetime().date()
    sent = [
        no_ai17.record(),
        {"material": "activator", "lot": "TA-2291"},
        {"material": "activator", "lot": "TA-2291", "expiry": ""},
        {"material": "activator", "lot": "TA-2291", "expiry": str(today - timedelta(days=1))},
    ]
    replies = [await scan(run, extra) for extra in sent]
    assert [r["status"] for r in replies] == ["refused"] * 4, replies
    assert all("without an expiry date" in r["message"] for r in replies[:3]), replies
    assert "expired on" in replies[3]["message"]
    scans = run.kinds("lot_scan")
    assert [s.data["accepted"] for s in scans] == [False] * 4
    assert [s.data["expiry"] for s in scans[:3]] == [None] * 3
    assert all("without an expiry date" in s.data["refused"] for s in scans[:3])
    signed = {e.data["signed_seq"] for e in run.kinds("signature")}
    assert {s.seq for s in scans} <= signed, "each refused scan is kim's signed act"
    assert not [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_activator"]
    assert run.batch.status == "Running (waiting for a scan of the activator container)"
    # The batch date is the last day the container may be used.
    reply = await scan(run, {"material": "activator", "lot": "TA-2291", "expiry": str(today)})
    assert reply["status"] == "accepted", reply
    assert await finished(run) is S.COMPLETE
    dose = next(e for e in run.kinds("setpoint") if e.data["parameter"] == "add_activator")
    assert dose.data["lot"] == "TA-2291" and dose.seq > asked.seq
    assert run.kinds("lot_scan")[-1].data["expiry"] == str(today)
    # The record's exception counts the four refused scans and lists (or counts) each.
    run.journal.commit()
    record = build_record(run.journal.path)
    (line,) = [t for sev, t in record.exceptions if "material scan(s) refused" in t]
    assert line.count("lot scan refused: ") == 3  # listed: the first three ...
    assert line.endswith("; and 1 more (under Deviations)")  # ... and how many are not
    assert line.startswith("4 material scan(s) refused (wrong material or lot, expired or no")
    assert len([d for d in record.deviations if d.kind == "lot scan"]) == 4


async def test_a_scan_while_paused_is_told_the_addition_waits_for_the_batch(
    running: Any, tmp_path: Path
) -> None:
    """Paused (or held) while its addition waits for the scan, the batch takes none and says
    why: it is paused, the addition waits and asks again when resumed; nothing is journalled.
    Once resumed it asks again and takes the scan."""
    run = await running(str(scanned_smoke(tmp_path)))
    await run.until(lambda e: e.kind == "lot_requested")
    run.batch.command("pause", who="bob", why="shift change")
    await run.until_state(S.PAUSED)
    before = len(run.events)
    good = {"material": "activator", "lot": "TA-1", "expiry": "2099-12-31"}
    reply = await scan(run, good)
    assert reply["status"] == "refused" and reply["state"] == "Paused", reply
    assert reply["message"].startswith("the batch is Paused: its addition of activator waits")
    assert "no addition is waiting" not in reply["message"]
    assert not [e for e in run.events[before:] if e.kind in ("lot_scan", "signature")]
    run.batch.command("resume", who="bob", why="back")
    await run.until(lambda e: e.kind == "lot_requested" and e.seq > before)
    assert (await scan(run, good))["status"] == "accepted"
    assert await finished(run) is S.COMPLETE
    # Ended (its command address closed), the engine itself still says why it takes none.
    with pytest.raises(NoScanWanted, match=r"no addition is waiting .* \(the batch is Complete\)"):
        run.batch.present_lot(LotScan("activator", "TA-1", date(2099, 12, 31)), who="kim", why="x")


async def test_the_twins_simulated_person_scans_a_container_in_date(running: Any) -> None:
    """The twin's person at the bag scans what is asked for with an expiry after the batch
    date (a scan with none would be refused forever): the addition doses."""
    text = (
        Path(__file__)
        .resolve()
        .parents[2]
        .joinpath("recipes", "smoke.yaml")
        .read_text()
        .replace(
            "material: activator, volume_ml: 2.0}",
            "material: activator, volume_ml: 2.0, scan_lot: true}",
        )
    )
    run = await running("scanned.yaml", text=text, scan_after_s=600.0)
    assert await finished(run) is S.COMPLETE
    (accepted,) = run.kinds("lot_scan")
    assert accepted.data["accepted"] and accepted.data["expiry"] is not None
    assert accepted.data["expiry"] > str(run.clock.batch_datetime().date())


async def test_a_second_scan_in_the_same_turn_is_told_the_first_was_taken(
    running: Any, tmp_path: Path
) -> None:
    """A scanner that reads the label twice (or two people at the bag) within one loop turn:
    the first scan passes, and from that moment the batch waits for no person and asks for
    no scan; the second is told the first was taken, with its lot, and nothing of it is
    journalled. Before: the second was told the addition still waited for a scan."""
    run = await running(str(scanned_smoke(tmp_path)))
    await run.until(lambda e: e.kind == "lot_requested")
    assert run.batch.ctx.lots.waiting_for == "activator" and run.batch.awaiting_person
    label = LotScan("activator", "TA-1", date(2099, 12, 31))
    _, refused = run.batch.present_lot(label, who="kim", why="at the bag")
    assert refused is None
    assert run.batch.ctx.lots.waiting_for is None and not run.batch.awaiting_person
    with pytest.raises(NoScanWanted, match=r"accepted just now \(lot TA-1\)") as again:
        run.batch.present_lot(
            LotScan("activator", "TA-2", date(2099, 12, 31)), who="ann", why="at the bag too"
        )
    assert "waits for" not in str(again.value)
    assert await finished(run) is S.COMPLETE
    (taken,) = run.kinds("lot_scan")
    assert taken.data["lot"] == "TA-1" and taken.data["accepted"]
    (dose,) = [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_activator"]
    assert dose.data["lot"] == "TA-1"
