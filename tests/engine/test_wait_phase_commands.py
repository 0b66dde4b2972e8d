"""A `wait` phase that checks its PV rarely (`poll_s` up to 600 s) still takes a pause or a
controlled stop within one poll period of the unit (60 s), as a culture does; its time
counts Running time only. Virtual time."""

from __future__ import annotations

from typing import Any

import pytest
from batch_harness import S, draft_recipe, finished

POLL_S = 60.0
HOUR = 3600.0

WAITS = (
    draft_recipe("waits")
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
          - {phase: wait, duration_h: 2, poll_s: 600}
"""
)


def took_effect(run: Any, action: str, state: str) -> float:
    command = next(e for e in run.kinds("command") if e.data["command"] == action)
    reached = next(
        e
        for e in run.kinds("transition")
        if e.seq > command.seq and e.source.startswith("procedure:") and e.data["to"] == state
    )
    return reached.batch_time - command.batch_time


async def test_a_pause_reaches_a_rarely_polling_wait_within_one_poll(running: Any) -> None:
    run = await running("waits.yaml", text=WAITS)
    started = (await run.until_phase_running("2:wait")).batch_time
    await run.clock.sleep(100.0)  # a step of 600 s has begun
    run.batch.command("pause", who="bob", why="shift change")
    await run.until_state(S.PAUSED)
    assert took_effect(run, "pause", "Paused") <= POLL_S
    paused_at = run.clock.now()
    await run.clock.sleep(HOUR)
    run.batch.command("resume", who="bob", why="back")
    assert await finished(run) is S.COMPLETE
    done = next(
        e for e in run.kinds("transition") if "2:wait" in e.source and e.data["to"] == "Complete"
    )
    paused = HOUR + (paused_at - run.kinds("command")[0].batch_time)
    # 2 h of Running time: the pause does not count, the time before it does.
    assert done.batch_time - started == pytest.approx(2 * HOUR + paused, abs=POLL_S)


async def test_a_stop_reaches_a_rarely_polling_wait_within_one_poll(running: Any) -> None:
    run = await running("waits.yaml", text=WAITS)
    await run.until_phase_running("2:wait")
    await run.clock.sleep(100.0)
    run.batch.command("stop", who="bob", why="end of the test")
    assert await finished(run) is S.STOPPED
    assert took_effect(run, "stop", "Stopped") <= POLL_S
