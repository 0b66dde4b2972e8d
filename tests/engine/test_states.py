"""Every cell of the ISA-88 state/command table (STATE_MODEL.md): valid moves and refusals."""

from __future__ import annotations

import itertools

import pytest

from twin.engine.states import TABLE, Command, ProceduralState, StateMachine
from twin.errors import CommandRefused

S = ProceduralState
C = Command

# The table of STATE_MODEL.md, written out again independently of the code under test.
EXPECTED: dict[tuple[S, C], S] = {
    (S.IDLE, C.START): S.RUNNING,
    (S.RUNNING, C.PAUSE): S.PAUSING,
    (S.RUNNING, C.HOLD): S.HOLDING,
    (S.RUNNING, C.STOP): S.STOPPING,
    (S.RUNNING, C.ABORT): S.ABORTING,
    (S.RUNNING, C.FINISH): S.COMPLETE,
    (S.PAUSING, C.HOLD): S.HOLDING,
    (S.PAUSING, C.STOP): S.STOPPING,
    (S.PAUSING, C.ABORT): S.ABORTING,
    (S.PAUSING, C.FINISH): S.PAUSED,
    (S.PAUSED, C.RESUME): S.RUNNING,
    (S.PAUSED, C.HOLD): S.HOLDING,
    (S.PAUSED, C.STOP): S.STOPPING,
    (S.PAUSED, C.ABORT): S.ABORTING,
    (S.HOLDING, C.STOP): S.STOPPING,
    (S.HOLDING, C.ABORT): S.ABORTING,
    (S.HOLDING, C.FINISH): S.HELD,
    (S.HELD, C.RESTART): S.RESTARTING,
    (S.HELD, C.STOP): S.STOPPING,
    (S.HELD, C.ABORT): S.ABORTING,
    (S.RESTARTING, C.HOLD): S.HOLDING,
    (S.RESTARTING, C.STOP): S.STOPPING,
    (S.RESTARTING, C.ABORT): S.ABORTING,
    (S.RESTARTING, C.FINISH): S.RUNNING,
    (S.STOPPING, C.ABORT): S.ABORTING,
    (S.STOPPING, C.FINISH): S.STOPPED,
    (S.STOPPED, C.ABORT): S.ABORTING,
    (S.STOPPED, C.RESET): S.IDLE,
    (S.ABORTING, C.FINISH): S.ABORTED,
    (S.ABORTED, C.RESET): S.IDLE,
    (S.COMPLETE, C.RESET): S.IDLE,
}

CELLS = list(itertools.product(list(S), list(C)))


def test_declared_table_matches_the_contract() -> None:
    assert {(src, cmd): dst for cmd, src, dst in TABLE} == EXPECTED


@pytest.mark.parametrize(("state", "command"), CELLS, ids=lambda v: v.name.lower())
def test_every_cell(state: S, command: C) -> None:
    machine = StateMachine("phase:test", initial=state)
    heard: list[tuple[S, S, C, str, str]] = []
    machine.subscribe(lambda *args: heard.append(args))
    expected = EXPECTED.get((state, command))
    if expected is None:
        with pytest.raises(CommandRefused) as refused:
            machine.fire(command, who="op", why="test")
        message = str(refused.value)
        assert state.label in message
        for valid in machine.valid_commands():
            assert valid in message
        assert machine.state is state
        assert heard == []
    else:
        machine.fire(command, who="op", why="test")
        assert machine.state is expected
        assert heard == [(state, expected, command, "op", "test")]


def test_refusal_names_state_and_valid_commands() -> None:
    machine = StateMachine("procedure:x", initial=S.HELD)
    with pytest.raises(
        CommandRefused,
        match=r"'pause' is not valid in state Held; valid commands: "
        r"restart, stop, abort",
    ):
        machine.fire("pause")


def test_only_ing_states_run_logic() -> None:
    running = {s for s in S if s.runs_logic}
    assert running == {S.RUNNING, S.PAUSING, S.HOLDING, S.RESTARTING, S.STOPPING, S.ABORTING}
