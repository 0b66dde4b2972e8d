"""The twin's simulated QC lab (issue 16): a twin batch's QC samples get results for what the
twin models (vector copies), entered after the batch as `twin:qc-lab`, unsigned; the record
judges the copy-number limit by them and says they are simulated; nothing else is made up."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from twin.bench import load_bench
from twin.cli import app
from twin.journal import read_events
from twin.recipe import load_recipe
from twin.replay import replay
from twin.replay.resume import resume
from twin.report.record import build_record
from twin.runner import run_batch

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "benches" / "sim.yaml"
EXE = str(Path(sys.executable).with_name("poc-twin"))


def transduced_smoke(folder: Path, vector_ml: float, qc: str = "[vcn, cd3, endotoxin]") -> Path:
    """The smoke recipe as a product (judged for release) with the identity confirmed, a
    vector dose, and its in-process sample sent to QC for ``qc``."""
    text = (
        (ROOT / "recipes" / "smoke.yaml")
        .read_text()
        .replace("  purpose: commissioning\n", "")
        .replace(
            "          - {phase: add, material: activator, volume_ml: 2.0}\n",
            "          - {phase: add, material: activator, volume_ml: 2.0}\n"
            "          - {phase: confirm_identity, on_failure: abort}\n"
            f"          - {{phase: add, material: vector, volume_ml: {vector_ml}}}\n",
        )
        .replace(
            "{phase: sample, name: in-process check, min_viability_pct: 50}",
            f"{{phase: sample, name: in-process check, min_viability_pct: 50, qc: {qc}}}",
        )
    )
    path = folder / f"transduced-{vector_ml:g}.yaml"
    path.write_text(text)
    return path


def _run(recipe: Path, journal: Path, *, qc_lab: bool, **kwargs: Any) -> Any:
    """Run on the twin with its person at the bag; return the twin's bag as harvested."""
    plant: dict[str, Any] = {}
    kwargs.setdefault("bedside_after_s", 0.0)
    final = run_batch(
        load_recipe(recipe),
        load_bench(SIM),
        journal,
        batch_id=journal.stem,
        operator="alice",
        patient_id="P-1",
        bag_id="BAG-1",
        qc_lab=qc_lab,
        on_bench=lambda opened, _clock: plant.update(twin=opened.twin.plant),
        **kwargs,
    )
    assert final.label == "Complete"
    return plant["twin"].bioreactor.harvested


@pytest.mark.parametrize("vector_ml", [5.0, 20.0])
def test_the_lab_reports_the_copies_the_twin_integrated(tmp_path: Path, vector_ml: float) -> None:
    journal = tmp_path / "j.sqlite"
    harvested = _run(transduced_smoke(tmp_path, vector_ml), journal, qc_lab=True)
    events = list(read_events(journal))
    ended = next(e for e in events if e.kind == "batch_ended")
    sample = next(e for e in events if e.kind == "sample" and e.data.get("qc_tests"))
    (result,) = [e for e in events if e.kind == "qc_result"]  # only the test the twin models
    assert result.seq > ended.seq  # a lab's results come after the batch
    assert result.data["test"] == "vcn" and result.data["operator"] == "twin:qc-lab"
    assert result.data["sample_seq"] == sample.seq
    # The aliquot was drawn minutes before the harvest: the bag's copies per cell then.
    assert harvested.vector_copies > 0.0
    assert result.data["value"] == pytest.approx(harvested.vector_copies, abs=0.011)
    assert not any(e.kind == "signature" for e in events)  # no site user: nothing signed
    assert replay(journal).identical  # the lab's entries are no engine decision


def test_an_overdose_of_vector_fails_the_copy_limit(tmp_path: Path) -> None:
    """A day of culture after 2 mL and after 250 mL of vector: copies per cell from the
    twin's integration, the overdose past the release limit (<= 10 copies/cell)."""
    values = {}
    for ml in (2.0, 250.0):
        recipe = transduced_smoke(tmp_path, ml)
        recipe.write_text(recipe.read_text().replace("duration_h: 6", "duration_h: 24"))
        journal = tmp_path / f"j{ml:g}.sqlite"
        _run(recipe, journal, qc_lab=True)
        (result,) = [e for e in read_events(journal) if e.kind == "qc_result"]
        values[ml] = result.data
    assert values[2.0]["verdict"] == "pass" and values[250.0]["verdict"] == "fail"
    assert values[2.0]["value"] < 10.0 < values[250.0]["value"]
    release = {r.name: r for r in build_record(tmp_path / "j250.sqlite").release}
    assert release["Vector copy number"].verdict == "fail"
    assert release["Vector copy number"].source.startswith("twin's simulated QC lab, event ")


def test_the_record_judges_copies_and_leaves_the_rest_pending(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    recipe = transduced_smoke(tmp_path, 5.0)
    ran = subprocess.run(
        [
            *(EXE, "run", str(recipe), "--bench", str(SIM), "--journal", str(journal), "-q"),
            *("--patient-id", "P-1", "--bag-id", "BAG-1", "--simulated-operator", "0"),
            "--simulated-qc-lab",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert subprocess.run([EXE, "verify", str(journal)], capture_output=True).returncode == 0
    record = build_record(journal)
    release = {r.name: r for r in record.release}
    assert release["Vector copy number"].verdict == "pass"
    assert release["CD3+"].verdict == "pending" and release["Endotoxin"].verdict == "pending"
    major = [text for level, text in record.exceptions if level == "major"]
    assert any("twin:qc-lab: qc result" in text for text in major), major
    started = next(read_events(journal))
    assert started.data["simulated_qc_lab"] is True


def test_without_the_lab_or_without_a_qc_sample_nothing_is_entered(tmp_path: Path) -> None:
    journal = tmp_path / "off.sqlite"
    _run(transduced_smoke(tmp_path, 5.0), journal, qc_lab=False)
    assert not [e for e in read_events(journal) if e.kind == "qc_result"]
    journal = tmp_path / "noqc.sqlite"
    _run(transduced_smoke(tmp_path, 5.0, qc="[sterility, mycoplasma]"), journal, qc_lab=True)
    assert not [e for e in read_events(journal) if e.kind == "qc_result"]


def test_a_real_bench_gets_no_simulated_lab(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("run", str(ROOT / "recipes" / "car_t_autologous.yaml")),
            *("--bench", str(ROOT / "benches" / "example-lab.yaml")),
            *("--journal", str(tmp_path / "j.sqlite"), "-q"),
            *("--patient-id", "P-1", "--bag-id", "BAG-1", "--simulated-qc-lab"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "--simulated-qc-lab" in result.output and "nothing started" in result.output
    assert not (tmp_path / "j.sqlite").exists()


def test_a_resumed_batch_keeps_its_simulated_people(tmp_path: Path) -> None:
    """Killed while it waited for the identity scan: `resume --restart` brings the twin's
    person at the bag and its QC lab back, as the batch was started; the scan comes from
    `twin:bedside` after the interruption, the lab's result after the end, and the whole
    resumed batch replays."""
    whole = tmp_path / "whole.sqlite"
    _run(transduced_smoke(tmp_path, 5.0), whole, qc_lab=True, bedside_after_s=60.0, pace=None)
    asked = next(e for e in read_events(whole) if e.kind == "identity_requested")
    killed = tmp_path / "killed.sqlite"
    shutil.copy(whole, killed)
    with sqlite3.connect(killed) as db:  # the process died right after asking for the scan
        db.execute("DELETE FROM events WHERE seq > ?", (asked.seq,))
    assert resume(killed, operator="carol", reason="power back", restart=True, pace=None).label == (
        "Complete"
    )
    events = list(read_events(killed))
    deviation = next(e for e in events if e.kind == "deviation")
    ended = next(e for e in events if e.kind == "batch_ended")
    (scan,) = [e for e in events if e.kind == "identity_confirmation"]
    assert scan.seq > deviation.seq and scan.data["operator"] == "twin:bedside"
    assert scan.data["match"]
    (result,) = [e for e in events if e.kind == "qc_result"]
    assert result.seq > ended.seq and result.data["operator"] == "twin:qc-lab"
    assert replay(killed).identical
