"""A culture's feed bolus that a hold cuts short is topped up after the restart: the rest,
by the pump's total, with its basis in the record, so the bag gets the volume the sample
decided, as an ``add`` phase's dose does. Before: the feed was recorded as cut short and
never completed (a third of a 100 mL feed, and the culture went on underfed).
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

FEED_ML = 100.0  # 60 s on the twin's pump (100 mL/min)

FED = RECIPE.replace(
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
    "          - {phase: culture, duration_h: 3, sample_every_h: 1,"
    f" feeds: [{{material: medium, volume_ml: {FEED_ML:g}, when_cells_per_ml_above: 1,"
    " max_feeds: 1}]}\n",
)


def _feeds(run: Any) -> list[Any]:
    return [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_medium"]


@pytest.mark.parametrize("after_s", [0.0, 20.0, 59.0])
async def test_a_feed_cut_short_by_a_hold_is_topped_up_after_the_restart(
    running: Any,  # noqa: F811 (the fixture of test_pump_cut_short)
    after_s: float,
) -> None:
    run = await running(FED)
    loop = asyncio.get_running_loop()
    bag: list[float] = []

    def hear(event: Any) -> None:
        if event.kind == "confirmed" and event.data["parameter"] == "add_medium":
            bag.append(_bag_ml(run))  # as the rest is in (no sample drawn between)
        if event.kind == "setpoint" and event.data["parameter"] == "add_medium" and not bag:
            bag.append(_bag_ml(run))
            loop.call_later(after_s, lambda: run.batch.command("hold", who="kim", why="line check"))

    run.listeners.append(hear)
    await run.until_state(S.HELD)
    (cut,) = run.kinds("addition_interrupted")
    assert cut.data["parameter"] == "add_medium" and cut.data["requested_ml"] == FEED_ML
    delivered = cut.data["delivered_ml"]
    assert delivered < FEED_ML
    await run.clock.sleep(1800.0)
    run.batch.command("restart", who="sam", why="line fine")
    assert await finished(run) is S.COMPLETE

    first, rest = _feeds(run)  # the feed, then its rest: nothing more
    assert rest.data["value"] == pytest.approx(FEED_ML - delivered, abs=0.01)
    assert rest.data["basis"]["rest_of_ml"] == FEED_ML
    assert rest.data["basis"]["delivered_ml"] == delivered
    assert rest.data["basis"]["setpoint"] == first.seq
    done = [e for e in run.kinds("confirmed") if e.data["parameter"] == "add_medium"]
    assert len(done) == 1 and done[0].seq > rest.seq
    # the bag got the whole feed (it holds no other addition in this recipe)
    assert bag[1] - bag[0] == pytest.approx(FEED_ML, abs=0.05)
    _replays_identically(run)
