"""Monitors: delay filters spikes, deadband stops chattering, reactions hold or abort at the
level the recipe declares. Unit checks on a real journal, then whole batches on the twin."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from batch_harness import ROOT, finished

from twin.engine.alarms import Alarms
from twin.engine.states import ProceduralState
from twin.journal import Journal, read_events
from twin.recipe.monitors import Monitor

S = ProceduralState


class Clocked:
    def __init__(self) -> None:
        self.t = 0.0


def make_alarms(tmp_path: Path) -> tuple[Alarms, Journal, list[tuple[str, str]], Clocked]:
    clock = Clocked()
    journal = Journal(tmp_path / "a.sqlite", lambda: clock.t)
    reactions: list[tuple[str, str]] = []
    alarms = Alarms(journal, lambda m, msg: reactions.append((m.reaction, msg)))
    return alarms, journal, reactions, clock


def feed(alarms: Alarms, clock: Clocked, values: list[float], every_s: float = 60) -> None:
    for value in values:
        alarms.evaluate("bioreactor", {"temperature_c": value}, clock.t)
        clock.t += every_s


def kinds(journal: Journal) -> list[str]:
    journal.commit()
    return [e.kind for e in read_events(journal.path)]


def test_delay_filters_a_short_excursion(tmp_path: Path) -> None:
    alarms, journal, reactions, clock = make_alarms(tmp_path)
    alarms.activate(
        "recipe", [Monitor(pv="temperature_c", high=38.0, delay_min=5, reaction="hold")]
    )
    feed(alarms, clock, [37.0, 38.5, 38.6, 38.4, 37.0])  # 3 min above: shorter than 5
    assert reactions == [] and "alarm" not in kinds(journal)
    feed(alarms, clock, [38.5] * 7)  # 6 min above
    assert [r for r, _ in reactions] == ["hold"]
    assert "beyond high 38" in reactions[0][1]


def test_deadband_stops_chattering(tmp_path: Path) -> None:
    alarms, journal, _, clock = make_alarms(tmp_path)
    alarms.activate("recipe", [Monitor(pv="temperature_c", high=38.0, deadband=0.3)])
    feed(alarms, clock, [38.1, 37.9, 38.1, 37.8, 38.05, 37.6])
    assert kinds(journal) == ["alarm", "alarm_cleared"]  # raised once, cleared below 37.7
    assert alarms.raised == []


def test_low_limit_and_scope_end_clears(tmp_path: Path) -> None:
    alarms, journal, _, clock = make_alarms(tmp_path)
    alarms.activate("phase:x", [Monitor(pv="temperature_c", low=30.0)])
    feed(alarms, clock, [29.0])
    assert alarms.raised == ["bioreactor.temperature_c"]
    alarms.deactivate("phase:x")
    assert alarms.raised == [] and kinds(journal) == ["alarm", "alarm_cleared"]


def test_monitor_needs_a_limit() -> None:
    with pytest.raises(ValueError, match="needs a high or a low limit"):
        Monitor(pv="ph")
    with pytest.raises(ValueError, match="must be below"):
        Monitor(pv="ph", low=7.4, high=7.0)


SMOKE = (ROOT / "recipes" / "smoke.yaml").read_text()


def with_culture_monitor(monitor: str) -> str:
    return SMOKE.replace(
        "            sample_every_h: 2\n",
        f"            sample_every_h: 2\n            monitors:\n              - {monitor}\n",
    )


async def test_phase_level_hold_leaves_the_procedure_running(running: Any) -> None:
    # DO sits near 80 % before control pulls it to 40 %: a high limit of 70 trips at once.
    text = with_culture_monitor("{pv: do_pct, high: 70, delay_min: 2, reaction: hold_phase}")
    run = await running("phase-hold.yaml", text)
    await run.until(lambda e: e.kind == "alarm")
    step = run.batch.current
    await run.until(
        lambda e: (
            e.kind == "transition" and e.source == step.phase.element and e.data["to"] == "Held"
        )
    )
    assert run.batch.state is S.RUNNING  # the procedure runs on; only the phase is held
    assert step.phase.state is S.HELD
    # The phase's items get the hold the recipe declares (defaults): the bag stops its
    # additions (its own safe state), the gas dispenser stays under DO control.
    assert {e.source for e in run.kinds("safe_state")} == {"bioreactor"}
    assert {e.source for e in run.kinds("control_kept")} == {"gas"}
    assert run.batch.status == f"Running ({step.phase.element} Held)"
    with pytest.raises(Exception, match="not valid in state Held"):
        run.batch.command("hold", who="bob", why="again", level="phase")
    run.batch.command("restart", who="bob", why="DO understood", level="phase")
    assert await finished(run) is S.COMPLETE
    restarts = [e for e in run.kinds("command") if e.data["command"] == "restart"]
    assert restarts[0].data["level"] == "phase"


async def test_abort_reaction_aborts_the_batch(running: Any) -> None:
    text = with_culture_monitor("{pv: temperature_c, low: 36.9, high: 37.0, reaction: abort}")
    run = await running("abort.yaml", text)
    assert await finished(run) is S.ABORTED
    alarm = run.kinds("alarm")[0]
    assert alarm.data["reaction"] == "abort" and alarm.data["pv"] == "temperature_c"


async def test_reaction_none_only_records(running: Any) -> None:
    text = with_culture_monitor("{pv: do_pct, high: 70, reaction: none}")
    run = await running("none.yaml", text)
    assert await finished(run) is S.COMPLETE
    assert run.kinds("alarm") and run.kinds("alarm_cleared")


async def test_failure_propagates_as_declared(running: Any) -> None:
    text = SMOKE.replace(
        "{phase: sample, name: in-process check, min_viability_pct: 50}",
        "{phase: sample, name: in-process check, min_viability_pct: 99.5, on_failure: hold_unit}",
    )
    run = await running("unit.yaml", text)
    step = await run.until(lambda e: e.kind == "alarm")
    assert step.data["reaction"] == "hold_unit"
    await run.until(
        lambda e: e.kind == "transition" and e.source.startswith("unit:") and e.data["to"] == "Held"
    )
    assert run.batch.state is S.RUNNING
    run.batch.command("stop", who="qa", why="out of specification")
    assert await finished(run) is S.STOPPED


async def test_wait_until_condition_and_timeout(running: Any) -> None:
    text = SMOKE.replace(
        "          - {phase: add, material: activator, volume_ml: 2.0}\n",
        "          - {phase: add, material: activator, volume_ml: 2.0}\n"
        "          - {phase: wait, until: {pv: temperature_c, above: 36.5}, timeout_h: 12}\n"
        "          - {phase: wait, duration_h: 30 min}\n",
    )
    run = await running("wait.yaml", text)
    assert await finished(run) is S.COMPLETE
    done = [
        e for e in run.kinds("transition") if ":wait" in e.source and e.data["to"] == "Complete"
    ]
    assert len(done) == 2
    assert done[1].batch_time - done[0].batch_time == pytest.approx(1800, abs=61)

    never = SMOKE.replace(
        "          - {phase: add, material: activator, volume_ml: 2.0}\n",
        "          - {phase: wait, until: {pv: ph, below: 5}, timeout_h: 2, on_failure: abort}\n",
    )
    run2 = await running("never.yaml", never)
    assert await finished(run2) is S.ABORTED
    assert "not reached within 2 h" in run2.kinds("alarm")[0].data["message"]


async def test_ph_control_by_co2(running: Any) -> None:
    """pH held at 7.15 by raising CO2 from the 5 % base (bicarbonate buffer, TWIN_MODELS.md)."""
    text = SMOKE.replace(
        "            sample_every_h: 2\n",
        "            sample_every_h: 2\n            ph_setpoint: 7.15\n",
    )
    run = await running("ph.yaml", text)
    assert await finished(run) is S.COMPLETE
    ph = [e.data["values"]["ph"] for e in run.kinds("reading") if "ph" in e.data["values"]]
    assert ph[0] > 7.25  # where 5 % CO2 leaves it
    assert abs(sum(ph[-30:]) / 30 - 7.15) < 0.05  # held at the setpoint by the end
    co2 = [e.data["value"] for e in run.kinds("setpoint") if e.data["parameter"] == "co2_flow_sp"]
    assert max(co2) > 10.0  # more CO2 than the 10 sccm set at the start


async def test_a_pause_during_a_media_exchange_stops_the_line_until_the_batch_resumes(
    running: Any,
) -> None:
    """Paused mid-exchange for 2 h: the line goes back to its rate before the exchange for
    the pause and to the exchange rate after; the phase moves 50 mL in all (its Running
    time is 50 min). Before, the line ran on at the exchange rate through the pause,
    uncounted: 170 mL through the line for 50 mL asked."""
    text = SMOKE.replace(
        "          - {phase: sample, name: in-process check, min_viability_pct: 50}\n",
        "          - {phase: media_exchange, volume_ml: 50, rate_ml_per_h: 60}\n"
        "          - {phase: sample, name: in-process check, min_viability_pct: 50}\n",
    )
    run = await running("mx.yaml", text)
    start = await run.until_phase_running("media_exchange")
    await asyncio.sleep(20 * 60.0)
    run.batch.command("pause", who="bob", why="swap the waste bag")
    await run.until_state(S.PAUSED)
    paused_at = run.clock.now()
    await asyncio.sleep(2 * 3600.0)
    run.batch.command("resume", who="bob", why="bag swapped")
    assert await finished(run) is S.COMPLETE
    end = next(
        e
        for e in run.kinds("transition")
        if "media_exchange" in e.source and e.data["to"] == "Complete"
    )
    rates = [
        (e.batch_time, e.data["value"])
        for e in run.kinds("setpoint")
        if e.data["parameter"] == "perfusion_sp" and start.seq < e.seq <= end.seq
    ]
    # through the line at 1440 mL/d (60 mL/h): only while the phase ran, 50 min in all
    through = sum(
        (t1 - t0) / 3600.0 * 60.0 for (t0, r), (t1, _) in itertools.pairwise(rates) if r == 1440.0
    )
    assert through == pytest.approx(50.0, abs=1.1), rates
    stopped = [t for t, r in rates if r != 1440.0]
    assert any(t <= paused_at + 61.0 for t in stopped if t >= paused_at - 61.0), rates
    assert end.batch_time - start.batch_time == pytest.approx(50 * 60 + 2 * 3600, abs=180)


async def test_media_exchange_through_the_perfusion_line(running: Any) -> None:
    text = SMOKE.replace(
        "          - {phase: sample, name: in-process check, min_viability_pct: 50}\n",
        "          - {phase: media_exchange, volume_ml: 50, rate_ml_per_h: 60}\n"
        "          - {phase: sample, name: in-process check, min_viability_pct: 50}\n",
    )
    run = await running("mx.yaml", text)
    assert await finished(run) is S.COMPLETE
    perfusion = [
        e.data["value"] for e in run.kinds("setpoint") if e.data["parameter"] == "perfusion_sp"
    ]
    assert 1440.0 in perfusion  # 60 mL/h while exchanging
    start = next(
        e
        for e in run.kinds("transition")
        if "media_exchange" in e.source and e.data["to"] == "Running"
    )
    end = next(
        e
        for e in run.kinds("transition")
        if "media_exchange" in e.source and e.data["to"] == "Complete"
    )
    assert end.batch_time - start.batch_time == pytest.approx(3000, abs=90)  # 50 mL at 60 mL/h
    assert perfusion[perfusion.index(1440.0) + 1] != 1440.0  # the previous rate is restored
