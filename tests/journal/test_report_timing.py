"""Timing anomalies in the batch record: every wait on a person too long, every phase far past
its plan and a batch past the recipe's planned length is an exception for the reviewer."""

from __future__ import annotations

from pathlib import Path

from twin.control_site import plans
from twin.journal import Journal
from twin.recipe import load_recipe
from twin.report import build_record, render_html
from twin.report.timing import planned_hours

ROOT = Path(__file__).resolve().parents[2]
LV = (ROOT / "recipes" / "car_t_autologous.yaml").read_text(encoding="utf-8")
HOUR = 3600.0
GENE = "expansion_bioreactor/gene_transfer"
PROC = "procedure:car-t-autologous-lv"


def journal(path: Path, text: str, transitions: list[tuple[float, str, str]]) -> Path:
    """A batch of the recipe ``text`` with these (hour, element, to) transitions."""
    j = Journal(path, lambda: 0.0, signer=None)
    recipe = {"id": "car-t-autologous-lv", "version": "1.3.0", "status": "approved"}
    started = {"batch_id": "B-9", "recipe": {**recipe, "sha256": "ab" * 32, "text": text}}
    j.append("batch_started", "batch", started, at=0.0)
    j.append("transition", PROC, {"from": "Idle", "to": "Running", "why": "start"}, at=0.0)
    for hour, source, to in transitions:
        j.append("transition", source, {"from": "?", "to": to, "why": "x"}, at=hour * HOUR)
    j.close()
    return path


def timing(path: Path) -> list[str]:
    record = build_record(path)
    found = [text for sev, text in record.exceptions if text.startswith("Timing: ")]
    assert all(sev == "major" for sev, text in record.exceptions if text in found)
    assert all(text.removeprefix("Timing: ") in render_html(record) for text in found)
    return found


def test_the_dashboard_and_the_record_plan_a_batch_alike() -> None:
    """One estimate of a recipe's length: the lentiviral recipe plans 245.5 h at most (3 h to
    temperature, cultures of 1 d, 1 d and 8 d, a 2.5 h wash); a scan has no bound."""
    model = load_recipe(ROOT / "recipes" / "car_t_autologous.yaml").model
    assert plans.planned_hours is planned_hours
    assert planned_hours(model) == 245.5


def test_a_wait_of_twenty_days_inserted_is_an_exception(tmp_path: Path) -> None:
    """Planned by the recipe or not, a batch idling 20 days in a wait is for QA to judge."""
    text = LV.replace(
        "      - operation: expansion\n        phases:\n",
        "      - operation: expansion\n        phases:\n"
        "          - {phase: wait, name: idle, duration_h: 20 d}\n",
    )
    wait = "phase:expansion_bioreactor/expansion/1:idle"
    path = journal(tmp_path / "wait.sqlite", text, [(50, wait, "Running"), (530, wait, "Complete")])
    found = timing(path)
    assert found == [
        "Timing: phase idle idled the batch 20.0 days in a wait (planned, but longer than 24 h)."
    ]
    # the same wait of 20 h is no anomaly
    short = text.replace("duration_h: 20 d}", "duration_h: 20 h}")
    path = journal(
        tmp_path / "short.sqlite", short, [(50, wait, "Running"), (70, wait, "Complete")]
    )
    assert timing(path) == []


def test_nobody_scanning_identity_for_three_days_is_an_exception(tmp_path: Path) -> None:
    scan = f"phase:{GENE}/1:confirm_identity"
    path = journal(tmp_path / "id.sqlite", LV, [(24, scan, "Running"), (96, scan, "Complete")])
    assert timing(path) == [
        "Timing: phase confirm_identity waited 3.0 days for a person (the identity scan) "
        "from batch time 24.0 h (longer than 24 h)."
    ]
    # scanned after 20 hours: late, but within the day a person is given
    path = journal(tmp_path / "ok.sqlite", LV, [(24, scan, "Running"), (44, scan, "Complete")])
    assert timing(path) == []


def test_a_container_scan_nobody_makes_is_an_exception(tmp_path: Path) -> None:
    text = LV.replace("max_volume_ml: 15 mL}", "max_volume_ml: 15 mL, scan_lot: true}")
    add = f"phase:{GENE}/3:add"
    path = journal(tmp_path / "lot.sqlite", text, [(25, add, "Running"), (55, add, "Complete")])
    assert timing(path) == [
        "Timing: phase add waited 30.0 h for a person (the scan of the vector container) "
        "from batch time 25.0 h (longer than 24 h)."
    ]


def test_a_gene_transfer_culture_of_1881_hours_and_the_batch_past_its_plan(
    tmp_path: Path,
) -> None:
    culture = f"phase:{GENE}/4:culture"
    path = journal(
        tmp_path / "long.sqlite", LV, [(26, culture, "Running"), (1907, culture, "Complete")]
    )
    assert timing(path) == [
        "Timing: phase culture took 78.4 days of 24.0 h planned.",
        "Timing: the batch ran 79.5 days, past the 10.2 days the recipe plans at most.",
    ]


def test_a_step_of_minutes_taking_hours_and_a_phase_held_for_a_day(tmp_path: Path) -> None:
    """A harvest of five hours; a phase held on its own (the procedure running on) 30 h."""
    harvest = "phase:expansion_bioreactor/harvest/2:harvest"
    culture = f"phase:{GENE}/4:culture"
    path = journal(
        tmp_path / "slow.sqlite",
        LV,
        [
            (26, culture, "Running"),
            (30, culture, "Holding"),
            (30, culture, "Held"),
            (60, culture, "Restarting"),
            (60, culture, "Running"),
            (61, culture, "Complete"),
            (200, harvest, "Running"),
            (205, harvest, "Complete"),
        ],
    )
    assert timing(path) == [
        "Timing: a hold of phase culture of 30.0 h from batch time 30.0 h (longer than 24 h).",
        "Timing: phase culture took 35.0 h of 24.0 h planned.",
        "Timing: phase harvest took 5.0 h, a step the recipe plans in minutes.",
    ]


def test_a_hold_given_while_restarting_is_one_hold_not_one_to_the_end(tmp_path: Path) -> None:
    """Held 10 min, restarting, held again (a second person, or a resume) for 20 min, then
    running: one 30-min wait, no timing exception. Before, the first hold stayed open to
    the end of the batch: "a hold of 9.0 days"."""
    path = journal(
        tmp_path / "twice.sqlite",
        LV,
        [
            (42.0, PROC, "Holding"),
            (42.0, PROC, "Held"),
            (42.17, PROC, "Restarting"),
            (42.17, PROC, "Holding"),
            (42.17, PROC, "Held"),
            (42.5, PROC, "Restarting"),
            (42.5, PROC, "Running"),
            (240.0, PROC, "Complete"),
        ],
    )
    assert not [t for t in timing(path) if "hold" in t]
    record = build_record(path)
    assert [(round(a / HOUR, 2), round(b / HOUR, 2)) for a, b in record.holds] == [(42.0, 42.5)]


def test_a_unit_held_again_while_restarting_is_one_hold(tmp_path: Path) -> None:
    """The same below the procedure: a unit held, restarting, held again, running 30 min
    later: one hold, no "hold of the unit of N days"."""
    unit = "unit:expansion_bioreactor"
    path = journal(
        tmp_path / "unit.sqlite",
        LV,
        [
            (42.0, unit, "Holding"),
            (42.0, unit, "Held"),
            (42.17, unit, "Restarting"),
            (42.17, unit, "Holding"),
            (42.17, unit, "Held"),
            (42.5, unit, "Restarting"),
            (42.5, unit, "Running"),
            (240.0, PROC, "Complete"),
        ],
    )
    assert not [t for t in timing(path) if "hold" in t]


def test_a_unit_held_for_thirty_hours_is_one_long_wait_not_one_per_element(
    tmp_path: Path,
) -> None:
    """A hold of the unit is mirrored to its operation and phase as transitions: one wait on a
    person of 30 h, named at the unit (before: three, the unit's, the operation's and the
    phase's)."""
    unit, op = "unit:expansion_bioreactor", f"operation:{GENE}"
    culture = f"phase:{GENE}/4:culture"
    path = journal(
        tmp_path / "unit30.sqlite",
        LV,
        [
            (26.0, unit, "Running"),
            (26.0, op, "Running"),
            (26.0, culture, "Running"),
            (30.0, unit, "Holding"),
            (30.0, op, "Holding"),
            (30.0, culture, "Holding"),
            (30.0, unit, "Held"),
            (30.0, op, "Held"),
            (30.0, culture, "Held"),
            (60.0, unit, "Restarting"),
            (60.0, op, "Restarting"),
            (60.0, culture, "Restarting"),
            (60.0, unit, "Running"),
            (60.0, op, "Running"),
            (60.0, culture, "Running"),
        ],
    )
    assert [t for t in timing(path) if "hold" in t] == [
        "Timing: a hold of unit expansion_bioreactor of 30.0 h from batch time 30.0 h "
        "(longer than 24 h)."
    ]
