"""The fault matrix: each scenario file's faults, injected into the bench while a shipped recipe
runs, must lead to the ISA-88 outcome the file expects — which alarm, within what time, which
hold, and how the batch ends once the operator acts. A bench without a twin cannot inject
faults: its scenarios are skipped, saying so."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from people import BAG, PATIENT, scan_at_the_bag

from twin.bench import LoadedBench, OpenBench
from twin.clock import Clock
from twin.engine.batch import Batch
from twin.journal import Event
from twin.recipe import load_recipe
from twin.replay import replay
from twin.runner import run_batch
from twin.serve.scenario import LoadedScenario, load_scenario
from twin.serve.scheduler import FaultScheduler

ROOT = Path(__file__).resolve().parents[1]
MATRIX = sorted((ROOT / "hil_tests" / "scenarios" / "matrix").glob("*.yaml"))


@dataclass
class Seen:
    """What happened, in batch seconds."""

    first_fault: float | None = None
    last_fault_end: float = 0.0
    alarm: Event | None = None
    held_at: float | None = None
    held_levels: set[str] = field(default_factory=set)
    actions: list[str] = field(default_factory=list)


#: Element kinds as the journal names them, outermost first.
LEVELS = ("procedure", "unit", "operation", "phase")


def alarm_kind(alarm: Event) -> str:
    """Limit alarms carry their kind; engine alarms (communication, interlock...) their name."""
    return str(alarm.data.get("kind", alarm.data.get("alarm")))


def named(kind: str, source: str | None, pv: str | None) -> str:
    """An alarm as the table shows it: ``limit bioreactor.do_pct``, ``communication bioreactor``."""
    where = ".".join(p for p in (source, pv) if p)
    return f"{kind} {where}" if where else kind


def outermost(levels: set[str]) -> str | None:
    """The level a hold was at: the outermost element that went Held."""
    return next((level for level in LEVELS if level in levels), None)


@pytest.mark.parametrize("path", MATRIX, ids=lambda p: p.stem)
def test_fault_leads_to_expected_outcome(
    path: Path,
    bench: LoadedBench,
    seed: int | None,
    tmp_path: Path,
    matrix_results: list[dict[str, str]],
) -> None:
    scenario: LoadedScenario = load_scenario(path)
    expect = scenario.model.expect
    assert expect is not None, f"{path}: a matrix scenario needs an 'expect' block"
    alarm = expect.alarm
    expected = (
        f"{named(alarm.kind, alarm.source, alarm.pv) if alarm else 'no alarm'} / "
        f"{expect.hold or 'no hold'} / {expect.outcome}"
    )
    if bench.model.twin is None:
        why = f"bench {bench.model.bench} has no twin: faults cannot be injected there"
        row = {"scenario": path.stem, "expected": expected, "seen": f"skipped: {why}"}
        matrix_results.append({**row, "detect_s": "-", "hold_s": "-", "seed": "-"})
        pytest.skip(why)
    scenario.check_devices({n: b.type for n, b in bench.model.equipment.items()})
    faults = scenario.model.faults
    seen = Seen(
        first_fault=min(f.at for f in faults) if faults else None,
        last_fault_end=max((f.until or f.at) for f in faults) if faults else 0.0,
    )
    batches: list[Batch] = []
    operator: list[asyncio.Task[None]] = []
    clocks: list[Clock] = []

    def start_faults(opened: OpenBench, clock: Clock) -> None:
        clocks.append(clock)
        FaultScheduler(
            scenario.model, plant=opened.twin.plant, servers=opened.twin.servers, clock=clock
        ).start()

    async def act_when_fault_is_over() -> None:
        await clocks[0].sleep_until(seen.last_fault_end)
        assert expect is not None and expect.then is not None
        seen.actions.append(expect.then)
        batches[0].command(expect.then, who="hil-operator", why=f"scenario {path.stem}")

    def watch(event: Event) -> None:
        if event.kind == "alarm" and seen.alarm is None:
            seen.alarm = event
        if event.kind == "transition" and event.data["to"] == "Held":
            seen.held_at = seen.held_at if seen.held_at is not None else event.batch_time
            seen.held_levels.add(event.source.split(":", 1)[0])
        if (
            event.kind == "transition"
            and event.source.startswith("procedure:")
            and event.data["to"] == "Held"
            and expect.then is not None
        ):
            operator.append(asyncio.get_running_loop().create_task(act_when_fault_is_over()))

    journal = tmp_path / "batch.sqlite"
    final = run_batch(
        load_recipe(ROOT / "recipes" / expect.recipe),
        bench,
        journal,
        batch_id=f"HIL-{path.stem}",
        operator="hil",
        seed=seed,
        patient_id=PATIENT,
        bag_id=BAG,
        subscribers=[watch, scan_at_the_bag(batches)],
        on_batch=batches.append,
        on_bench=start_faults,
        pace=None,  # the scripted operator acts on the batch clock, not a person's
    )
    detect = (
        seen.alarm.batch_time - seen.first_fault
        if seen.alarm is not None and seen.first_fault is not None
        else None
    )
    to_hold = (
        seen.held_at - seen.first_fault
        if seen.held_at is not None and seen.first_fault is not None
        else None
    )
    raised = (
        named(alarm_kind(seen.alarm), seen.alarm.source, seen.alarm.data.get("pv"))
        if seen.alarm
        else "no alarm"
    )
    matrix_results.append(
        {
            "scenario": path.stem,
            "expected": expected,
            "seen": f"{raised} / {outermost(seen.held_levels) or 'no hold'} / {final.label}",
            "detect_s": f"{detect:.0f}" if detect is not None else "-",
            "hold_s": f"{to_hold:.0f}" if to_hold is not None else "-",
            "seed": str(seed),
        }
    )
    assert final.label == expect.outcome
    if expect.alarm is None:
        assert seen.alarm is None, f"unexpected alarm: {seen.alarm.data if seen.alarm else ''}"
    else:
        assert seen.alarm is not None, "no alarm was raised"
        data = seen.alarm.data
        assert alarm_kind(seen.alarm) == expect.alarm.kind, data
        if expect.alarm.source:
            assert seen.alarm.source == expect.alarm.source
        if expect.alarm.pv:
            assert data.get("pv") == expect.alarm.pv
        if expect.within is not None:
            assert detect is not None and detect <= expect.within, f"detected after {detect} s"
    if expect.hold is None:
        assert seen.held_at is None
    else:
        assert outermost(seen.held_levels) == expect.hold
    # The validator's check on a faulted batch: replayed against its recorded device I/O (the
    # late, garbled and missing answers included), the engine takes the same decisions. Done
    # for the short scenarios; the 10-day recipes are replayed by the acceptance tests.
    if expect.recipe == "smoke.yaml":
        replayed = replay(journal)
        assert replayed.identical, replayed.divergence and replayed.divergence.describe()
