"""The scripted person of an ensemble batch does what the recipe waits for, on batch time."""

from __future__ import annotations

from pathlib import Path

from bedside import scanned_smoke

from twin.ensemble.member import plan_members, run_member
from twin.journal import Event

ROOT = Path(__file__).resolve().parents[2]


def test_an_ensemble_batch_scans_the_containers_its_additions_wait_for(tmp_path: Path) -> None:
    recipe = scanned_smoke(tmp_path, "lot: TA-7")
    (plan,) = plan_members(
        recipe=str(recipe),
        bench=str(ROOT / "benches" / "sim.yaml"),
        batches=1,
        base_seed=5,
        variations=[],
        scan_delay_min=20.0,
    )
    seen: list[Event] = []
    result = run_member(plan, subscribers=[seen.append])
    assert result["outcome"]["state"] == "Complete"
    asked = next(e for e in seen if e.kind == "lot_requested")
    scan = next(e for e in seen if e.kind == "lot_scan")
    assert scan.data["lot"] == "TA-7" and scan.data["accepted"]
    assert scan.batch_time - asked.batch_time == 20 * 60.0  # the plan's delay, on batch time
    dose = next(e for e in seen if e.kind == "setpoint" and e.data["parameter"] == "add_activator")
    assert dose.data["lot"] == "TA-7"


def test_a_worker_runs_the_recipe_as_the_file_now_says(tmp_path: Path) -> None:
    """A worker parses a recipe once for all its batches, yet a recipe edited between two
    ensembles is run as edited (a long-lived Dask worker must not keep the old one)."""
    lots = []
    for lot in ("TA-7", "TA-8"):
        recipe = scanned_smoke(tmp_path, f"lot: {lot}")  # the same file, rewritten
        (plan,) = plan_members(
            recipe=str(recipe),
            bench=str(ROOT / "benches" / "sim-in-process.yaml"),
            batches=1,
            base_seed=5,
            variations=[],
        )
        seen: list[Event] = []
        assert run_member(plan, subscribers=[seen.append])["outcome"]["state"] == "Complete"
        lots += [e.data["lot"] for e in seen if e.kind == "lot_scan"]
    assert lots == ["TA-7", "TA-8"]
