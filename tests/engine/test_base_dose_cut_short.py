"""A hold, stop or abort given while the pH loop doses base takes effect within one poll
period, whatever the size of the dose: the dose is cut short, its pump stopped by the
drive, and the record says what went in (``addition_interrupted``, from the pump's total).

Before: the base dose ran inside the control modules' scan, whose lock the drive waits for,
so the hold or abort waited for the whole dose: a 300 mL base dose (three minutes on the
twin's pump) kept an abort from the safe state for three minutes, pumping all the while.
Virtual time, the twin's Modbus bioreactor."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from batch_harness import S, finished
from test_pump_cut_short import (  # noqa: F401
    RECIPE,
    _bag_ml,
    _replays_identically,
    running,
)

from twin.engine.modules import DEFAULT_PERIOD_S

BASE_ML = 300.0  # 180 s on the twin's pump (100 mL/min): three poll periods
GIVEN_AFTER_S = 20.0  # into the dose: about 33 mL in

BIG_BASE = RECIPE.replace(
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
    "          - {phase: culture, duration_h: 0.2, ph_setpoint: 8.0, base_interval_h: 1,"
    f" base_dose_ml: {BASE_ML:g}}}\n",
)


def _into_base_dose(run: Any, command: str) -> list[float]:
    """Give ``command`` GIVEN_AFTER_S into the first base dose; returns the bag's volume (the
    twin's truth) as the dose's setpoint is journalled."""
    loop = asyncio.get_running_loop()
    bag: list[float] = []

    def hear(event: Any) -> None:
        if event.kind == "setpoint" and event.data["parameter"] == "add_base" and not bag:
            bag.append(_bag_ml(run))
            loop.call_later(
                GIVEN_AFTER_S, lambda: run.batch.command(command, who="kim", why="bag leak")
            )

    run.listeners.append(hear)
    return bag


@pytest.mark.parametrize(("command", "final"), [("hold", S.HELD), ("abort", S.ABORTED)])
async def test_a_command_during_a_long_base_dose_takes_effect_within_a_poll_period(
    running: Any,  # noqa: F811 (the fixture of test_pump_cut_short)
    command: str,
    final: S,
) -> None:
    run = await running(BIG_BASE)
    bag = _into_base_dose(run, command)
    async with run.clock.timeout(3600.0):
        while run.batch.state is not final:
            await run.clock.sleep(1.0)
    (given,) = run.kinds("command")
    (safe,) = [e for e in run.kinds("safe_state") if e.source == "bioreactor"]
    assert safe.batch_time - given.batch_time <= DEFAULT_PERIOD_S, "the drive waited"
    reached = next(e for e in run.kinds("transition") if e.data["to"] == final.label)
    assert reached.batch_time - given.batch_time <= DEFAULT_PERIOD_S

    # What went in, from the pump's total: the pump ran about GIVEN_AFTER_S, then stopped.
    (cut,) = run.kinds("addition_interrupted")
    assert cut.data["parameter"] == "add_base"
    assert cut.data["requested_ml"] == BASE_ML
    delivered = cut.data["delivered_ml"]
    assert 0.0 < delivered < BASE_ML / 2
    assert _bag_ml(run) - bag[0] == pytest.approx(delivered, abs=0.05)
    assert not [e for e in run.kinds("confirmed") if e.data["parameter"] == "add_base"]
    stopped_ml = _bag_ml(run)
    await run.clock.sleep(600.0)  # nothing more goes in
    assert _bag_ml(run) == pytest.approx(stopped_ml, abs=0.05)
    if command == "hold":
        run.batch.command("restart", who="sam", why="leak fixed")
        assert await finished(run) is S.COMPLETE
    _replays_identically(run)


async def test_a_stop_during_a_long_base_dose_stops_the_pump_and_records_the_dose(
    running: Any,  # noqa: F811
) -> None:
    """A controlled stop ends the culture phase; the base dose is the unit's, not the
    phase's: its pump stops with the drive and the record says what went in."""
    run = await running(BIG_BASE)
    bag = _into_base_dose(run, "stop")
    assert await finished(run) is S.STOPPED
    (given,) = run.kinds("command")
    (safe,) = [e for e in run.kinds("safe_state") if e.source == "bioreactor"]
    assert safe.batch_time - given.batch_time <= DEFAULT_PERIOD_S
    (cut,) = run.kinds("addition_interrupted")
    assert cut.data["parameter"] == "add_base" and cut.data["on"] == "stop"
    assert 0.0 < cut.data["delivered_ml"] < BASE_ML / 2
    assert _bag_ml(run) - bag[0] == pytest.approx(cut.data["delivered_ml"], abs=0.05)
    _replays_identically(run)
