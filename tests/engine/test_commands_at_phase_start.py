"""A dose, a media exchange or a harvest is not begun once a hold, stop or abort has been
accepted: the command given as the phase starts (the next loop turn, before the phase's first
write) finds a safe point before the action. After a hold and a restart the action is done
exactly once; a harvest held after its final count keeps that count. Virtual time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from batch_harness import S, draft_recipe, finished

RECIPE = (
    draft_recipe("actions")
    + """\
equipment:
  bioreactor: {type: bioreactor}
  gas: {type: gas_dispenser}
procedure:
  - unit_procedure: u
    operations:
      - operation: o
        phases:
          - {phase: set_rocking, rpm: 10}
          - {phase: add, material: il2, volume_ml: 1.0}
          - {phase: media_exchange, volume_ml: 50, rate_ml_per_h: 50}
          - {phase: harvest}
"""
)

#: The phase and the setpoint that is its action (the media exchange's is its fast rate).
ACTIONS = {"2:add": "add_il2", "3:media_exchange": "perfusion_sp", "4:harvest": "harvest"}
FAST_ML_PER_DAY = 50.0 * 24.0


def _action_setpoints(run: Any, parameter: str) -> list[Any]:
    found = [
        e
        for e in run.kinds("setpoint")
        if e.data["parameter"] == parameter
        and (parameter != "perfusion_sp" or e.data["value"] == FAST_ML_PER_DAY)
    ]
    return found


def _give_at_start(run: Any, phase: str, command: str) -> None:
    """The command, from a person, on the loop turn after the phase starts running."""
    loop = asyncio.get_running_loop()

    def hear(event: Any) -> None:
        starts = event.kind == "transition" and event.data["to"] == "Running"
        if starts and phase in event.source and not run.kinds("command"):
            loop.call_soon(lambda: run.batch.command(command, who="kim", why="bag line"))

    run.journal.subscribe(hear)


@pytest.mark.parametrize("phase", list(ACTIONS))
@pytest.mark.parametrize("command,final", [("stop", S.STOPPED), ("abort", S.ABORTED)])
async def test_a_stop_or_abort_at_the_phase_start_begins_no_action(
    running: Any, phase: str, command: str, final: S
) -> None:
    run = await running("actions.yaml", text=RECIPE)
    _give_at_start(run, phase, command)
    assert await finished(run) is final
    given = next(e for e in run.kinds("command") if e.data["command"] == command)
    late = [e for e in _action_setpoints(run, ACTIONS[phase]) if e.seq > given.seq]
    assert late == [], f"{phase} began its action after the {command} was accepted"
    assert not run.kinds("harvest")


@pytest.mark.parametrize("phase", list(ACTIONS))
async def test_a_hold_at_the_phase_start_does_the_action_once_after_the_restart(
    running: Any, phase: str
) -> None:
    run = await running("actions.yaml", text=RECIPE)
    _give_at_start(run, phase, "hold")
    await run.until_state(S.HELD)
    held = next(e for e in run.kinds("transition") if e.data["to"] == "Held")
    assert [e for e in _action_setpoints(run, ACTIONS[phase]) if e.seq > held.seq] == []
    await run.clock.sleep(600.0)
    run.batch.command("restart", who="sam", why="line cleared")
    assert await finished(run) is S.COMPLETE
    assert len(_action_setpoints(run, ACTIONS[phase])) == 1
    assert len(run.kinds("harvest")) == 1


async def test_a_harvest_held_after_its_final_count_keeps_that_count(running: Any) -> None:
    run = await running("actions.yaml", text=RECIPE)
    loop = asyncio.get_running_loop()

    def hear(event: Any) -> None:
        if event.kind == "sample" and not run.kinds("command"):
            loop.call_soon(lambda: run.batch.command("hold", who="kim", why="label check"))

    run.journal.subscribe(hear)
    await run.until_state(S.HELD)
    assert not _action_setpoints(run, "harvest")  # the bag is still in the bioreactor
    await run.clock.sleep(600.0)
    run.batch.command("restart", who="sam", why="label right")
    assert await finished(run) is S.COMPLETE
    (sample,) = run.kinds("sample")
    (harvest,) = run.kinds("harvest")
    assert harvest.data["viable_cells_per_ml"] == sample.data["viable_cells_per_ml"]


#: Phases whose first act is a write: the phase and the setpoint it writes first.
FIRST_WRITES = {
    "1:set_rocking": "rocking_sp",
    "2:set_gas": "air_flow_sp",
    "3:set_temp": "temperature_sp",
}

SETTING_RECIPE = RECIPE.replace(
    "          - {phase: set_rocking, rpm: 10}\n",
    "          - {phase: set_rocking, rpm: 10}\n"
    "          - {phase: set_gas, flows_sccm: {air: 190, co2: 10}}\n"
    "          - {phase: set_temperature, name: set_temp, setpoint_c: 37.0}\n",
)


@pytest.mark.parametrize("phase", list(FIRST_WRITES))
@pytest.mark.parametrize("command", ["hold", "stop", "abort"])
async def test_a_command_at_the_phase_start_comes_before_its_first_write(
    running: Any, phase: str, command: str
) -> None:
    """Before: the phase wrote its setpoint after the command was accepted (an abort at a
    set_gas's start still set air and CO2 flowing)."""
    run = await running("settings.yaml", text=SETTING_RECIPE)
    _give_at_start(run, phase, command)
    if command == "hold":
        await run.until_state(S.HELD)
    else:
        await finished(run)
    given = next(e for e in run.kinds("command") if e.data["command"] == command)
    late = [
        e
        for e in run.kinds("setpoint")
        if e.seq > given.seq and e.data["parameter"] == FIRST_WRITES[phase]
    ]
    assert late == [], f"{phase} wrote {FIRST_WRITES[phase]} after the {command} was accepted"
    if command == "hold":
        run.batch.command("restart", who="sam", why="checked")
        assert await finished(run) is S.COMPLETE
        written = [
            e
            for e in run.kinds("setpoint")
            if e.data["parameter"] == FIRST_WRITES[phase] and not e.data.get("restored")
        ]
        assert len(written) == 1


@pytest.mark.parametrize("command", ["hold", "abort"])
async def test_a_phase_hold_or_abort_as_its_logic_finishes_is_carried_out(
    running: Any, command: str
) -> None:
    """A phase-level hold or abort lands on the turn the dose's answer ends the phase's logic.
    Before: the phase was finished from Holding (Aborting) as if nothing had come: no item was
    driven, and after an abort the batch waited forever."""
    run = await running("actions.yaml", text=RECIPE)
    loop = asyncio.get_running_loop()

    def hear(event: Any) -> None:
        last = event.kind == "confirmed" and event.data["parameter"] == "add_il2"
        if last and not run.kinds("command"):
            loop.call_soon(
                lambda: run.batch.command(command, who="kim", why="bag line", level="phase")
            )

    run.journal.subscribe(hear)
    async with run.clock.timeout(86400):
        await run.until(
            lambda e: e.kind == "transition" and "2:add" in e.source and e.data["to"] in WAITS
        )
    given = next(e for e in run.kinds("command") if e.data["command"] == command)
    driven = [e for e in run.events if e.kind in ("safe_state", "control_kept")]
    assert [e for e in driven if e.seq > given.seq], f"the phase {command} drove nothing"
    if command == "abort":
        await run.until_state(S.HELD)  # the procedure holds for a decision
        run.batch.command("restart", who="sam", why="go on without it")
    else:
        run.batch.command("restart", who="sam", why="line cleared", level="phase")
    assert await finished(run) is S.COMPLETE
    assert len(_action_setpoints(run, "add_il2")) == 1


WAITS = ("Held", "Aborted")
