"""A dose or a harvest a hold or abort cuts short: its pump is stopped, the record says what
it moved (the pump's own total, read once the drive stopped it), and a restarted ``add``
phase doses the rest (a restarted ``harvest`` drains the rest of the bag), so the bag gets
what the recipe asked and the harvest is the whole product bag.

Before: the record said 100 mL dosed when 35 mL had gone in, and the restart dosed nothing
more; a harvest held part-way was never recorded (no harvest, nothing to formulate).
Virtual time, the twin's Modbus bioreactor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from batch_harness import ROOT, S, draft_recipe, finished

from twin.bench import OpenBench, load_bench
from twin.clock import Clock
from twin.engine.batch import Batch
from twin.journal import Event, verify
from twin.recipe import load_recipe
from twin.replay import replay
from twin.report.record import build_record
from twin.runner import run_batch_async

DOSE_ML = 100.0  # 60 s on the twin's pump (100 mL/min)

RECIPE = (
    draft_recipe("dose")
    + f"""\
equipment:
  bioreactor: {{type: bioreactor}}
  gas: {{type: gas_dispenser}}
procedure:
  - unit_procedure: u
    operations:
      - operation: o
        phases:
          - {{phase: set_rocking, rpm: 10}}
          - {{phase: add, material: il2, volume_ml: {DOSE_ML}}}
          - {{phase: set_rocking, name: after, rpm: 12}}
"""
)


@dataclass
class Dosing:
    """A batch of a recipe below run as ``poc-twin run`` runs it (its journal replays)."""

    batch: Batch
    clock: Clock
    bench: OpenBench
    journal_path: Path
    events: list[Event] = field(default_factory=list)
    listeners: list[Callable[[Event], None]] = field(default_factory=list)

    def kinds(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    async def until_phase_running(self, name: str) -> None:
        while not any(
            e.kind == "transition" and name in e.source and e.data["to"] == "Running"
            for e in self.events
        ):
            await self.clock.sleep(1.0)

    async def until_state(self, state: S) -> None:
        while self.batch.state is not state:
            await self.clock.sleep(1.0)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    tasks: list[asyncio.Task[Any]] = []

    async def start(text: str = RECIPE) -> Dosing:
        recipe_path = tmp_path / "pump.yaml"
        recipe_path.write_text(text)
        listeners: list[Callable[[Event], None]] = []
        events: list[Event] = []
        opened: asyncio.Future[tuple[OpenBench, Clock]] = asyncio.get_running_loop().create_future()
        started: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()

        def hear(event: Event) -> None:
            events.append(event)
            for listener in listeners:
                listener(event)

        task = asyncio.create_task(
            run_batch_async(
                load_recipe(recipe_path),
                load_bench(ROOT / "benches" / "sim.yaml"),
                tmp_path / "batch.sqlite",
                batch_id="D1",
                operator="eve",
                subscribers=[hear],
                on_bench=lambda bench, clock: opened.set_result((bench, clock)),
                on_batch=started.set_result,
            )
        )
        tasks.append(task)
        bench, clock = await opened
        return Dosing(await started, clock, bench, tmp_path / "batch.sqlite", events, listeners)

    yield start
    for task in tasks:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _doses(run: Any) -> list[Any]:
    return [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_il2"]


def _bag_ml(run: Any) -> float:
    return float(run.bench.twin.plant.bioreactor.state.volume_ml)


async def _bag_as_dosing_begins(run: Any) -> float:
    """The bag's volume (the twin's truth) as the first dose's setpoint is journalled."""
    seen: list[float] = []

    def hear(event: Any) -> None:
        if not seen and event.kind == "setpoint" and event.data["parameter"] == "add_il2":
            seen.append(_bag_ml(run))

    run.listeners.append(hear)
    while not seen:
        await run.clock.sleep(1.0)
    return seen[0]


def _command_into_dose(
    run: Any, command: str, after_s: float, dose: int = 1, parameter: str = "add_il2"
) -> None:
    """A person gives ``command`` ``after_s`` batch seconds into the ``dose``-th pump run
    of ``parameter`` (0: on the loop turn after its setpoint, the write then on the wire)."""
    loop = asyncio.get_running_loop()

    def give() -> None:
        run.batch.command(command, who="kim", why="line looks kinked")

    def hear(event: Any) -> None:
        runs = [e for e in run.kinds("setpoint") if e.data["parameter"] == parameter]
        if event.kind == "setpoint" and event.data["parameter"] == parameter and len(runs) == dose:
            loop.call_later(after_s, give) if after_s else loop.call_soon(give)

    run.listeners.append(hear)


def _replays_identically(run: Any) -> None:
    path = run.journal_path
    assert verify(path).ok
    with ThreadPoolExecutor(1) as other:  # on a loop of its own, as `poc-twin replay`
        replayed = other.submit(replay, path).result()
    assert replayed.divergence is None, replayed.divergence
    assert replayed.identical


@pytest.mark.parametrize("after_s", [0.0, 5.0, 24.0, 59.0])
async def test_a_hold_mid_dose_records_what_went_in_and_the_restart_doses_the_rest(
    running: Any, after_s: float
) -> None:
    run = await running()
    _command_into_dose(run, "hold", after_s)
    start_ml = await _bag_as_dosing_begins(run)
    await run.until_state(S.HELD)
    (cut,) = run.kinds("addition_interrupted")
    went_in = cut.data["delivered_ml"]
    (first,) = _doses(run)
    assert cut.data["setpoint"] == first.seq and cut.data["requested_ml"] == DOSE_ML
    assert cut.data["on"] == "hold"
    assert 0.0 <= went_in < DOSE_ML
    assert went_in == pytest.approx(DOSE_ML * after_s / 60.0, abs=2.0)
    assert _bag_ml(run) - start_ml == pytest.approx(went_in, abs=0.05)
    await run.clock.sleep(1800.0)  # held half an hour: the pump stays stopped
    assert _bag_ml(run) - start_ml == pytest.approx(went_in, abs=0.05)

    run.batch.command("restart", who="sam", why="line cleared")
    assert await finished(run) is S.COMPLETE
    first, rest = _doses(run)
    assert rest.data["value"] == pytest.approx(DOSE_ML - went_in, abs=0.01)
    assert rest.data["basis"]["setpoint"] == first.seq
    assert _bag_ml(run) - start_ml == pytest.approx(DOSE_ML, abs=0.05)

    record = build_record(run.journal_path)
    assert sum(m.volume_ml for m in record.materials) == pytest.approx(DOSE_ML, abs=0.01)
    (short,) = [m for m in record.materials if m.cut_short]
    assert f"{round(went_in, 2):g} of {DOSE_ML:g} mL went in" in short.cut_short
    assert any("cut short by the hold" in text for _, text in record.exceptions)
    _replays_identically(run)


async def test_an_abort_mid_dose_records_what_went_in_and_doses_nothing_more(
    running: Any,
) -> None:
    run = await running()
    _command_into_dose(run, "abort", 24.0)
    start_ml = await _bag_as_dosing_begins(run)
    assert await finished(run) is S.ABORTED
    (cut,) = run.kinds("addition_interrupted")
    assert cut.data["on"] == "abort"
    went_in = cut.data["delivered_ml"]
    assert went_in == pytest.approx(40.0, abs=2.0)
    assert len(_doses(run)) == 1
    assert _bag_ml(run) - start_ml == pytest.approx(went_in, abs=0.05)
    (used,) = build_record(run.journal_path).materials
    assert used.volume_ml == went_in
    _replays_identically(run)


async def test_a_rest_cut_short_again_is_topped_up_again(running: Any) -> None:
    run = await running()
    _command_into_dose(run, "hold", 24.0)
    _command_into_dose(run, "hold", 12.0, dose=2)
    start_ml = await _bag_as_dosing_begins(run)
    await run.until_state(S.HELD)
    run.batch.command("restart", who="sam", why="line cleared")
    while len(run.kinds("addition_interrupted")) < 2 or run.batch.state is not S.HELD:
        await run.clock.sleep(1.0)
    run.batch.command("restart", who="sam", why="line cleared again")
    assert await finished(run) is S.COMPLETE
    doses = [e.data["value"] for e in _doses(run)]
    went = [e.data["delivered_ml"] for e in run.kinds("addition_interrupted")]
    assert len(doses) == 3
    assert doses[1] == pytest.approx(DOSE_ML - went[0], abs=0.01)
    assert doses[2] == pytest.approx(doses[1] - went[1], abs=0.01)
    assert _bag_ml(run) - start_ml == pytest.approx(DOSE_ML, abs=0.05)
    record = build_record(run.journal_path)
    assert sum(m.volume_ml for m in record.materials) == pytest.approx(DOSE_ML, abs=0.01)
    _replays_identically(run)


async def test_a_stop_mid_dose_lets_the_dose_finish(running: Any) -> None:
    """A controlled stop ends the phase at its next safe point: the dose goes in whole."""
    run = await running()
    _command_into_dose(run, "stop", 24.0)
    start_ml = await _bag_as_dosing_begins(run)
    assert await finished(run) is S.STOPPED
    assert not run.kinds("addition_interrupted")
    assert _bag_ml(run) - start_ml == pytest.approx(DOSE_ML, abs=0.05)


HARVEST_RECIPE = RECIPE.replace(
    "          - {phase: add, material: il2, volume_ml: 100.0}\n"
    "          - {phase: set_rocking, name: after, rpm: 12}\n",
    "          - {phase: add, material: medium, volume_ml: 400.0}\n          - {phase: harvest}\n",
)


def _harvests(run: Any) -> list[Any]:
    return [e for e in run.kinds("setpoint") if e.data["parameter"] == "harvest"]


def _product_ml(run: Any) -> float:
    product = run.bench.twin.plant.bioreactor.harvested
    return 0.0 if product is None else float(product.volume_ml)


@pytest.mark.parametrize("after_s", [0.0, 120.0, 290.0])
async def test_a_hold_mid_harvest_keeps_what_it_drained_and_the_restart_drains_the_rest(
    running: Any, after_s: float
) -> None:
    run = await running(HARVEST_RECIPE)
    _command_into_dose(run, "hold", after_s, parameter="harvest")
    await run.until_phase_running("3:harvest")
    await run.until_state(S.HELD)
    (cut,) = run.kinds("harvest_interrupted")
    drained = cut.data["drained_ml"]
    assert cut.data["setpoint"] == _harvests(run)[0].seq and cut.data["on"] == "hold"
    assert drained == pytest.approx(100.0 * after_s / 60.0, abs=2.0)  # 100 mL/min
    assert _product_ml(run) == pytest.approx(drained, abs=0.01)
    bag = _bag_ml(run)
    await run.clock.sleep(1800.0)  # held half an hour: the pump stays stopped
    assert _product_ml(run) == pytest.approx(drained, abs=0.01)
    assert not run.kinds("harvest")

    run.batch.command("restart", who="sam", why="line cleared")
    assert await finished(run) is S.COMPLETE
    first, rest = _harvests(run)
    assert rest.data["basis"] == {"drained_ml": drained, "setpoint": first.seq}
    assert len(run.kinds("sample")) == 1, "the final count is not drawn again"
    (harvest,) = run.kinds("harvest")
    assert harvest.data["volume_ml"] == pytest.approx(_product_ml(run), abs=0.01)
    assert harvest.data["volume_ml"] == pytest.approx(drained + bag, abs=1.0)
    assert _bag_ml(run) == pytest.approx(0.0, abs=0.01)
    record = build_record(run.journal_path)
    assert record.harvest is not None and record.harvest["volume_ml"] == harvest.data["volume_ml"]
    cuts = [text for _, text in record.exceptions if text.startswith("Harvest (event")]
    assert len(cuts) == 1 and f"cut short by the hold: {round(drained, 2):g} mL drained" in cuts[0]
    _replays_identically(run)


async def test_an_abort_mid_harvest_records_what_it_drained(running: Any) -> None:
    run = await running(HARVEST_RECIPE)
    _command_into_dose(run, "abort", 120.0, parameter="harvest")
    assert await finished(run) is S.ABORTED
    (cut,) = run.kinds("harvest_interrupted")
    assert cut.data["on"] == "abort"
    assert cut.data["drained_ml"] == pytest.approx(200.0, abs=2.0)
    assert _product_ml(run) == pytest.approx(cut.data["drained_ml"], abs=0.01)
    assert len(_harvests(run)) == 1 and not run.kinds("harvest")
    exceptions = [text for _, text in build_record(run.journal_path).exceptions]
    assert any("cut short by the abort" in t for t in exceptions)
    _replays_identically(run)


async def test_a_dose_ending_as_the_scan_reads_replays_identically(running: Any) -> None:
    """The 400 mL dose ends at 240 s, the instant of a scan's reading (both recorded at one
    batch time). Before: the replay handed the dose its answer first and diverged at the
    reading ("recorded reading, replayed confirmed"): answers due at one instant are now
    handed out in the record's order. Uninterrupted, the harvest is the whole bag."""
    run = await running(HARVEST_RECIPE)
    assert await finished(run) is S.COMPLETE
    confirmed = next(e for e in run.kinds("confirmed") if e.data["parameter"] == "add_medium")
    tie = [e for e in run.kinds("reading") if e.batch_time == confirmed.batch_time]
    assert tie and tie[0].seq < confirmed.seq, "the case this test is about"
    (harvest,) = run.kinds("harvest")
    assert harvest.data["volume_ml"] == pytest.approx(_product_ml(run), abs=0.01)
    assert "drained_before_ml" not in harvest.data
    _replays_identically(run)


async def test_a_dose_the_device_refuses_is_recorded_as_nothing_in(running: Any) -> None:
    """An overfilling dose: the bioreactor refuses the command, its pump never runs. The
    pump's total is not asked (it still counts the last dose that ran): the record says
    nothing went in, and the restart asks again."""
    run = await running(RECIPE.replace("volume_ml: 100.0", "volume_ml: 950.0"))
    await run.until_state(S.HELD)
    (alarm,) = [e for e in run.kinds("alarm") if e.source == "bioreactor"]
    assert "ILLEGAL DATA VALUE" in alarm.data["message"]
    (cut,) = run.kinds("addition_interrupted")
    assert cut.data["delivered_ml"] == 0.0 and cut.data["refused"] is True
    assert not [e for e in run.kinds("reading") if e.data["what"] == "added"]
    (used,) = build_record(run.journal_path).materials
    assert used.volume_ml == 0.0 and "refused by the device: 0 of 950 mL" in used.cut_short
    run.batch.command("restart", who="sam", why="try once more")
    while len(run.kinds("addition_interrupted")) < 2:
        await run.clock.sleep(1.0)
    assert len(_doses(run)) == 2 and _doses(run)[1].data["value"] == 950.0
    run.batch.command("abort", who="sam", why="bag too small for this dose")
    assert await finished(run) is S.ABORTED
    _replays_identically(run)


PH_RECIPE = RECIPE.replace(
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
    "          - {phase: culture, duration_h: 0.05, ph_setpoint: 8.0, base_interval_h: 0.01}\n"
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
)


async def test_the_ph_loop_doses_no_base_while_a_phase_dose_runs_on_the_pump(
    running: Any,
) -> None:
    """The pH loop (acid culture, base every 36 s) stays engaged after its culture; the
    il2 dose runs the bag's one addition pump for 60 s. Before: the loop's base dose went to
    the busy pump, the device refused it, and its alarm held the batch (the dose's own record
    then lost to the base dose's)."""
    run = await running(PH_RECIPE)
    assert await finished(run) is S.COMPLETE
    assert [e.data["parameter"] for e in run.kinds("alarm")] == []
    (dose,) = _doses(run)
    done = next(e for e in run.kinds("confirmed") if e.data["parameter"] == "add_il2")
    base = [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_base"]
    assert base, "the case this test is about: the loop doses base before and after"
    assert not [e for e in base if dose.seq < e.seq < done.seq]
    assert not run.kinds("addition_interrupted")


#: The loop's base dose (50 mL: 30 s on the pump) starts with the culture, which ends 18 s
#: later: the il2 dose comes while the base dose still runs.
BASE_RECIPE = RECIPE.replace(
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
    "          - {phase: culture, duration_h: 0.005, ph_setpoint: 8.0, base_interval_h: 0.01,"
    " base_dose_ml: 50}\n"
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
)


def _confirmed(run: Any, parameter: str) -> list[Any]:
    return [e for e in run.kinds("confirmed") if e.data["parameter"] == parameter]


async def _bag_as(run: Any, parameter: str) -> list[float]:
    """The bag's volume (the twin's truth) as the first ``parameter`` setpoint is journalled."""
    seen: list[float] = []

    def hear(event: Any) -> None:
        if not seen and event.kind == "setpoint" and event.data["parameter"] == parameter:
            seen.append(_bag_ml(run))

    run.listeners.append(hear)
    return seen


async def test_a_phase_dose_that_comes_while_the_ph_loop_doses_base_waits_for_the_pump(
    running: Any,
) -> None:
    """Before: the il2 dose went to the pump while the base dose ran, the device answered
    BUSY, and its alarm held the batch (the dose recorded as refused). Now it waits for the
    pump: its setpoint goes out once the base dose is confirmed, and both go in."""
    run = await running(BASE_RECIPE)
    bag = await _bag_as(run, "add_base")
    assert await finished(run) is S.COMPLETE
    assert run.kinds("alarm") == [] and not run.kinds("addition_interrupted")
    running_add = next(
        e
        for e in run.kinds("transition")
        if e.source.endswith(":add") and e.data["to"] == "Running"
    )
    (base,) = [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_base"]
    (base_done,) = _confirmed(run, "add_base")
    (dose,) = _doses(run)
    assert base.seq < running_add.seq < base_done.seq < dose.seq, "the case: the dose waited"
    assert _bag_ml(run) - bag[0] == pytest.approx(50.0 + DOSE_ML, abs=0.05)
    _replays_identically(run)


async def test_a_hold_while_a_phase_dose_waits_for_the_pump_sends_no_dose(
    running: Any,
) -> None:
    """A person holds the batch while the il2 dose waits for the base dose: nothing of the
    il2 dose goes out (no setpoint, the pump stays stopped while Held); the restart doses
    all of it."""
    run = await running(BASE_RECIPE)
    bag = await _bag_as(run, "add_base")
    loop = asyncio.get_running_loop()

    def hear(event: Any) -> None:
        add_runs = event.kind == "transition" and event.source.endswith(":add")
        if add_runs and event.data["to"] == "Running" and not run.kinds("command"):
            loop.call_later(
                5.0, lambda: run.batch.command("hold", who="kim", why="bag clamp check")
            )

    run.listeners.append(hear)
    await run.until_state(S.HELD)
    assert _doses(run) == []
    held_ml = _bag_ml(run)
    await run.clock.sleep(3600.0)  # held an hour: nothing more goes in
    assert _bag_ml(run) == pytest.approx(held_ml, abs=0.05)
    assert _doses(run) == []

    run.batch.command("restart", who="sam", why="clamp fine")
    assert await finished(run) is S.COMPLETE
    (dose,) = _doses(run)
    assert dose.data["value"] == DOSE_ML
    (done,) = _confirmed(run, "add_il2")
    assert done.seq > dose.seq
    assert _bag_ml(run) - held_ml == pytest.approx(DOSE_ML, abs=0.05)
    assert held_ml - bag[0] <= 50.0 + 0.05
    _replays_identically(run)


@pytest.mark.parametrize("command", ["hold", "abort", "stop", "pause"])
async def test_a_command_as_the_pump_is_handed_over_replays_identically(
    running: Any, command: str
) -> None:
    """A person's command lands in the very turn the base dose is confirmed and the waiting
    il2 dose is handed the pump: the command is seen first, live and in the replay (before,
    the replay sent the il2 setpoint first and diverged from its record)."""
    run = await running(BASE_RECIPE)

    def hear(event: Any) -> None:
        base_done = event.kind == "confirmed" and event.data["parameter"] == "add_base"
        if base_done and not run.kinds("command"):
            run.batch.command(command, who="kim", why="as the base dose ends")

    run.listeners.append(hear)
    async with run.clock.timeout(3600.0):
        while not run.kinds("command"):
            await run.clock.sleep(1.0)
    (given,) = run.kinds("command")
    if command in ("hold", "abort", "pause"):
        assert not [e for e in _doses(run) if e.seq < given.seq]
    if command in ("hold", "pause"):
        await run.clock.sleep(600.0)
        run.batch.command("restart" if command == "hold" else "resume", who="sam", why="go")
    final = await finished(run)
    assert final is {"hold": S.COMPLETE, "pause": S.COMPLETE, "stop": S.STOPPED}.get(
        command, S.ABORTED
    )
    _replays_identically(run)
