"""Quantities from measurements: a vector dose from the count, feeds and perfusion steps from
samples and density, a harvest once the dose is in the bag; QC samples (issue 16, item 3).

Each runs the real engine on the twin (virtual time) and reads what the journal says.
"""

from __future__ import annotations

from typing import Any

import pytest
from batch_harness import S, finished

HOUR = 3600.0

HEAD = """\
recipe: {id: quantities, product: test, version: 1.0.0, status: draft, author: test}
equipment:
  bioreactor: {type: bioreactor}
  gas: {type: gas_dispenser}
procedure:
  - unit_procedure: expansion
    operations:
      - operation: setup
        phases:
          - {phase: set_rocking, rpm: 15}
          - {phase: set_gas, flows_sccm: {air: 190, co2: 10}}
          - {phase: add, material: activator, volume_ml: 2}
          - {phase: add, material: il2, volume_ml: 1}
      - operation: work
        phases:
"""


#: Gene transfer only after the chain of identity: the batch's ids, scanned when asked.
AT_THE_BAG = {"patient_id": "P-1", "bag_id": "BAG-1", "scan_after_s": 0.0}


def recipe(*phases: str) -> str:
    return HEAD + "".join(f"          - {p}\n" for p in phases)


def setpoints(run: Any, parameter: str) -> list[Any]:
    return [e for e in run.kinds("setpoint") if e.data["parameter"] == parameter]


async def test_the_vector_dose_is_worked_out_from_the_count(running: Any) -> None:
    run = await running(
        "q.yaml",
        recipe(
            "{phase: sample, name: day-1 count}",
            "{phase: confirm_identity}",
            "{phase: add, material: vector, moi: 5, titre: 2e8 TU/mL, max_volume_ml: 10 mL}",
        ),
        **AT_THE_BAG,
    )
    assert await finished(run) is S.COMPLETE
    count = run.kinds("sample")[0].data
    (dose,) = setpoints(run, "add_vector")
    basis = dose.data["basis"]
    cells = count["viable_cells_per_ml"] * basis["volume_ml"]
    assert basis["viable_cells_per_ml"] == count["viable_cells_per_ml"]
    assert basis["viable_cells"] == pytest.approx(cells)
    assert dose.data["value"] == pytest.approx(5 * cells / 2e8, abs=0.01)
    assert 1.0 < dose.data["value"] < 10.0  # ~1e8 cells at MOI 5 / 2e8 TU/mL: ~2.5 mL


async def test_a_dose_above_its_ceiling_holds_the_batch_and_doses_nothing(running: Any) -> None:
    run = await running(
        "q.yaml",
        recipe(
            "{phase: sample, name: day-1 count}",
            "{phase: confirm_identity}",
            "{phase: add, material: vector, moi: 50, titre: 1e7 TU/mL, max_volume_ml: 10 mL}",
        ),
        **AT_THE_BAG,
    )
    await run.until_state(S.HELD)
    assert not setpoints(run, "add_vector")
    failed = [e for e in run.events if e.kind == "phase_failed" or "needs" in str(e.data)]
    assert any("mL of vector, outside 0-10 mL: nothing dosed" in str(e.data) for e in failed)
    run.batch.command("abort", who="kim", why="dose cannot be given")
    assert await finished(run) is S.ABORTED


async def test_feeds_by_glucose_and_a_harvest_when_the_target_is_reached(running: Any) -> None:
    """Every daily sample below 50 mM glucose (always) feeds 20 mL, at most twice; the
    culture ends at the first sample that shows 1e8 viable cells (day 1), not at day 3."""
    run = await running(
        "q.yaml",
        recipe(
            "{phase: culture, duration_h: 3 d, sample_every_h: 24, target: {viable_cells: 1e8},"
            " feeds: [{volume_ml: 20 mL, when_glucose_below: 50 mM, max_feeds: 2}]}",
            "{phase: sample, name: final, qc: [sterility, vcn]}",
        ),
    )
    assert await finished(run) is S.COMPLETE
    (reached,) = run.kinds("target_reached")
    assert reached.data["cells"] >= 1e8 and reached.data["culture_h"] == pytest.approx(24.0)
    assert reached.batch_time < 30 * HOUR
    feeds = setpoints(run, "add_medium")
    assert len(feeds) == 1 and feeds[0].data["basis"]["below"] == 50.0  # one sample, one feed
    final = run.kinds("sample")[-1].data
    assert final["name"] == "final" and final["qc_tests"] == ["sterility", "vcn"]


async def test_a_target_is_not_judged_before_its_hour(running: Any) -> None:
    """The day-1 sample already shows 1e8 cells; with ``not_before_h: 2 d`` (transient CAR+
    after a non-viral transfer) the culture goes on and ends at the day-2 sample."""
    run = await running(
        "q.yaml",
        recipe(
            "{phase: culture, duration_h: 3 d, sample_every_h: 24,"
            " target: {viable_cells: 1e8, not_before_h: 2 d}}",
        ),
    )
    assert await finished(run) is S.COMPLETE
    samples = run.kinds("sample")
    assert samples[0].data["viable_cells_per_ml"] * 100 >= 1e8  # enough on day 1 already
    (reached,) = run.kinds("target_reached")
    assert reached.data["culture_h"] == pytest.approx(48.0)
    assert len(samples) == 2


async def test_perfusion_steps_up_as_the_culture_grows_denser(running: Any) -> None:
    run = await running(
        "q.yaml",
        recipe(
            "{phase: culture, duration_h: 2 d, perfusion: {start_at_cells_per_ml: 0.5e6,"
            " volumes_per_day: 0.5, ramp: [{at_cells_per_ml: 1.2e6, volumes_per_day: 1.0}]}}",
        ),
    )
    assert await finished(run) is S.COMPLETE
    rates = [e.data["value"] for e in setpoints(run, "perfusion_sp")]
    assert len(rates) == 2 and rates[1] == pytest.approx(2 * rates[0], rel=0.05), rates
    readings = [e for e in run.kinds("reading") if e.source == "bioreactor" and "values" in e.data]
    second = setpoints(run, "perfusion_sp")[1].batch_time
    before = [e for e in readings if e.batch_time < second][-1]
    assert before.data["values"]["viable_cells_per_ml"] >= 1.1e6  # stepped at the density


async def test_a_hold_raised_by_the_sample_does_not_lose_that_samples_feed(running: Any) -> None:
    """A low-glucose monitor (sample value) holds the batch as the sample is counted, before
    the feed it calls for is given: after the restart that sample's decisions are made (fed
    once, never twice)."""
    text = recipe(
        "{phase: culture, duration_h: 30, sample_every_h: 24,"
        " monitors: [{name: glucose low, pv: glucose_mm, low: 50, reaction: hold}],"
        " feeds: [{volume_ml: 20 mL, when_glucose_below: 50 mM, max_feeds: 3}]}",
    )
    run = await running("q.yaml", text)
    await run.until_state(S.HELD)
    assert len(run.kinds("sample")) == 1 and not setpoints(run, "add_medium")
    run.batch.command("restart", who="kim", why="glucose checked: feed")
    assert await finished(run) is S.COMPLETE
    feeds = setpoints(run, "add_medium")
    assert len(feeds) == 1, [f.data for f in feeds]  # the held sample's feed, given once
    assert feeds[0].batch_time > run.kinds("sample")[0].batch_time
