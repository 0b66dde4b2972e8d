"""Holds, stops and aborts below the procedure in the batch record and the run summary: real
smoke batches on the twin (virtual clock), a person acting at a unit, operation or phase.

A culture cut short and restarted on ends Complete: the record must still say which
element ended early, who ended it, when, why and how much of its culture ran; each hold of
an element is a deviation (who, why, how long); a hold mirrored down from above is one."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from twin.bench import load_bench
from twin.cli.batch import _print_summary
from twin.engine.batch import Batch
from twin.engine.states import ProceduralState
from twin.errors import CommandRefused
from twin.journal import Event
from twin.recipe import load_recipe
from twin.report import build_record, render_html
from twin.report.record import BatchRecord
from twin.runner import BatchSummary, run_batch, summarize

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0
CULTURE = "expansion_bioreactor/culture"  # the smoke recipe's culture operation
PHASE = f"{CULTURE}/2:culture"  # its 6 h culture phase
#: (seconds after the culture phase starts, command, level, who, why)
Script = list[tuple[float, str, str, str, str]]


def smoke(path: Path, script: Script) -> tuple[ProceduralState, BatchRecord, BatchSummary]:
    """A smoke batch; the script's commands given once its culture runs, and every hold of
    the procedure restarted by sam 10 min later (a decision on how to go on)."""
    batches: list[Batch] = []
    started: list[float] = []

    def give(command: str, level: str, who: str, why: str) -> None:
        with contextlib.suppress(CommandRefused):
            batches[0].command(command, who=who, why=why, level=level)

    def person(e: Event) -> None:
        if e.kind != "transition":
            return
        loop = asyncio.get_running_loop()
        if e.source == f"phase:{PHASE}" and e.data["to"] == "Running" and not started:
            started.append(e.batch_time)
            for after, command, level, who, why in script:
                loop.call_later(after, give, command, level, who, why)
        elif e.source.startswith("procedure:") and e.data["to"] == "Held":
            loop.call_later(600.0, give, "restart", "procedure", "sam", "go on to the harvest")

    final = run_batch(
        load_recipe(ROOT / "recipes" / "smoke.yaml"),
        load_bench(ROOT / "benches" / "sim.yaml"),
        path,
        batch_id=path.stem,
        operator="alice",
        seed=3,
        pace=None,
        subscribers=[person],
        on_batch=batches.append,
    )
    return final, build_record(path), summarize(path)


def major(record: BatchRecord, start: str) -> list[str]:
    return [t for sev, t in record.exceptions if sev == "major" and t.startswith(start)]


def element_rows(record: BatchRecord) -> list[tuple[str, str, str, str, str]]:
    """The timeline's rows of elements below the procedure: (element, from, to, who, why)."""
    return [row[1:] for row in record.states if row[1] != "procedure"]


def printed(summary: BatchSummary, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    _print_summary(summary, path)
    return " ".join(capsys.readouterr().out.split())


def test_an_operation_aborted_mid_culture_is_a_major_exception_though_the_batch_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case A: the culture operation aborted by bob 2 h into its 6 h culture; the engine holds
    the procedure for a decision, sam restarts it, the batch harvests and ends Complete.
    Before, the only trace in the review was the engine's hold: no deviation for the abort,
    nothing saying the culture ran 2 of 6 h, and the run summary said nothing of it."""
    path = tmp_path / "aborted.sqlite"
    final, record, summary = smoke(path, [(2 * HOUR, "abort", "operation", "bob", "bag leak")])
    assert final is ProceduralState.COMPLETE and record.final_state == "Complete"
    [ended] = major(record, f"Operation {CULTURE} aborted")
    assert ended.startswith(f"Operation {CULTURE} aborted by bob at batch time 2.2 h: bag leak")
    assert ended.endswith("(phase culture ran 2.0 h of the 6.0 h planned).")
    assert ended in render_html(record)
    # The abort and the engine's hold after it: two deviations (not one per element reached)
    kinds = [(d.kind, d.source) for d in record.deviations]
    assert kinds == [("abort", "bob"), ("hold", "engine")]
    assert record.deviations[0].text.startswith(f"operation {CULTURE} aborted: bag leak")
    [holds] = major(record, "1 hold(s): ")
    assert "held for a decision" in holds  # the engine's hold, as before
    assert element_rows(record) == [
        (f"operation {CULTURE}", "Running", "Aborting", "bob", "bag leak"),
        (f"operation {CULTURE}", "Aborting", "Aborted", "engine", f"operation:{CULTURE} aborted"),
    ]
    assert summary.ended_early == [
        f"operation {CULTURE} aborted by bob at batch time 2.2 h: bag leak"
    ]
    shown = printed(summary, path, capsys)
    assert "│ ended early │ operation" in shown and "aborted by bob" in shown


def test_a_culture_phase_stopped_early_says_how_much_of_it_ran(tmp_path: Path) -> None:
    """A stop at phase level (the 8-day culture stopped on day 5.8, here the 6 h one at 4 h)."""
    path = tmp_path / "stopped.sqlite"
    final, record, summary = smoke(path, [(4 * HOUR, "stop", "phase", "bob", "density reached")])
    assert final is ProceduralState.COMPLETE
    [ended] = major(record, f"Phase {PHASE} stopped")
    assert ended.startswith(f"Phase {PHASE} stopped by bob at batch time 4.2 h: density reached")
    assert ended.endswith("(it ran 4.0 h of the 6.0 h planned).")
    assert [(d.kind, d.source) for d in record.deviations] == [("stop", "bob"), ("hold", "engine")]
    assert [e.startswith(f"phase {PHASE} stopped by bob") for e in summary.ended_early] == [True]


def test_holds_of_a_phase_and_a_unit_are_deviations_with_who_why_and_how_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case B: the culture phase held 30 min, later the unit held 1 h, each restarted at its
    level. Before, the record named neither (exceptions, deviations and timeline all
    silent) and the run summary had no "held" row."""
    path = tmp_path / "held.sqlite"
    final, record, summary = smoke(
        path,
        [
            (0.5 * HOUR, "hold", "phase", "bob", "look at the bag"),
            (1.0 * HOUR, "restart", "phase", "sam", "bag fine"),
            (1.5 * HOUR, "hold", "unit", "bob", "tube kinked"),
            (2.5 * HOUR, "restart", "unit", "sam", "tube fixed"),
        ],
    )
    assert final is ProceduralState.COMPLETE
    phase_hold = f"phase {PHASE} held by bob for 30 min: look at the bag"
    unit_hold = "unit expansion_bioreactor held by bob for 1.0 h: tube kinked"
    assert [(d.kind, d.source, d.text) for d in record.deviations] == [
        ("hold", "bob", phase_hold),
        ("hold", "bob", unit_hold),
    ]
    assert major(record, "2 hold(s): ") == [f"2 hold(s): {phase_hold}; {unit_hold}"]
    assert [(el, to, who) for el, _, to, who, _ in element_rows(record)] == [
        (f"phase {PHASE}", "Holding", "bob"),
        (f"phase {PHASE}", "Held", "engine"),
        (f"phase {PHASE}", "Restarting", "sam"),
        (f"phase {PHASE}", "Running", "engine"),
        ("unit expansion_bioreactor", "Holding", "bob"),
        ("unit expansion_bioreactor", "Held", "engine"),
        ("unit expansion_bioreactor", "Restarting", "sam"),
        ("unit expansion_bioreactor", "Running", "engine"),
    ]
    assert "Timeline of states" in (html := render_html(record)) and unit_hold in html
    assert summary.hold_reasons == [
        f"phase {PHASE} by bob for 30 min: look at the bag",
        "unit expansion_bioreactor by bob for 1.0 h: tube kinked",
    ]
    assert printed(summary, path, capsys).count("│ held │") == 2


def test_a_hold_of_the_procedure_is_one_hold_not_one_per_element(tmp_path: Path) -> None:
    """A procedure hold is mirrored to the unit, operation and phase as transitions: one
    deviation, one "held" row, and the timeline shows the procedure's rows only."""
    path = tmp_path / "procedure.sqlite"
    final, record, summary = smoke(path, [(HOUR, "hold", "procedure", "bob", "bag inspection")])
    assert final is ProceduralState.COMPLETE
    assert [(d.kind, d.source, d.text) for d in record.deviations] == [
        ("hold", "bob", "bag inspection")
    ]
    assert major(record, "1 hold(s): ") == ["1 hold(s): bag inspection"]
    assert not element_rows(record) and not record.ended_early
    assert summary.hold_reasons == ["bag inspection"] and summary.ended_early == []


def test_an_abort_after_an_earlier_stop_does_not_claim_the_phase_that_stop_ended(
    tmp_path: Path,
) -> None:
    """The culture phase stopped at 2 h (it ran 2.0 h), the batch restarted on, and the unit
    aborted later: the abort ended no culture, so its line does not say how much of one ran.
    Before, it said "(phase culture ran 2.0 h of the 6.0 h planned)" again, as if the abort
    had cut the culture short."""
    path = tmp_path / "twice.sqlite"
    unit = CULTURE.split("/")[0]
    final, record, _ = smoke(
        path,
        [
            (2 * HOUR, "stop", "phase", "bob", "density reached"),
            # sam restarts the hold the stop brings 600 s on: the harvest's check then runs
            (2 * HOUR + 630, "abort", "unit", "sam", "bag leak"),
        ],
    )
    assert final is ProceduralState.ABORTED
    [stopped] = major(record, f"Phase {PHASE} stopped")
    assert stopped.endswith("(it ran 2.0 h of the 6.0 h planned).")
    [aborted] = major(record, f"Unit {unit} aborted by sam")
    assert "culture ran" not in aborted, aborted
