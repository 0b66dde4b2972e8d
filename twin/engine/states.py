"""The ISA-88 procedural state model as a declared table (../shared/design/STATE_MODEL.md).

One Enum of states, one list of (command, from, to) rows fed to ``transitions``.
The same model serves the procedure, each unit procedure, operation and phase.
An illegal command raises :class:`~twin.errors.CommandRefused`, naming the state
and the commands that are valid there.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum, StrEnum

from transitions import Machine, MachineError

from twin.errors import CommandRefused

__all__ = [
    "COMMANDS",
    "LEVELS",
    "TABLE",
    "Command",
    "ProceduralState",
    "StateMachine",
    "Transition",
]

#: The levels of the procedural model a command may name, the procedure first.
LEVELS = ("procedure", "unit", "operation", "phase")


class ProceduralState(Enum):
    """ISA-88 procedural states, valued with the Rockwell state codes for reference."""

    IDLE = 100
    RUNNING = 50
    PAUSING = 55
    PAUSED = 56
    HOLDING = 20
    HELD = 60
    RESTARTING = 40
    STOPPING = 30
    STOPPED = 80
    ABORTING = 10
    ABORTED = 90
    COMPLETE = 70

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @property
    def is_final(self) -> bool:
        """Waiting states a batch ends in."""
        return self in (ProceduralState.COMPLETE, ProceduralState.STOPPED, ProceduralState.ABORTED)

    @property
    def runs_logic(self) -> bool:
        """Only the '-ing' states run logic; the others wait."""
        return self in _ACTIVE


class Command(StrEnum):
    """Operator (and engine) commands; ``finish`` is the 'logic finishes' column."""

    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    HOLD = "hold"
    RESTART = "restart"
    STOP = "stop"
    ABORT = "abort"
    RESET = "reset"
    FINISH = "finish"


S = ProceduralState
_ACTIVE = frozenset({S.RUNNING, S.PAUSING, S.HOLDING, S.RESTARTING, S.STOPPING, S.ABORTING})

Transition = tuple[Command, ProceduralState, ProceduralState]

#: The contract, row by row of STATE_MODEL.md; blank cells are simply absent.
TABLE: tuple[Transition, ...] = (
    (Command.START, S.IDLE, S.RUNNING),
    (Command.PAUSE, S.RUNNING, S.PAUSING),
    (Command.HOLD, S.RUNNING, S.HOLDING),
    (Command.STOP, S.RUNNING, S.STOPPING),
    (Command.ABORT, S.RUNNING, S.ABORTING),
    (Command.FINISH, S.RUNNING, S.COMPLETE),
    (Command.HOLD, S.PAUSING, S.HOLDING),
    (Command.STOP, S.PAUSING, S.STOPPING),
    (Command.ABORT, S.PAUSING, S.ABORTING),
    (Command.FINISH, S.PAUSING, S.PAUSED),
    (Command.RESUME, S.PAUSED, S.RUNNING),
    (Command.HOLD, S.PAUSED, S.HOLDING),
    (Command.STOP, S.PAUSED, S.STOPPING),
    (Command.ABORT, S.PAUSED, S.ABORTING),
    (Command.STOP, S.HOLDING, S.STOPPING),
    (Command.ABORT, S.HOLDING, S.ABORTING),
    (Command.FINISH, S.HOLDING, S.HELD),
    (Command.RESTART, S.HELD, S.RESTARTING),
    (Command.STOP, S.HELD, S.STOPPING),
    (Command.ABORT, S.HELD, S.ABORTING),
    (Command.HOLD, S.RESTARTING, S.HOLDING),
    (Command.STOP, S.RESTARTING, S.STOPPING),
    (Command.ABORT, S.RESTARTING, S.ABORTING),
    (Command.FINISH, S.RESTARTING, S.RUNNING),
    (Command.ABORT, S.STOPPING, S.ABORTING),
    (Command.FINISH, S.STOPPING, S.STOPPED),
    (Command.ABORT, S.STOPPED, S.ABORTING),
    (Command.RESET, S.STOPPED, S.IDLE),
    (Command.FINISH, S.ABORTING, S.ABORTED),
    (Command.RESET, S.ABORTED, S.IDLE),
    (Command.RESET, S.COMPLETE, S.IDLE),
)

#: Commands an operator may give (``finish`` is the element's own logic).
COMMANDS: tuple[Command, ...] = tuple(c for c in Command if c is not Command.FINISH)

Listener = Callable[[ProceduralState, ProceduralState, Command, str, str], None]


class StateMachine:
    """The procedural state of one element (procedure, unit procedure, operation or phase).

    Listeners hear every transition as (from, to, command, who, why): the journal
    is one of them, so no transition can go unrecorded.
    """

    def __init__(self, element: str, initial: ProceduralState = S.IDLE) -> None:
        self.element = element
        self.state: ProceduralState = initial
        self._listeners: list[Listener] = []
        self._pending: tuple[str, str] = ("", "")
        self._machine = Machine(
            model=self,
            states=list(ProceduralState),
            initial=initial,
            transitions=[
                {"trigger": c.value, "source": src, "dest": dst, "after": "_notify"}
                for c, src, dst in TABLE
            ],
            auto_transitions=False,
            send_event=True,
            model_attribute="state",
        )

    def subscribe(self, listener: Listener) -> None:
        """Hear every transition of this element."""
        self._listeners.append(listener)

    def valid_commands(self, state: ProceduralState | None = None) -> list[str]:
        """Operator commands accepted in ``state`` (default: the current one)."""
        here = self.state if state is None else state
        return [c.value for c, src, _ in TABLE if src is here and c is not Command.FINISH]

    def can(self, command: Command | str) -> bool:
        """Whether ``command`` would be accepted now."""
        cmd = Command(command)
        return any(c is cmd and src is self.state for c, src, _ in TABLE)

    def fire(self, command: Command | str, *, who: str = "engine", why: str = "") -> None:
        """Apply one command; refused commands raise CommandRefused and change nothing."""
        cmd = Command(command)
        self._pending = (who, why)
        try:
            self.trigger(cmd.value)  # type: ignore[attr-defined]
        except MachineError:
            raise CommandRefused(
                self.element, cmd.value, self.state.label, self.valid_commands()
            ) from None

    def _notify(self, event: object) -> None:
        transition = event.transition  # type: ignore[attr-defined]
        src = ProceduralState[transition.source]
        dst = ProceduralState[transition.dest]
        cmd = Command(event.event.name)  # type: ignore[attr-defined]
        who, why = self._pending
        for listener in self._listeners:
            listener(src, dst, cmd, who, why)
