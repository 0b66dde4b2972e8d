"""How a replay compares the batch times of a wall-clock bench's record: on the wall the
engine's own work between two events takes real time, so the replay's clock follows the
record's forward by up to ``WALL_LAG_S``; an event later than that, or earlier than the
replay makes it, is a divergence, as on the twin (where times must match exactly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.journal import Event
from twin.replay.journal import WALL_LAG_S, ReplayJournal


def _record(*times: float) -> list[Event]:
    return [
        Event(i + 1, t, "", "transition", "procedure:p", {"n": i}, "", "")
        for i, t in enumerate(times)
    ]


async def _replayed(
    times: list[float], at: list[float], wall: bool
) -> tuple[ReplayJournal, list[float]]:
    now = [0.0]
    caught: list[float] = []

    def catch_up(t: float) -> None:
        caught.append(t)
        now[0] = t

    journal = ReplayJournal(
        _record(*times),
        lambda: now[0],
        path=Path("unused"),
        catch_up=catch_up if wall else None,
    )
    for i, t in enumerate(at):
        now[0] = max(now[0], t)
        journal.append("transition", "procedure:p", {"n": i})
    return journal, caught


async def test_the_replay_follows_a_wall_records_small_lags() -> None:
    journal, caught = await _replayed([1.0, 1.004, 2.5], [1.0, 1.0, 2.0], wall=True)
    assert journal.divergence is None and journal.exhausted
    assert caught == [1.004, 2.5]


@pytest.mark.parametrize(
    "recorded,replayed",
    [
        ([1.0, 1.0 + WALL_LAG_S + 0.01], [1.0, 1.0]),  # the record much later: a divergence
        ([1.0, 1.5], [1.0, 1.6]),  # the replay later than the record
    ],
)
async def test_a_wall_record_off_by_more_is_a_divergence(
    recorded: list[float], replayed: list[float]
) -> None:
    journal, _ = await _replayed(recorded, replayed, wall=True)
    assert journal.divergence is not None and journal.divergence.seq == 2
    assert "at another batch time" in journal.divergence.reason


async def test_a_twin_record_must_match_exactly() -> None:
    journal, caught = await _replayed([1.0, 1.004], [1.0, 1.0], wall=False)
    assert journal.divergence is not None and not caught
