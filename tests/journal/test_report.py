"""The batch record: what a QA reviewer sees, from a real batch and from a troubled one."""

from __future__ import annotations

import re
import shutil
import sqlite3
import struct
import subprocess
import unicodedata
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.journal import Journal, read_events
from twin.report import build_record, render_html

ROOT = Path(__file__).resolve().parents[2]
SMOKE = (ROOT / "recipes" / "smoke.yaml").read_text(encoding="utf-8")
#: The smoke recipe as if it made a product (judged against release criteria).
PRODUCT = SMOKE.replace("  purpose: commissioning\n", "").replace(
    "\nprocedure:",
    "\nmonitors:\n  - {name: culture temperature, pv: temperature_c, low: 35.0, high: 38.5}\n"
    "\nprocedure:",
)
runner = CliRunner()


@pytest.fixture(scope="module")
def smoke_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real batch of the smoke recipe on the twin (about 2 s)."""
    path = tmp_path_factory.mktemp("report") / "smoke-report.sqlite"
    result = runner.invoke(
        app,
        [
            *("run", str(ROOT / "recipes/smoke.yaml"), "--bench", str(ROOT / "benches/sim.yaml")),
            *("--journal", str(path), "--batch-id", "smoke-report", "--quiet"),
        ],
    )
    assert result.exit_code == 0, result.output
    return path


def troubled_journal(path: Path) -> Path:
    """A batch with a hold, an alarm, a refused command and a harvest that fails release."""
    clock = iter(float(t) for t in range(0, 100000, 60))
    j = Journal(path, lambda: next(clock), signer=None)
    recipe = {"id": "smoke", "version": "1.0.0", "status": "draft", "sha256": "ab" * 32}
    j.append(
        "batch_started",
        "batch",
        {
            "batch_id": "B-7",
            "operator": "alice",
            "patient_id": "P-0042",
            "recipe": {**recipe, "text": PRODUCT},
        },
    )
    j.append("transition", "procedure:smoke", {"from": "Idle", "to": "Running", "who": "alice"})
    j.append("setpoint", "bioreactor", {"parameter": "temperature_sp", "value": 37.0, "unit": "°C"})
    for i in range(20):
        temp = 37.0 if i < 10 else 39.5
        j.append(
            "reading",
            "bioreactor",
            {"what": "pv", "values": {"temperature_c": temp}},
            durable=False,
        )
    j.append(
        "alarm", "bioreactor", {"alarm": "temperature high", "message": "temperature 39.5 > 38"}
    )
    j.append(
        "command",
        "procedure:smoke",
        {
            "command": "hold",
            "operator": "bob",
            "accepted": True,
            "reason": "bag inspection",
            "meaning": "bob requests hold",
            "state": "Running",
        },
    )
    j.append(
        "transition",
        "procedure:smoke",
        {"from": "Running", "to": "Holding", "who": "bob", "why": "bag inspection"},
    )
    j.append("transition", "procedure:smoke", {"from": "Holding", "to": "Held", "who": "engine"})
    j.append(
        "command",
        "procedure:smoke",
        {
            "command": "pause",
            "operator": "carol",
            "accepted": False,
            "reason": "try",
            "state": "Held",
            "meaning": "carol requests pause",
        },
    )
    j.append("transition", "procedure:smoke", {"from": "Held", "to": "Running", "who": "bob"})
    j.append(
        "harvest",
        "bioreactor",
        {"volume_ml": 98.0, "viable_cells": 1e8, "viability_pct": 65.0, "transduced_pct": 31.0},
    )
    j.append(
        "transition", "procedure:smoke", {"from": "Running", "to": "Complete", "who": "engine"}
    )
    j.append("batch_ended", "batch", {"state": "Complete"})
    j.close()
    return path


def test_an_alarms_hold_on_a_held_batch_is_no_operator_refusal(tmp_path: Path) -> None:
    """A monitor's hold (or the engine's) refused because the batch is held already is
    listed, but not counted as an operator's command refused."""
    path = troubled_journal(tmp_path / "t.sqlite")
    j = Journal.reopen(path, lambda: 9000.0)
    for who in ("alarm:culture temperature", "engine"):
        j.append(
            "command",
            "procedure:smoke",
            {
                "command": "hold",
                "operator": who,
                "reason": "39.5 > 38",
                "accepted": False,
                "state": "Held",
                "level": "procedure",
            },
        )
    j.close()
    record = build_record(path)
    exceptions = "\n".join(f"{sev}: {text}" for sev, text in record.exceptions)
    assert "major: 1 operator command(s) refused" in exceptions  # the person's, as before
    listed = [d for d in record.deviations if d.kind == "reaction not needed"]
    assert [d.text.split(" refused")[0] for d in listed] == [
        "hold by alarm:culture temperature",
        "hold by engine",
    ]


def test_an_interruption_while_held_is_an_exception_of_its_own(tmp_path: Path) -> None:
    """A process that died while the batch was Held opens no new hold on resume (the
    engine's hold is not needed): the interruption itself is still on top for QA."""
    path = troubled_journal(tmp_path / "t.sqlite")
    j = Journal.reopen(path, lambda: 9000.0)
    message = "batch process interrupted after event 40 for 600 s; resumed in Held"
    j.append(
        "deviation",
        "batch",
        {"deviation": "interruption", "message": message, "operator": "sam", "reason": "power"},
    )
    j.close()
    record = build_record(path)
    exceptions = [text for sev, text in record.exceptions if sev == "major"]
    assert f"1 interruption(s) of the batch process: {message}" in exceptions


def test_troubled_batch_puts_every_exception_on_top(tmp_path: Path) -> None:
    record = build_record(troubled_journal(tmp_path / "t.sqlite"))
    exceptions = "\n".join(f"{sev}: {text}" for sev, text in record.exceptions)
    assert record.exceptions[0][0] == "critical"
    assert "critical: Viability: 65.0 % fails ≥ 70 %" in exceptions
    assert "major: 1 hold(s): bag inspection" in exceptions
    assert "major: 1 alarm(s) raised: temperature 39.5 > 38" in exceptions
    assert "major: 1 operator command(s) refused" in exceptions
    assert "Recipe status is 'draft'" in exceptions
    html = render_html(record)
    assert "P-0042" in html and "bob requests hold" in html and "bag inspection" in html
    # the journal has no reason for the start, the Held and the restart: the record says so
    timeline = html[html.index('<h2 id="timeline">') : html.index("<h3>Unit procedures")]
    assert timeline.count("<td>NO REASON RECORDED</td>") == 4
    assert html.index("Review by exception") < html.index("Batch identification")
    temp = next(s for s in record.series if s.key == "bioreactor.temperature_c")
    assert temp.setpoint == [(120.0, 37.0)] and len(temp.points) == 20
    assert record.holds and record.holds[0][1] is not None  # hold span closed at restart
    assert html.count('class="alarm"') == 1
    # trends under the names an engineer uses, with the monitors' alarm limits drawn
    assert "Temperature (bioreactor)" in html and 'class="mono">bioreactor.temperature_c' in html
    assert html.count('class="limit"') == 2
    assert "culture temperature high 38.5" in html and "culture temperature low 35" in html
    # bob's hold and carol's refused pause were signed by no one; alice's start needs none
    assert (
        "minor: 2 act(s) by a person without an e-signature (event 25 (command by bob), "
        "event 28 (command by carol)): their identities are as recorded by the batch system, "
        "not authenticated." in exceptions
    )


def test_tampered_journal_report_is_written_marked_and_exits_1(tmp_path: Path) -> None:
    path = troubled_journal(tmp_path / "t.sqlite")
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET data=replace(data, '65.0', '85.0') WHERE kind='harvest'")
    db.commit()
    db.close()
    out = tmp_path / "t.html"
    result = runner.invoke(app, ["report", str(path), "-o", str(out)])
    assert result.exit_code == 1
    html = out.read_text(encoding="utf-8")
    assert "JOURNAL DOES NOT VERIFY" in html and "Journal does NOT verify" in html


def test_real_batch_report_is_self_contained_and_complete(smoke_journal: Path) -> None:
    out = smoke_journal.with_suffix(".html")
    result = runner.invoke(app, ["report", str(smoke_journal), "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external resources"
    assert "<script" not in html
    for heading in (
        "Review by exception",
        "Batch identification",
        "Timeline of states",
        "Trends",
        "Operator actions",
        "Deviations",
        "In-process results",
        "Release results",
        "Journal integrity",
    ):
        assert heading in html
    assert "Commissioning smoke test" in html  # product from the recipe recorded at start
    # On the (development) sim bench the approval is the recipe's own word, not checked
    # against the site's register: the record says so (an edited copy of an approved
    # recipe showed its approval as if it covered the edited text).
    assert "does not check it against the site&#x27;s register" in html or (
        "does not check it against the site's register" in html
    )
    assert html.count("<svg") >= 8  # temperature, DO, pH, rocking, perfusion, VCD, volume, gases
    assert "Journal verified" in html
    # The smoke batch commissions the bench: no release criteria, so no "CAR+ 0.3 % fails".
    record = build_record(smoke_journal)
    assert record.release == [] and record.purpose == "commissioning"
    assert not any(severity == "critical" for severity, _ in record.exceptions)
    assert record.timing == []  # a batch that ran as planned has no timing anomaly


def test_every_transition_says_why(smoke_journal: Path) -> None:
    """The engine gives every state change of the procedure, unit, operations and phases a
    reason, and the record shows each under Why."""
    transitions = [e for e in read_events(smoke_journal) if e.kind == "transition"]
    kinds = {e.source.partition(":")[0] for e in transitions}
    assert kinds == {"procedure", "unit", "operation", "phase"}
    assert [e.source for e in transitions if not e.data.get("why")] == []
    html = render_html(build_record(smoke_journal))
    table = html[html.index("<h3>Unit procedures, operations and phases</h3>") :]
    table = table[: table.index("</table>")]
    assert "<th>Why</th>" in table and "NO REASON RECORDED" not in table
    assert "<td>unit expansion_bioreactor</td>" in table
    assert "Complete: all its operations complete" in table  # the unit procedure
    assert table.count("Complete: all its phases complete") == 3  # its three operations
    assert table.count("Complete: phase logic finished") == 7  # the smoke recipe's phases


def test_an_engineers_signed_start_is_with_the_signatures(smoke_journal: Path) -> None:
    """On the twin (a development bench) the start is eve's signed act: the record shows
    her signature with review and approval, and with every act signed, names no unsigned
    act."""
    record = build_record(smoke_journal)
    assert [(who, meaning) for meaning, who, _, _ in record.start_signatures] == [
        ("Eve Eng (eve)", "Batch started on sim (run-development): performed")
    ]
    html = render_html(record)
    approval = html[html.index('<h2 id="approval">') :]
    assert "Eve Eng (eve)" in approval and "run-development" in approval
    assert "QA review" in approval and "QP / release" in approval  # still to be signed
    assert record.unsigned == []
    assert not any("e-signature" in text for _, text in record.exceptions)


def _png_is_drawn(png: bytes) -> bool:
    """A rendered page has many distinct pixel bytes; a blank one has a handful."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat))) > 50


def test_report_renders_in_a_real_headless_browser(smoke_journal: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip(
            "chromium not installed (Debian: apt-get install -y chromium fonts-dejavu-core)"
        )
    html = tmp_path / "record.html"
    assert runner.invoke(app, ["report", str(smoke_journal), "-o", str(html)]).exit_code == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,3000"]
    shot = tmp_path / "record.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=60
    )
    assert shot.exists(), "chromium wrote no screenshot"
    assert _png_is_drawn(shot.read_bytes())
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=60
    ).stdout
    assert "Review by exception" in dom and dom.count("<polyline") >= 8


def test_the_record_says_what_was_made_with_what(tmp_path: Path) -> None:
    """Materials with their lots and how a dose was worked out, each device's identity, the
    outcome; a commissioning recipe is judged as commissioning, not against release."""
    journal = tmp_path / "lots.sqlite"
    argv = ["run", str(ROOT / "recipes/smoke.yaml"), "--journal", str(journal), "-q"]
    result = runner.invoke(app, [*argv, "--lot", "activator=ACT-2026-77"])
    assert result.exit_code == 0, result.output
    record = build_record(journal)
    assert [(m.material, m.volume_ml, m.lot) for m in record.materials] == [
        ("activator", 2.0, "ACT-2026-77")
    ]
    assert {row[0] for row in record.equipment} == {"bioreactor", "gas", "electroporator"}
    assert all(row[3] for row in record.equipment)  # a serial number for every device
    outcome = dict(record.outcome)
    assert outcome["Harvest volume"].endswith(" mL") and "Fold expansion" in outcome
    assert record.purpose == "commissioning" and record.release == []
    texts = [text for _, text in record.exceptions]
    assert any("commissioning batch: judged on running as written" in t for t in texts)
    assert not any("fails" in t for t in texts)
    html = render_html(record)
    assert "ACT-2026-77" in html and "TWIN-RB-0001" in html
    assert "not judged against release criteria" in html
    bad = runner.invoke(app, [*argv[:2], "--journal", str(tmp_path / "x.sqlite"), "--lot", "x=1"])
    assert bad.exit_code == 2 and "MATERIAL=LOT" in bad.output


def test_timing_anomalies_are_exceptions(tmp_path: Path) -> None:
    """A 79-day pause, a 30-hour hold and a 6-hour culture that took 1,881 hours are each
    raised for the reviewer, not left in the timeline."""
    times = iter(
        [0, 0, 60, 120, 108_120, 108_180, 108_240, 6_934_240, 6_934_300, 6_771_660, 6_771_700]
    )
    j = Journal(tmp_path / "slow.sqlite", lambda: float(next(times)), signer=None)
    recipe = {"id": "smoke", "version": "1.0.0", "status": "draft", "sha256": "ab" * 32}
    j.append("batch_started", "batch", {"batch_id": "B-8", "recipe": {**recipe, "text": PRODUCT}})
    culture = "phase:expansion_bioreactor/culture/2:culture"
    for source, to in [
        ("procedure:smoke", "Running"),
        (culture, "Running"),
        ("procedure:smoke", "Holding"),  # 120 s
        ("procedure:smoke", "Running"),  # 108,120 s: a 30 h hold
        ("procedure:smoke", "Pausing"),
        ("procedure:smoke", "Paused"),
        ("procedure:smoke", "Running"),  # 6,934,240 s: a 79-day pause
        (culture, "Complete"),
    ]:
        j.append("transition", source, {"from": "?", "to": to, "who": "kim", "why": "x"})
    j.close()
    record = build_record(tmp_path / "slow.sqlite")
    timing = [text for sev, text in record.exceptions if text.startswith("Timing")]
    assert any("a hold of 30.0 h" in t for t in timing), timing
    assert any("a pause of 79.0 days" in t for t in timing), timing
    assert any("phase culture took 80.3 days of 6.0 h planned" in t for t in timing), timing
    assert all(sev == "major" for sev, t in record.exceptions if t.startswith("Timing"))


def test_the_record_prints_to_pdf_and_every_section_is_on_its_pages(
    smoke_journal: Path, tmp_path: Path
) -> None:
    """`report --pdf`: headless Chromium prints the same record; read back page by page:
    A4, every page carries text, the sections in order, the signature block on a page of
    its own, the trends within the page width (their labels readable as text)."""
    from pypdf import PdfReader

    html, pdf = tmp_path / "record.html", tmp_path / "record.pdf"
    result = runner.invoke(app, ["report", str(smoke_journal), "-o", str(html), "--pdf", str(pdf)])
    assert result.exit_code == 0, result.output
    assert f"PDF {pdf}" in result.output
    pages = PdfReader(pdf).pages
    assert len(pages) >= 3
    texts = [unicodedata.normalize("NFKC", page.extract_text()) for page in pages]  # ﬁ -> fi
    for page, text in zip(pages, texts, strict=True):
        width_mm = float(page.mediabox.width) / 72 * 25.4
        assert abs(width_mm - 210) < 2  # A4 portrait
        assert len(text.strip()) > 50, "a blank page"
    whole = "\n".join(texts)
    order = [
        "Batch record",
        "Review by exception",
        "Batch identification",
        "Batch outcome",
        "Materials",
        "Equipment",
        "Trends",
        "Release results",
        "Review and approval",
    ]
    positions = [whole.find(heading) for heading in order]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), positions
    assert "smoke-report" in texts[0]
    assert texts[-1].lstrip().startswith("Review and approval")  # signatures on their own page
    assert "Dissolved oxygen (bioreactor)" in whole  # trend titles survive as text
    bad = runner.invoke(app, ["report", str(smoke_journal), "--pdf", str(tmp_path)])
    assert bad.exit_code == 2 and "is a directory" in bad.output


def test_report_o_file_pdf_is_the_record_as_pdf(smoke_journal: Path, tmp_path: Path) -> None:
    """`report JOURNAL -o FILE.pdf` (CLI.md) prints the record to that PDF and writes no
    HTML anywhere. Before, HTML was written under the .pdf name."""
    from pypdf import PdfReader

    where = tmp_path / "out"
    where.mkdir()
    journal = tmp_path / "batch.sqlite"
    journal.write_bytes(smoke_journal.read_bytes())
    for name in ("record.pdf", "RECORD.PDF"):
        pdf = where / name
        result = runner.invoke(app, ["report", str(journal), "-o", str(pdf)])
        assert result.exit_code == 0, result.output
        assert pdf.read_bytes()[:5] == b"%PDF-" and f"{pdf} (PDF)" in result.output
        assert "Batch record" in PdfReader(pdf).pages[0].extract_text()
    assert sorted(p.name for p in where.iterdir()) == ["RECORD.PDF", "record.pdf"]
    assert not list(tmp_path.glob("*.html"))  # nothing beside the journal either
    two = runner.invoke(
        app, ["report", str(journal), "-o", str(where / "a.pdf"), "--pdf", str(where / "b.pdf")]
    )
    assert two.exit_code == 2 and "two PDFs" in two.output


def dosed_journal(path: Path, text: str, parameters: dict[str, str] | None = None) -> Path:
    """A batch of the recipe ``text`` that harvested 3.2e9 viable cells, 40 % CAR+."""
    j = Journal(path, lambda: 0.0, signer=None)
    recipe = {"id": "car-t", "version": "1.3.0", "status": "approved", "sha256": "ab" * 32}
    recipe = {**recipe, "text": text, **({"parameters": parameters} if parameters else {})}
    j.append("batch_started", "batch", {"batch_id": "B-10", "recipe": recipe})
    harvest = {"volume_ml": 500.0, "viable_cells": 3.2e9, "viability_pct": 89.0}
    j.append("harvest", "bioreactor", {**harvest, "transduced_pct": 40.0}, at=8 * 86400.0)
    j.close()
    return path


def test_the_dose_available_for_the_patients_weight(tmp_path: Path) -> None:
    """The lentiviral recipe's target names the patient's weight (70 kg, or as the batch was
    run): the outcome shows the CAR+ viable cells per kg it can give; without one, no row."""
    lv = (ROOT / "recipes" / "car_t_autologous.yaml").read_text(encoding="utf-8")
    outcome = dict(build_record(dosed_journal(tmp_path / "lv.sqlite", lv)).outcome)
    assert outcome["CAR+ viable cells"] == "1.28e+09"  # 3.2e9 x 40 %
    assert outcome["Dose available"] == "1.83e+07 CAR+ viable cells/kg for 70 kg"
    child = dosed_journal(tmp_path / "child.sqlite", lv, {"patient_weight": "20 kg"})
    record = build_record(child)
    assert dict(record.outcome)["Dose available"] == "6.4e+07 CAR+ viable cells/kg for 20 kg"
    assert "6.4e+07 CAR+ viable cells/kg for 20 kg" in render_html(record)
    no_weight = dict(build_record(dosed_journal(tmp_path / "p.sqlite", PRODUCT)).outcome)
    assert "CAR+ viable cells" in no_weight and "Dose available" not in no_weight


def test_the_record_draws_a_phase_s_own_limits_over_the_span_it_ran(tmp_path: Path) -> None:
    """A monitor declared on the culture phase is drawn in the record's trend from that
    phase's start to its end, not across the batch; the recipe-wide limit stays whole."""
    text = (ROOT / "recipes" / "smoke.yaml").read_text()
    anchor = "            do_setpoint_pct: 40\n"
    recipe = tmp_path / "phase-monitors.yaml"
    recipe.write_text(
        text.replace(
            anchor,
            anchor + "            monitors:\n              - {name: culture pH, pv: ph, "
            "low: 6.9, high: 7.6}\n",
            1,
        )
    )
    journal = tmp_path / "j.sqlite"
    ran = CliRunner().invoke(app, ["run", str(recipe), "--journal", str(journal), "-q"])
    assert ran.exit_code == 0, ran.output
    record = build_record(journal)
    culture = next(p for p in record.phases if p["path"].endswith(":culture"))
    spans = record.phase_limits["bioreactor.ph"]
    assert sorted(label for label, *_ in spans) == ["culture pH high", "culture pH low"]
    assert all((start, end) == (culture["start"], culture["end"]) for _, _, start, end in spans)
    assert culture["end"] < record.end_time  # the harvest ran after it: a span, not the batch
    html = render_html(record)
    assert "culture pH high" in html and "culture pH low" in html


def test_an_exception_line_lists_what_it_counts_or_says_how_many_more(tmp_path: Path) -> None:
    """Four refused material scans and four alarms: each line quotes the first three and says
    how many more the Deviations table lists (it once said 4 and quoted 3, no word of the
    fourth); three quote all three and say no more."""
    path = troubled_journal(tmp_path / "t.sqlite")  # one alarm already
    j = Journal.reopen(path, lambda: 9000.0)
    for i in range(4):
        j.append(
            "lot_scan",
            "batch",
            {
                "material": "activator",
                "lot": f"TA-{i}",
                "expiry": None,
                "gtin": None,
                "operator": "kim",
                "reason": "at the bag",
                "accepted": False,
                "refused": f"lot TA-{i} scanned without an expiry date",
                "meaning": "lot scan refused",
            },
        )
    for i in range(2):
        j.append("alarm", "bioreactor", {"alarm": "do", "message": f"DO low {i}"})
    j.close()
    major = [text for sev, text in build_record(path).exceptions if sev == "major"]
    (scans,) = [t for t in major if "material scan(s) refused" in t]
    assert scans.startswith("4 material scan(s) refused")
    assert scans.count("lot scan refused: ") == 3 and "TA-3" not in scans
    assert scans.endswith("; and 1 more (under Deviations)")
    (alarms,) = [t for t in major if "alarm(s) raised" in t]
    assert alarms.startswith("3 alarm(s) raised") and "more" not in alarms
    assert alarms.endswith("temperature 39.5 > 38; DO low 0; DO low 1")
