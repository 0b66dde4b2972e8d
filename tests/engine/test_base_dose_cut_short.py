"""A hold, stop or abort given while the pH loop doses base takes effect within one poll
period, whatever the size of the dose: the dose is cut short, its pump stopped by the
drive, and the record says what went in (``addition_interrupted``, from the pump's total).

Before: the base dose ran inside the control modules' scan, whose lock the drive waits for,
so the hold or abort waited for the whole dose: a 300 mL base dose (three minutes on the
twin's pump) kept an abort from the safe state for three minutes, pumping all the while.
Virtual time, the twin's Modbus bioreactor."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from batch_harness import ROOT, S, finished
from test_pump_cut_short import (  # noqa: F401
    RECIPE,
    _bag_ml,
    _replays_identically,
    running,
)

from twin.bench import OpenBench
from twin.clock import Clock
from twin.engine.modules import DEFAULT_PERIOD_S

BASE_ML = 300.0  # 180 s on the twin's pump (100 mL/min): three poll periods
GIVEN_AFTER_S = 20.0  # into the dose: about 33 mL in

BIG_BASE = RECIPE.replace(
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
    "          - {phase: culture, duration_h: 0.2, ph_setpoint: 8.0, base_interval_h: 1,"
    f" base_dose_ml: {BASE_ML:g}}}\n",
)


def _into_base_dose(run: Any, command: str, after_s: float = GIVEN_AFTER_S) -> list[float]:
    """Give ``command`` ``after_s`` into the first base dose; returns the bag's volume (the
    twin's truth) as the dose's setpoint is journalled."""
    loop = asyncio.get_running_loop()
    bag: list[float] = []

    def hear(event: Any) -> None:
        if event.kind == "setpoint" and event.data["parameter"] == "add_base" and not bag:
            bag.append(_bag_ml(run))
            loop.call_later(after_s, lambda: run.batch.command(command, who="kim", why="bag leak"))

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


async def test_a_restart_right_after_a_cut_base_dose_waits_for_the_base_interval(
    running: Any,  # noqa: F811
) -> None:
    """The interval between base doses counts from a dose's start, cut short or not: a
    restart right after the hold does not dose a whole new 300 mL at once (nearly twice
    the base within one interval, which the interval is there to prevent)."""
    run = await running(BIG_BASE.replace("ph_setpoint: 8.0", "ph_setpoint: 8.49"))
    _into_base_dose(run, "hold", after_s=0.5)  # under 1 mL in: the bag still acid
    await run.until_state(S.HELD)
    run.batch.command("restart", who="sam", why="leak fixed")
    assert await finished(run) is S.COMPLETE
    first, *later = [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_base"]
    assert all(e.batch_time - first.batch_time >= 3600.0 for e in later)
    _replays_identically(run)


def test_a_base_dose_in_flight_when_the_process_died_is_not_sent_again_by_resume(
    tmp_path: Path,
) -> None:
    """The process dies 10 s into a base dose. The resume re-runs the record, then goes
    live: the dose's call, in flight at the death, is not sent to the device again (as a
    phase's is not); the resume's hold settles it from the pump's total."""
    from twin.bench import load_bench
    from twin.clock import run_batch_loop
    from twin.journal import read_events
    from twin.recipe import load_recipe
    from twin.replay import replay
    from twin.replay.resume import resume
    from twin.runner import run_batch_async

    recipe = tmp_path / "base.yaml"
    recipe.write_text(BIG_BASE)
    journal = tmp_path / "died.sqlite"

    async def dies_mid_dose() -> None:
        begun = asyncio.get_running_loop().create_future()

        def hear(event: Any) -> None:
            base = event.kind == "setpoint" and event.data["parameter"] == "add_base"
            if base and not begun.done():
                begun.set_result(None)

        task = asyncio.create_task(
            run_batch_async(
                load_recipe(recipe),
                load_bench(ROOT / "benches" / "sim.yaml"),
                journal,
                batch_id="B1",
                operator="eve",
                subscribers=[hear],
            )
        )
        await begun
        await asyncio.sleep(10.0)
        task.cancel()  # the process dies
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_batch_loop(dies_mid_dose, virtual=True)
    died = list(read_events(journal))[-1].seq
    sent: list[tuple[float, float]] = []

    def watch(opened: OpenBench, clock: Clock) -> None:
        device = opened.equipment["bioreactor"]
        add = device.add

        async def counted(material: Any, volume_ml: float) -> Any:
            sent.append((clock.now(), volume_ml))
            return await add(material, volume_ml)

        device.add = counted

    final = resume(
        journal, operator="carol", reason="power back", restart=True, pace=None, on_bench=watch
    )
    assert final is S.COMPLETE
    after = list(read_events(journal, after=died))
    restart = next(e for e in after if e.kind == "command" and e.data["command"] == "restart")
    assert [s for s in sent if s[0] <= restart.batch_time] == [], "the dose was sent again"
    (cut,) = [e for e in after if e.kind == "addition_interrupted"]
    assert cut.data["parameter"] == "add_base" and cut.data["on"] == "hold"
    assert replay(journal).identical


async def test_base_doses_on_two_bags_are_each_cut_short_by_a_drive_of_both() -> None:
    """Two bags' pH loops dose base at once (one pump each): a drive of both cuts both, and
    the end of the batch stops any left. (The twin has one bag: the doses here stand in for
    the two pumps' runs.) Before, only the last dose begun was tracked: the first one went
    on pumping through the hold's safe state, never settled."""
    from twin.engine.modules import ControlModules, PHLoop

    modules = ControlModules(None, {}, lambda exc, name: None)  # type: ignore[arg-type]
    for bag in ("bag1", "bag2", "bag3"):
        pumping = asyncio.sleep(3600.0)
        modules._dose_base(PHLoop(bag, "gas", 7.2, 0.05, 300.0, 3600.0), pumping)
    await asyncio.sleep(0)
    doses = {task.get_name(): task for task in modules.dose_tasks()}
    assert sorted(doses) == ["base dose bag1", "base dose bag2", "base dose bag3"]
    await modules.cut_additions(["bag1", "bag2", "gas"])
    assert doses["base dose bag1"].cancelled() and doses["base dose bag2"].cancelled()
    assert not doses["base dose bag3"].done()  # not driven: its dose goes on
    assert modules.additions is False
    await modules.stop()
    assert doses["base dose bag3"].cancelled() and modules.dose_tasks() == []
