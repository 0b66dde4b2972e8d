"""Export for other tools: JSON re-verifies on its own, CSV opens in a spreadsheet."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from twin.cli import app
from twin.journal import GENESIS, Journal, event_hash

runner = CliRunner()


def small_journal(path: Path) -> Path:
    t = iter(range(100))
    j = Journal(path, lambda: float(next(t)), signer=None)
    j.append("batch_started", "batch", {"batch_id": "B-1", "recipe": {"id": "r", "text": "x"}})
    for i in range(5):
        values = {"temperature_c": 36.5 + i / 10, "gas": {"o2": 1.5 * i}}
        j.append("reading", "bioreactor", {"what": "pv", "values": values}, durable=False)
    j.append("setpoint", "bioreactor", {"parameter": "temperature_sp", "value": 37.0, "unit": "°C"})
    j.close()
    return path


def test_json_export_recomputes_to_the_same_chain(tmp_path: Path) -> None:
    path = small_journal(tmp_path / "j.sqlite")
    result = runner.invoke(
        app, ["export", str(path), "--format", "json", "-o", str(tmp_path / "e.json")]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["batch_id"] == "B-1" and doc["verification"]["ok"] and len(doc["events"]) == 7
    prev = GENESIS
    for e in doc["events"]:
        data = json.dumps(e["data"], sort_keys=True, separators=(",", ":"))
        digest = event_hash(
            prev, e["seq"], e["batch_time"], e["wall_time"], e["kind"], e["source"], data
        )
        assert digest == e["hash"]
        prev = digest


def test_csv_exports(tmp_path: Path) -> None:
    path = small_journal(tmp_path / "j.sqlite")
    assert runner.invoke(app, ["export", str(path), "-f", "csv"]).exit_code == 0
    rows = list(csv.DictReader((tmp_path / "j.csv").open()))
    assert [r["kind"] for r in rows][:2] == ["batch_started", "reading"]
    assert json.loads(rows[-1]["data"])["value"] == 37.0
    assert runner.invoke(app, ["export", str(path), "-f", "trends-csv"]).exit_code == 0
    trends = list(csv.DictReader((tmp_path / "j.trends.csv").open()))
    assert len(trends) == 5
    assert trends[0].keys() >= {"batch_time_s", "bioreactor.temperature_c", "bioreactor.gas.o2"}
    assert float(trends[4]["bioreactor.temperature_c"]) == 36.9


def test_export_of_a_broken_journal_is_written_but_says_so(tmp_path: Path) -> None:
    path = small_journal(tmp_path / "j.sqlite")
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE seq = 3")
    db.commit()
    db.close()
    result = runner.invoke(app, ["export", str(path), "-o", str(tmp_path / "e.json")])
    assert result.exit_code == 1
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["verification"]["ok"] is False and doc["verification"]["first_bad_seq"] == 3


def test_unknown_format_is_invalid_input(tmp_path: Path) -> None:
    path = small_journal(tmp_path / "j.sqlite")
    result = runner.invoke(app, ["export", str(path), "-f", "xml"])
    assert result.exit_code == 2 and not (tmp_path / "j.xml").exists()
