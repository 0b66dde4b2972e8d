"""The unit's control modules go on whatever the procedure does (ISA-88 basic control).

A held, paused or identity-waiting batch is still read every poll period, its monitors
checked and its DO loop acting; what a hold does to each item is what the recipe declares.
All on virtual time; the scripted operator acts on the batch clock.
"""

from __future__ import annotations

import asyncio
from statistics import mean
from typing import Any

import pytest
from batch_harness import ROOT, S, finished

from twin.equipment import Gas
from twin.errors import CommandRefused, EquipmentError

HOUR = 3600.0

#: A bag at the density of a day-8 CAR-T expansion (about 6e6 cells/mL in 500 mL).
DENSE_BENCH = (
    (ROOT / "benches" / "sim.yaml")
    .read_text()
    .replace(
        "inoculum: {volume_ml: 100, viable_cells_per_ml: 1.0e+6, viability_pct: 95}",
        "inoculum: {volume_ml: 500, viable_cells_per_ml: 6.0e+6, viability_pct: 92}",
    )
)

DENSE_CULTURE = """\
recipe: {id: dense-hold, product: test, version: 1.0.0, status: draft, author: test}
equipment:
  bioreactor: {type: bioreactor%(on_hold_br)s}
  gas: {type: gas_dispenser%(on_hold_gas)s}
monitors:
  - {name: culture temperature, pv: temperature_c, low: 35.0, high: 38.5, deadband: 0.2,
     delay_min: 30, reaction: hold}
procedure:
  - unit_procedure: expansion
    operations:
      - operation: culture
        phases:
          - {phase: set_rocking, rpm: 15}
          - {phase: set_gas, flows_sccm: {air: 190, co2: 10}}
          - {phase: set_temperature, setpoint_c: 37.0, tolerance_c: 0.5}
          - {phase: culture, duration_h: 48, do_setpoint_pct: 40}
          - {phase: harvest}
"""


def dense(on_hold_br: str = "", on_hold_gas: str = "") -> str:
    return DENSE_CULTURE % {
        "on_hold_br": f", on_hold: {on_hold_br}" if on_hold_br else "",
        "on_hold_gas": f", on_hold: {on_hold_gas}" if on_hold_gas else "",
    }


def values(run: Any, source: str, pv: str, after: float) -> list[float]:
    return [
        e.data["values"][pv]
        for e in run.kinds("reading")
        if e.source == source and e.batch_time >= after
    ]


async def hold_dense_culture(run: Any) -> float:
    """Let the DO loop settle for 6 h of culture, then hold the batch; returns when."""
    await run.until(
        lambda e: e.kind == "transition" and "4:culture" in e.source and e.data["to"] == "Running"
    )
    await run.clock.sleep(6 * HOUR)
    run.batch.command("hold", who="kim", why="overnight: supervisor to decide")
    await run.until_state(S.HELD)
    return run.clock.now()


async def test_a_held_dense_culture_stays_controlled_for_12_hours(running: Any) -> None:
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    held_at = await hold_dense_culture(run)
    await run.clock.sleep(12 * HOUR)
    assert run.batch.state is S.HELD
    # Read every minute all night: both devices, about 720 readings each.
    for source in ("bioreactor", "gas"):
        n = sum(1 for e in run.kinds("reading") if e.source == source and e.batch_time > held_at)
        assert 715 <= n <= 722, (source, n)
    # DO held at its setpoint by the cascade (the O2 line opened to meet a dense culture's
    # demand), temperature by the bag's own loop.
    do = values(run, "bioreactor", "do_pct", held_at + HOUR)
    assert 36.0 <= mean(do) <= 44.0 and min(do) > 30.0, (mean(do), min(do))
    temperature = values(run, "bioreactor", "temperature_c", held_at)
    assert all(36.5 <= t <= 37.5 for t in temperature)
    flows = [
        (e.data["parameter"], e.data["value"])
        for e in run.kinds("setpoint")
        if e.data["parameter"] in ("o2_flow_sp", "n2_flow_sp") and e.batch_time > held_at
    ]
    assert flows  # the loop acted during the hold
    # The recipe's default hold: the bag made safe (additions stop), the gas kept under control.
    assert [e.source for e in run.kinds("safe_state")] == ["bioreactor", "electroporator"]
    assert [e.source for e in run.kinds("control_kept")] == ["gas"]
    run.batch.command("restart", who="kim", why="supervisor: go on")
    assert await finished(run) is S.COMPLETE


async def test_a_hold_declared_safe_closes_o2_and_n2_and_do_drifts(running: Any) -> None:
    """The same night with the gas dispenser declared `on_hold: safe`: O2 and N2 closed, the
    loop stands off, and DO drifts far from its setpoint (why the default keeps control)."""
    run = await running("dense-safe.yaml", dense(on_hold_gas="safe"), bench_text=DENSE_BENCH)
    held_at = await hold_dense_culture(run)
    await run.clock.sleep(12 * HOUR)
    gas = run.bench.twin.plant.gas
    assert gas.mfc_for(Gas.O2).setpoint_sccm == 0.0 and gas.mfc_for(Gas.N2).setpoint_sccm == 0.0
    assert sorted(e.source for e in run.kinds("safe_state")) == [
        "bioreactor",
        "electroporator",
        "gas",
    ]
    assert not [
        e for e in run.kinds("setpoint") if e.batch_time > held_at and "flow" in e.data["parameter"]
    ]
    do = values(run, "bioreactor", "do_pct", held_at + 6 * HOUR)
    assert mean(do) > 60.0  # air alone, no N2 stripping: towards air saturation
    # Restart: the setpoints come back and the loop acts on the gas dispenser again.
    run.batch.command("restart", who="kim", why="go on")
    await run.until_state(S.RUNNING)
    await run.clock.sleep(2 * HOUR)
    assert gas.mfc_for(Gas.N2).setpoint_sccm > 50.0  # stripping DO back towards 40 %


async def test_an_alarm_during_held_is_journalled(running: Any) -> None:
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    held_at = await hold_dense_culture(run)
    run.bench.twin.plant.bioreactor.heater_failed = True  # the bag cools overnight
    await run.clock.sleep(10 * HOUR)
    alarms = [e for e in run.kinds("alarm") if e.batch_time > held_at]
    assert [a.data["alarm"] for a in alarms] == ["culture temperature"]
    assert alarms[0].data["value"] < 35.0
    # Its reaction (hold) finds the batch held already: recorded, nothing else changes.
    assert run.batch.state is S.HELD
    refused = [e for e in run.kinds("command") if e.batch_time > held_at]
    assert all(not e.data["accepted"] for e in refused)


async def test_an_alarm_whose_hold_found_the_batch_held_holds_it_when_restarted(
    running: Any,
) -> None:
    """The alarm's hold could not take effect while Held; restarted with the bag still cold,
    the batch holds again for it (it did run on at room temperature to Complete)."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    held_at = await hold_dense_culture(run)
    run.bench.twin.plant.bioreactor.heater_failed = True  # the bag cools overnight
    await run.clock.sleep(10 * HOUR)
    alarm = next(e for e in run.kinds("alarm") if e.batch_time > held_at)
    run.batch.command("restart", who="kim", why="morning: go on")
    restarted = run.clock.now()
    await run.clock.sleep(HOUR)
    assert run.batch.state is S.HELD
    hold = [e for e in run.kinds("command") if e.batch_time >= restarted and e.data["accepted"]]
    assert [(e.data["command"], e.data["operator"]) for e in hold] == [
        ("restart", "kim"),
        ("hold", "alarm:culture temperature"),
    ]
    assert hold[1].batch_time - restarted <= 60.0  # within one poll of running again
    assert alarm.data["message"] in hold[1].data["reason"]
    assert len(run.kinds("alarm")) == 1  # the same alarm, not raised again
    # A second restart is a person's decision with the alarm before them: it runs on.
    run.batch.command("restart", who="sam", why="heater replaced, warming up")
    await run.clock.sleep(HOUR)
    assert run.batch.state is S.RUNNING


async def test_an_alarm_raised_and_cleared_while_held_does_not_hold_the_restart(
    running: Any,
) -> None:
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await hold_dense_culture(run)
    bag = run.bench.twin.plant.bioreactor
    bag.heater_failed = True
    await run.clock.sleep(4 * HOUR)
    bag.heater_failed = False  # repaired while held: the bag warms up, the alarm clears
    await run.clock.sleep(6 * HOUR)
    assert [e.data["alarm"] for e in run.kinds("alarm_cleared")] == ["culture temperature"]
    run.batch.command("restart", who="kim", why="go on")
    await run.clock.sleep(HOUR)
    assert run.batch.state is S.RUNNING


async def test_readings_go_on_while_paused_and_between_phases(running: Any) -> None:
    run = await running()
    await run.until_phase_running("2:culture")
    run.batch.command("pause", who="bob", why="shift change")
    await run.until_state(S.PAUSED)
    paused_at = run.clock.now()
    await run.clock.sleep(2 * HOUR)
    n = sum(1 for e in run.kinds("reading") if e.batch_time > paused_at)
    assert n >= 2 * 119  # bag and gas, every minute
    run.batch.command("resume", who="bob", why="back")
    assert await finished(run) is S.COMPLETE
    # Readings from the very start, before any culture phase engaged a loop.
    first_culture = next(
        e.batch_time
        for e in run.events
        if e.kind == "transition" and "culture" in e.source and e.data["to"] == "Running"
    )
    assert sum(1 for e in run.kinds("reading") if e.batch_time < first_culture) >= 2


async def test_a_device_that_stops_answering_while_held_is_alarmed_once_and_recovers(
    running: Any,
) -> None:
    run = await running()
    await run.until_phase_running("2:culture")
    run.batch.command("hold", who="bob", why="inspection")
    await run.until_state(S.HELD)
    server = run.bench.twin.servers["bioreactor"]
    server.link.silent = True
    await run.clock.sleep(HOUR)
    server.link.silent = False
    await run.clock.sleep(10 * 60)
    comm = [e for e in run.kinds("alarm") if e.data.get("alarm") == "communication"]
    assert len(comm) == 1 and comm[0].source == "bioreactor"
    assert len(run.kinds("no_answer")) >= 10  # each silent poll recorded, no alarm flood
    cleared = [e for e in run.kinds("alarm_cleared") if e.data.get("alarm") == "communication"]
    assert len(cleared) == 1 and cleared[0].batch_time > comm[0].batch_time
    assert run.batch.state is S.HELD


async def test_a_fault_inside_the_control_modules_holds_and_monitoring_goes_on(
    running: Any,
) -> None:
    run = await running()
    await run.until_phase_running("2:culture")

    async def broken(*args: Any) -> None:
        raise ZeroDivisionError("DO loop bug")

    run.batch.modules._control_do = broken  # type: ignore[method-assign]
    await run.until_state(S.HELD)
    faulted = run.clock.now()
    await run.clock.sleep(HOUR)
    alarms = [e for e in run.kinds("alarm") if e.data["alarm"] == "control_modules"]
    assert len(alarms) == 1 and "DO loop bug" in alarms[0].data["message"]  # once, not each scan
    assert sum(1 for e in run.kinds("reading") if e.batch_time > faulted) >= 2 * 59


async def test_a_silent_gas_dispenser_while_held_is_alarmed_once_and_not_written_to(
    running: Any,
) -> None:
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    held_at = await hold_dense_culture(run)
    run.bench.twin.servers["gas"].link.silent = True
    await run.clock.sleep(2 * HOUR)
    after = [e for e in run.events if e.batch_time > held_at]
    comm = [e for e in after if e.kind == "alarm" and e.data.get("alarm") == "communication"]
    assert [e.source for e in comm] == ["gas"]  # once for the outage, not once a scan
    silent_from = comm[0].batch_time
    assert not [
        e
        for e in after
        if e.kind == "setpoint" and e.source == "gas" and e.batch_time > silent_from
    ]  # the DO loop does not write to a dispenser that did not answer its read
    run.bench.twin.servers["gas"].link.silent = False
    await run.clock.sleep(10 * 60)
    cleared = [e for e in run.kinds("alarm_cleared") if e.data.get("alarm") == "communication"]
    assert [e.source for e in cleared] == ["gas"]


async def _command_during_safe_state(
    run: Any, item: str, command: str, why: str, level: str = "procedure"
) -> None:
    """Give ``command`` while the engine drives ``item`` to its safe state (a person's act
    landing in the middle of a hold's or restart's own work)."""
    device = run.batch.equipment[item]
    driven = device.safe_state

    async def interrupted() -> None:
        device.safe_state = driven  # once
        run.batch.command(command, who="kim", why=why, level=level)
        await driven()

    device.safe_state = interrupted


@pytest.mark.parametrize(("command", "final"), [("abort", S.ABORTED), ("stop", S.STOPPED)])
async def test_an_end_given_while_a_hold_drives_its_items_makes_everything_safe(
    running: Any, command: str, final: S
) -> None:
    """The hold keeps the gas under control; a stop or abort landing during the hold's drive
    (valid from Holding) must still end in its own safe state (O2 and N2 closed), and say
    why it ended."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(6 * HOUR)
    await _command_during_safe_state(run, "bioreactor", command, "contamination seen")
    run.batch.command("hold", who="kim", why="overnight")
    assert await finished(run) is final
    gas = run.bench.twin.plant.gas
    assert gas.mfc_for(Gas.O2).setpoint_sccm == 0.0 and gas.mfc_for(Gas.N2).setpoint_sccm == 0.0
    assert "gas" in [e.source for e in run.kinds("safe_state")]
    ended = [e for e in run.kinds("transition") if e.source.startswith("procedure:")][-1]
    assert ended.data["to"] == final.label and "contamination seen" in ended.data["why"], ended
    assert "overnight" not in ended.data["why"]


async def test_a_hold_given_while_a_restart_restores_setpoints_is_held_and_driven(
    running: Any,
) -> None:
    """A hold landing while Restarting re-establishes setpoints: the batch ends Held with
    the hold's drive done (not carried to Running by the restart's finish)."""
    run = await running("dense.yaml", dense(on_hold_gas="safe"), bench_text=DENSE_BENCH)
    await hold_dense_culture(run)
    restore = run.batch.ctx.restore_setpoints

    async def interrupted(go_on: Any) -> bool:
        run.batch.ctx.restore_setpoints = restore  # once
        restored = await restore(go_on)
        run.batch.command("hold", who="kim", why="second thoughts")
        return restored

    run.batch.ctx.restore_setpoints = interrupted
    run.batch.command("restart", who="kim", why="go on")
    await run.clock.sleep(10 * 60)
    assert run.batch.state is S.HELD
    holds = [e for e in run.kinds("safe_state") if e.source == "gas"]
    assert len(holds) == 2 and "second thoughts" in holds[-1].data["why"]
    gas = run.bench.twin.plant.gas
    assert gas.mfc_for(Gas.O2).setpoint_sccm == 0.0 and gas.mfc_for(Gas.N2).setpoint_sccm == 0.0


@pytest.mark.parametrize("level", ["procedure", "unit", "phase"])
async def test_a_hold_given_during_a_restarts_rewrite_stops_the_rewrite_there(
    running: Any, level: str
) -> None:
    """A hold (or a resume's hold after the process died mid-restart) supersedes the
    restart: the setpoints not yet re-established are not written after it (perfusion
    was started again after the hold was given), and the hold's drive decides."""
    run = await running("dense.yaml", dense(on_hold_gas="safe"), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(6 * HOUR)
    run.batch.command("hold", who="kim", why="first look", level=level)
    await run.clock.sleep(10 * 60)
    loop = asyncio.get_running_loop()
    restored: list[str] = []

    def hear(event: Any) -> None:
        if event.kind == "setpoint" and event.data.get("restored"):
            restored.append(event.data["parameter"])
            if len(restored) == 1:  # the second thoughts land during the first write
                loop.call_soon(
                    lambda: run.batch.command("hold", who="kim", why="second", level=level)
                )

    run.journal.subscribe(hear)
    run.batch.command("restart", who="kim", why="go on", level=level)
    await run.clock.sleep(10 * 60)
    assert restored and len(restored) == 1, restored
    remembered = len(run.batch.ctx._restore)
    assert remembered > 1  # else the test proves nothing
    step = run.batch.current
    assert step is not None
    held = {"procedure": run.batch.procedure, "unit": step.unit, "phase": step.phase}[level]
    assert held.state is S.HELD
    last = [e for e in run.kinds("safe_state") if e.source == "gas"][-1]
    assert "second" in last.data["why"]
    gas = run.bench.twin.plant.gas
    assert gas.mfc_for(Gas.O2).setpoint_sccm == 0.0 and gas.mfc_for(Gas.N2).setpoint_sccm == 0.0
    run.batch.command("restart", who="kim", why="now go on", level=level)
    await run.clock.sleep(10 * 60)
    assert held.state is S.RUNNING
    assert len(restored) == 1 + remembered  # the whole rewrite, this time


@pytest.mark.parametrize("level", ["unit", "operation", "phase"])
@pytest.mark.parametrize("command", ["abort", "stop"])
@pytest.mark.parametrize("during", ["Holding", "Restarting"])
async def test_an_element_is_ended_early_from_holding_and_restarting(
    running: Any, level: str, command: str, during: str
) -> None:
    """STATE_MODEL.md: Holding and Restarting take stop and abort, below the procedure as
    at it. Before, an element's stop or abort landing while its hold drove the items, or
    while its restart re-established setpoints, was refused, naming no reason."""
    run = await running("dense.yaml", dense(on_hold_gas="safe"), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(6 * HOUR)
    step = run.batch.current
    assert step is not None
    element = {"unit": step.unit, "operation": step.operation, "phase": step.phase}[level]
    seen: list[str] = []

    def hear(event: Any) -> None:  # the person's act lands in the state's own work
        to = event.data.get("to") if event.kind == "transition" else None
        if event.source == element.element and to == during and not seen:
            seen.append(during)
            asyncio.get_running_loop().call_soon(
                lambda: run.batch.command(command, who="sam", why="enough", level=level)
            )

    run.journal.subscribe(hear)
    run.batch.command("hold", who="kim", why="look", level=level)
    await run.clock.sleep(10 * 60)
    if during == "Restarting":
        run.batch.command("restart", who="kim", why="go on", level=level)
        await run.clock.sleep(10 * 60)
    assert seen == [during]
    asked = next(e for e in run.kinds("command") if e.data["operator"] == "sam")
    assert asked.data["accepted"] and asked.data["state"] == during, asked.data
    ended = "Aborted" if command == "abort" else "Stopped"
    moves = [e.data["to"] for e in run.kinds("transition") if e.source == element.element]
    assert moves[-1] == ended, moves
    # held for a person to decide how the batch goes on, or ended where nothing remains
    assert run.batch.state in (S.HELD, S.ABORTED if command == "abort" else S.STOPPED)
    assert not [e for e in run.kinds("setpoint") if e.data.get("restored") and e.seq > asked.seq]


async def test_a_procedure_aborted_while_a_phase_hold_drives_its_items_ends_safe(
    running: Any,
) -> None:
    """At phase level: the procedure's abort, landing during a phase hold's own drive,
    aborts the phase with the abort's reason (not the hold's) and makes everything safe."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(HOUR)
    await _command_during_safe_state(run, "bioreactor", "abort", "bag leaking")
    run.batch.command("hold", who="kim", why="look at the bag", level="phase")
    assert await finished(run) is S.ABORTED
    phase = [e for e in run.kinds("transition") if "4:culture" in e.source]
    assert [e.data["to"] for e in phase[-3:]] == ["Holding", "Aborting", "Aborted"]
    assert "bag leaking" in phase[-1].data["why"] and "look at" not in phase[-1].data["why"]
    gas = run.bench.twin.plant.gas
    assert gas.mfc_for(Gas.O2).setpoint_sccm == 0.0 and gas.mfc_for(Gas.N2).setpoint_sccm == 0.0


async def test_a_unit_hold_given_while_the_unit_restart_restores_setpoints_is_driven(
    running: Any,
) -> None:
    """The same below the procedure: a unit held, restarted, and held again while its
    restart rewrites setpoints. Before, the second hold was never driven and the unit
    stayed Holding (N2 flowing on an item the hold declares safe), restartable by no one."""
    run = await running("dense.yaml", dense(on_hold_gas="safe"), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(6 * HOUR)
    run.batch.command("hold", who="kim", why="first look", level="unit")
    await run.clock.sleep(10 * 60)
    step = run.batch.current
    assert step is not None and step.unit.state is S.HELD
    restore = run.batch.ctx.restore_setpoints

    async def interrupted(go_on: Any) -> bool:
        run.batch.ctx.restore_setpoints = restore  # once
        restored = await restore(go_on)
        run.batch.command("hold", who="kim", why="second thoughts", level="unit")
        return restored

    run.batch.ctx.restore_setpoints = interrupted
    run.batch.command("restart", who="kim", why="go on", level="unit")
    await run.clock.sleep(10 * 60)
    assert step.unit.state is S.HELD and step.phase.state is S.HELD
    holds = [e for e in run.kinds("safe_state") if e.source == "gas"]
    assert len(holds) == 2 and "second thoughts" in holds[-1].data["why"]
    gas = run.bench.twin.plant.gas
    assert gas.mfc_for(Gas.O2).setpoint_sccm == 0.0 and gas.mfc_for(Gas.N2).setpoint_sccm == 0.0
    run.batch.command("restart", who="kim", why="now go on", level="unit")
    await run.clock.sleep(10 * 60)
    assert step.unit.state is S.RUNNING


async def test_a_restart_whose_setpoints_fail_holds_again_and_never_spins(
    running: Any,
) -> None:
    """An operation restarted after its hold, the rewrite of setpoints failing (a device
    refusing, not silent), the phase's reaction a phase hold: the operation holds again for
    a person, with one alarm. Before, the operation stayed Restarting and the rewrite was
    retried at once, alarm after alarm (or blocked the loop when it failed at once)."""
    text = dense().replace(
        "{phase: culture, duration_h: 48, do_setpoint_pct: 40}",
        "{phase: culture, duration_h: 48, do_setpoint_pct: 40, on_failure: hold_phase}",
    )
    run = await running("dense.yaml", text, bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    run.batch.command("hold", who="kim", why="look", level="operation")
    await run.clock.sleep(10 * 60)
    step = run.batch.current
    assert step is not None and step.operation.state is S.HELD
    rewrites = []

    async def refused(go_on: Any) -> bool:
        rewrites.append(run.clock.now())
        await asyncio.sleep(0)
        raise EquipmentError("bioreactor", "perfusion setpoint refused (exception 3)")

    run.batch.ctx.restore_setpoints = refused
    run.batch.command("restart", who="kim", why="go on", level="operation")
    await run.clock.sleep(30 * 60)
    assert len(rewrites) == 1
    assert step.operation.state is S.HELD and step.phase.state is S.HELD
    alarms = [e for e in run.kinds("alarm") if "exception 3" in e.data.get("message", "")]
    assert len(alarms) == 1


async def test_a_pause_while_a_unit_is_held_says_where_it_took_effect(running: Any) -> None:
    """The record says where a pause took effect: with the unit held mid-culture it is not
    "between phases" (it was, whatever the batch was doing)."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(HOUR)
    run.batch.command("hold", who="kim", why="look at the bag", level="unit")
    await run.clock.sleep(10 * 60)
    run.batch.command("pause", who="kim", why="shift change")
    await run.until_state(S.PAUSED)
    paused = [
        e
        for e in run.kinds("transition")
        if e.source.startswith("procedure:") and e.data["to"] == "Paused"
    ][-1]
    assert paused.data["why"] == "paused while unit:expansion is Held", paused.data


async def test_a_phase_held_while_the_procedure_is_paused_is_named_in_the_answer(
    running: Any,
) -> None:
    """A phase hold accepted while the procedure is Paused: the state the person is shown
    names the held phase (as "Running (phase:... Held)" does), not a bare "Paused"."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(HOUR)
    run.batch.command("pause", who="kim", why="shift change")
    await run.until_state(S.PAUSED)
    run.batch.command("hold", who="kim", why="look at the bag", level="phase")
    await run.clock.sleep(10 * 60)
    step = run.batch.current
    assert step is not None and step.phase.state is S.HELD
    assert run.batch.status == f"Paused ({step.phase.element} Held)"


@pytest.mark.parametrize("below", ["operation", "phase"])
async def test_an_own_hold_below_a_restarting_unit_is_driven_after_its_rewrite(
    running: Any, below: str
) -> None:
    """A unit's restart rewriting setpoints, and a hold of its phase (operation) given
    meanwhile: the unit's rewrite finishes, then the lower hold is driven (gas made safe,
    as declared) and stands. The rewrite is not begun again over the lower hold (it was,
    and the DO loop then wrote N2 to a held phase's dispenser every minute)."""
    run = await running("dense.yaml", dense(on_hold_gas="safe"), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(6 * HOUR)
    run.batch.command("hold", who="kim", why="first look", level="unit")
    await run.clock.sleep(10 * 60)
    restored: list[str] = []

    def hear(event: Any) -> None:
        if event.kind == "setpoint" and event.data.get("restored"):
            restored.append(event.data["parameter"])
            if len(restored) == 1:
                asyncio.get_running_loop().call_soon(
                    lambda: run.batch.command("hold", who="kim", why="the bag", level=below)
                )

    run.journal.subscribe(hear)
    run.batch.command("restart", who="kim", why="go on", level="unit")
    await run.clock.sleep(30 * 60)
    step = run.batch.current
    assert step is not None
    assert len(restored) == len(run.batch.ctx._restore), restored  # once, whole
    assert step.unit.state is S.RUNNING
    held = step.operation if below == "operation" else step.phase
    assert held.state is S.HELD and step.phase.state is S.HELD
    gas = run.bench.twin.plant.gas
    assert gas.mfc_for(Gas.O2).setpoint_sccm == 0.0 and gas.mfc_for(Gas.N2).setpoint_sccm == 0.0
    last = [e for e in run.kinds("safe_state") if e.source == "gas"][-1]
    assert "the bag" in last.data["why"]


@pytest.mark.parametrize("command", ["stop", "abort"])
async def test_ending_an_element_below_a_held_one_is_refused_naming_the_held_one(
    running: Any, command: str
) -> None:
    """With the unit held (or restarting), ending its phase alone would leave the unit so
    for good: refused, naming the unit and its level (ending the unit ends the phase)."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(HOUR)
    run.batch.command("hold", who="kim", why="look", level="unit")
    await run.clock.sleep(10 * 60)
    with pytest.raises(CommandRefused) as refused:
        run.batch.command(command, who="sam", why="enough", level="phase")
    assert f"unit:expansion is Held: {command} it (--level unit)" in str(refused.value)
    run.batch.command(command, who="sam", why="enough", level="unit")
    await run.clock.sleep(10 * 60)
    step_unit = [e for e in run.kinds("transition") if e.source == "unit:expansion"][-1]
    assert step_unit.data["to"] in ("Stopped", "Aborted")


async def test_a_restart_above_a_held_element_names_the_held_one(running: Any) -> None:
    """The unit held while the procedure runs: a restart of the procedure (what a person
    asks seeing "held" on the station) is refused naming the unit and its level, as a
    restart below it is. Before, the refusal only said restart is not valid in Running."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(HOUR)
    run.batch.command("hold", who="kim", why="look", level="unit")
    await run.clock.sleep(10 * 60)
    with pytest.raises(CommandRefused) as refused:
        run.batch.command("restart", who="kim", why="go on")
    said = str(refused.value)
    assert "'restart' is not valid in state Running" in said
    assert "unit:expansion is Held: restart it (--level unit)" in said
    run.batch.command("restart", who="kim", why="go on", level="unit")
    await run.clock.sleep(10 * 60)
    assert run.batch.current is not None and run.batch.current.unit.state is S.RUNNING


def lost_alarms(run: Any) -> list[Any]:
    return [e for e in run.kinds("alarm") if e.data["alarm"] == "setpoint_lost"]


async def test_a_device_that_loses_its_setpoints_while_held_is_alarmed_and_rewritten(
    running: Any,
) -> None:
    """A held culture's controller restarts at its power-up setpoints (20 °C, no rocking) and
    a mass-flow controller comes back closed: the batch sees it in what the devices report
    back, alarms it once per device, writes its own setpoints again and the culture stays
    at temperature (its replay: tests/replay/test_replay.py). Before, the engine went on
    believing its own setpoints: the bag cooled to room temperature with nothing alarmed."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    held_at = await hold_dense_culture(run)
    plant = run.bench.twin.plant
    plant.bioreactor.temperature_sp_c = 20.0
    plant.bioreactor.rocking_rpm = 0.0
    plant.gas.mfc_for(Gas.AIR).setpoint_sccm = 0.0
    await run.clock.sleep(2 * HOUR)
    alarms = lost_alarms(run)
    assert sorted(e.source for e in alarms) == ["bioreactor", "gas"]
    by_source = {e.source: e.data["message"] for e in alarms}
    assert "temperature_sp 20 (the batch set 37)" in by_source["bioreactor"]
    assert "rocking_sp 0 (the batch set 15)" in by_source["bioreactor"]
    assert "air_flow_sp 0 (the batch set 190)" in by_source["gas"]
    rewritten = {
        (e.source, e.data["parameter"]): e.data["value"]
        for e in run.kinds("setpoint")
        if e.batch_time > held_at and "device_held" in e.data.get("basis", {})
    }
    assert rewritten == {
        ("bioreactor", "temperature_sp"): 37.0,
        ("bioreactor", "rocking_sp"): 15,
        ("gas", "air_flow_sp"): 190,
    }
    cleared = sorted(
        e.source for e in run.kinds("alarm_cleared") if e.data["alarm"] == "setpoint_lost"
    )
    assert cleared == ["bioreactor", "gas"]
    assert plant.bioreactor.temperature_sp_c == 37.0 and plant.bioreactor.rocking_rpm == 15
    assert min(values(run, "bioreactor", "temperature_c", held_at + HOUR)) > 36.5
    assert run.batch.state is S.HELD  # held still: a person restarts
    run.batch.command("restart", who="kim", why="controller checked")
    assert await finished(run) is S.COMPLETE
    assert len(lost_alarms(run)) == 2  # the restart's rewrite is no new loss


async def test_a_setpoint_changed_at_the_panel_while_running_holds_the_batch(
    running: Any,
) -> None:
    """Someone turns the temperature setpoint down at the controller's panel mid-culture:
    the running batch holds on the alarm and its setpoint is written back. A panel in local
    mode that overrides every write is alarmed and written to once, then left to the person
    the alarm called (not fought over every scan)."""
    run = await running("dense.yaml", dense(), bench_text=DENSE_BENCH)
    await run.until_phase_running("4:culture")
    await run.clock.sleep(HOUR)
    bag = run.bench.twin.plant.bioreactor
    bag.temperature_sp_c = 30.0
    await run.until_state(S.HELD)
    (alarm,) = lost_alarms(run)
    assert alarm.data["reaction"] == "hold" and "temperature_sp 30" in alarm.data["message"]
    assert any(
        e.data.get("who") == "engine" and "temperature_sp 30" in e.data.get("why", "")
        for e in run.kinds("transition")
    )
    await run.clock.sleep(10 * 60)
    assert bag.temperature_sp_c == 37.0
    cleared = [e for e in run.kinds("alarm_cleared") if e.data["alarm"] == "setpoint_lost"]
    assert len(cleared) == 1

    async def panel_in_local_mode() -> None:  # whatever the batch writes, 30 °C it is
        while True:
            bag.temperature_sp_c = 30.0
            await run.clock.sleep(10.0)

    panel = asyncio.create_task(panel_in_local_mode())
    await run.clock.sleep(HOUR)
    panel.cancel()
    rewrites = [
        e
        for e in run.kinds("setpoint")
        if e.data["parameter"] == "temperature_sp" and "device_held" in e.data.get("basis", {})
    ]
    assert len(rewrites) == 2 and len(lost_alarms(run)) == 2  # once more, then left alone
    assert bag.temperature_sp_c == 30.0
    assert len([e for e in run.kinds("alarm_cleared") if e.data["alarm"] == "setpoint_lost"]) == 1
