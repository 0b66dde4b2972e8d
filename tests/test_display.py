"""The live panel shows what an operator must see: a phase held under a running procedure,
a batch waiting for the identity scan, and every reading while the batch waits on a person."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from twin.display import BatchDisplay
from twin.journal import Event
from twin.station.board import BatchBoard


def event(seq: int, t: float, kind: str, source: str, data: dict[str, Any]) -> Event:
    return Event(seq, t, "2026-12-04T00:00:00+00:00", kind, source, data, "", "")


def transition(seq: int, t: float, source: str, to: str) -> Event:
    return event(seq, t, "transition", source, {"from": "", "to": to, "command": "", "who": ""})


def reading(seq: int, t: float, do_pct: float) -> Event:
    values = {"do_pct": do_pct, "temperature_c": 37.0, "ph": 7.2, "viable_cells_per_ml": 1e6}
    return event(seq, t, "reading", "bioreactor", {"what": "pv", "values": values})


def test_a_held_phase_and_an_awaited_scan_are_shown_at_procedure_level() -> None:
    out = io.StringIO()
    with BatchDisplay(Console(file=out, width=120), "B1") as display:
        display(transition(1, 0.0, "procedure:p", "Running"))
        display(transition(2, 10.0, "phase:u/o/1:culture", "Running"))
        display(transition(3, 20.0, "phase:u/o/1:culture", "Held"))
        assert display.shown_state == "Running (phase:u/o/1:culture Held)"
        display(transition(4, 30.0, "phase:u/o/1:culture", "Restarting"))
        display(transition(5, 31.0, "phase:u/o/1:culture", "Running"))
        assert display.shown_state == "Running"
        display(event(6, 40.0, "identity_requested", "batch", {}))
        assert display.shown_state == "Running (waiting for the identity scan)"
        display(event(7, 50.0, "identity_confirmation", "batch", {"match": True}))
        assert display.shown_state == "Running"


def test_the_scan_is_no_longer_shown_as_awaited_once_its_phase_stops_running() -> None:
    """The identity phase stopped (or held) while it asked: the request lapses with it, so
    the panel stops saying the batch waits for a scan (it asks again if the phase runs)."""
    out = io.StringIO()
    with BatchDisplay(Console(file=out, width=120), "B1") as display:
        display(transition(1, 0.0, "procedure:p", "Running"))
        display(transition(2, 10.0, "phase:u/o/1:confirm_identity", "Running"))
        display(event(3, 20.0, "identity_requested", "batch", {}))
        assert display.shown_state == "Running (waiting for the identity scan)"
        display(transition(4, 30.0, "phase:u/o/1:confirm_identity", "Stopping"))
        display(transition(5, 31.0, "phase:u/o/1:confirm_identity", "Stopped"))
        display(transition(6, 32.0, "phase:u/o/2:add", "Running"))
        assert display.shown_state == "Running"
        display(reading(7, 92.0, 40.0))
        display(reading(8, 152.0, 40.0))
        assert display.refreshes == 6  # running again: readings refresh hourly, not each
    board = BatchBoard(Path("B1.sqlite"))  # the operator station's view, from the journal
    for seq, (t, source, to) in enumerate(
        [(0.0, "procedure:p", "Running"), (10.0, "phase:u/o/1:confirm_identity", "Running")], 1
    ):
        board.apply(transition(seq, t, source, to))
    board.apply(event(3, 20.0, "identity_requested", "batch", {}))
    assert board.shown_state == "Running (waiting for the identity scan)"
    board.apply(transition(4, 30.0, "phase:u/o/1:confirm_identity", "Stopped"))
    assert board.shown_state == "Running"
    board.apply(transition(5, 40.0, "phase:u/o/2:add", "Running"))
    board.apply(event(6, 41.0, "lot_requested", "batch", {"material": "vector"}))
    assert board.shown_state == "Running (waiting for a scan of the vector container)"
    board.apply(transition(7, 50.0, "phase:u/o/2:add", "Held"))
    board.apply(transition(8, 60.0, "phase:u/o/2:add", "Running"))
    assert board.shown_state == "Running"  # until the phase asks again


def test_while_held_every_reading_is_shown() -> None:
    out = io.StringIO()
    with BatchDisplay(Console(file=out, width=120), "B1") as display:
        display(transition(1, 0.0, "procedure:p", "Running"))
        display(reading(2, 60.0, 40.0))
        assert display.refreshes == 1  # the transition; while running, readings refresh hourly
        display(transition(3, 120.0, "procedure:p", "Held"))
        display(reading(4, 180.0, 41.5))
        display(reading(5, 240.0, 42.5))
        assert display.refreshes == 4
        assert "42.5" in str(display.pv)


def test_unacknowledged_alarms_stay_on_the_panel_until_acknowledged() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160)
    with BatchDisplay(console, "B1") as display:
        display(transition(1, 0.0, "procedure:p", "Running"))
        display(event(2, 60.0, "alarm", "bioreactor", {"message": "DO 14 below low 15"}))
        display(event(3, 90.0, "alarm", "bioreactor", {"message": "temperature 39 above 38.5"}))
        display(event(4, 95.0, "alarm_cleared", "bioreactor", {"alarm": "do low"}))
        assert sorted(display.unacknowledged) == [2, 3]  # cleared is not acknowledged
        console.print(display.render())
        assert "2 alarm(s) not acknowledged (events 2, 3)" in out.getvalue()
        display(event(5, 99.0, "alarm_ack", "bioreactor", {"alarm_seq": 2, "user": "kim"}))
        assert sorted(display.unacknowledged) == [3]
        display(event(6, 99.0, "alarm_ack", "bioreactor", {"alarm_seq": 3, "user": "sam"}))
        out.truncate(0)
        console.print(display.render())
        assert "not acknowledged" not in out.getvalue()


def test_a_hold_below_stays_shown_while_the_procedure_is_paused_over_it() -> None:
    """As the batch's own status words it: "Paused (unit:u Held)", not a bare "Paused"
    that hides the unit's hold (the lower elements' mirrored pause is not shown)."""
    out = io.StringIO()
    with BatchDisplay(Console(file=out, width=120), "B1") as display:
        display(transition(1, 0.0, "procedure:p", "Running"))
        display(transition(2, 10.0, "unit:u", "Running"))
        display(transition(3, 10.0, "phase:u/o/1:culture", "Running"))
        display(transition(4, 20.0, "unit:u", "Held"))
        display(transition(5, 20.0, "phase:u/o/1:culture", "Held"))
        display(transition(6, 30.0, "procedure:p", "Pausing"))
        display(transition(7, 30.0, "procedure:p", "Paused"))
        assert display.shown_state == "Paused (unit:u Held)"
        display(transition(8, 40.0, "procedure:p", "Running"))
        assert display.shown_state == "Running (unit:u Held)"


def test_the_station_words_a_hold_below_as_the_batch_does() -> None:
    """The station's board: "Running (unit:u Held)", and "Paused (unit:u Held)" while the
    procedure is paused over it (it said "Running (u Held)", and a bare "Paused")."""
    board = BatchBoard(Path("b.sqlite"))
    for e in (
        transition(1, 0.0, "procedure:p", "Running"),
        transition(2, 10.0, "unit:u", "Running"),
        transition(3, 20.0, "unit:u", "Held"),
    ):
        board.apply(e)
    assert board.shown_state == "Running (unit:u Held)"
    board.apply(transition(4, 30.0, "procedure:p", "Paused"))
    assert board.shown_state == "Paused (unit:u Held)"
