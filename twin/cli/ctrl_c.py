"""Ctrl-C at the terminal running a batch: hold it; a second Ctrl-C aborts it (CLI.md).

A keystroke never kills a batch mid-step. SIGINT becomes an operator command, journalled
with who (the run's ``--operator``) and why, exactly like one from ``poc-twin command``;
the batch then waits Held for a restart, stop or abort from any terminal. The handler
sits on the batch's own event loop (``loop.add_signal_handler``), so the command reaches
the engine between two of its callbacks, never inside one.

One rule covers every press: hold where the state model allows a hold; else, where it
allows an abort, abort if this terminal pressed Ctrl-C before and the batch has not been
restarted since (the second Ctrl-C), or say that a second press aborts (a batch held by
someone else, or brought back Held by ``resume``, is never aborted by one keystroke);
else let the batch finish.

Once the batch has ended, a Ctrl-C (one press too many) only gets a note until the run
command has printed its summary and exits with the code that says how the batch ended.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console

from twin.cli.signals import BetweenScans, on_signal
from twin.engine.states import TABLE, Command, ProceduralState
from twin.errors import CommandRefused

if TYPE_CHECKING:
    from twin.display import BatchDisplay
    from twin.engine.batch import Batch
    from twin.journal import Event

__all__ = ["WHY", "CtrlC", "lines_to"]

WHY = "Ctrl-C at the terminal running the batch"


def _wanted(state: ProceduralState) -> list[Command]:
    """Hold if the state model allows it here, else abort (asking for a hold that is bound
    to be refused would only put a refused command in the batch record)."""
    allowed = {cmd for cmd, src, _ in TABLE if src is state}
    return [cmd for cmd in (Command.HOLD, Command.ABORT) if cmd in allowed]


class CtrlC:
    """SIGINT for one ``poc-twin run``: hold / abort commands while its batch runs, a note after.

    ``attach`` is run_batch's ``on_batch``; the object itself is a journal subscriber (it
    hears the batch end); ``ended`` guards the summary after the batch's loop has closed.
    """

    #: Set by the console script (``twin.console``): the process exits once the command is
    #: done, so ``ended`` keeps the note handler to the very end (a late Ctrl-C must not
    #: turn the batch's exit code into death by SIGINT). In-process callers get theirs back.
    process_exits_after = False

    def __init__(
        self, operator: str, journal_path: Path, console: Console, *, signable: bool = True
    ) -> None:
        self.operator = operator
        self.journal_path = journal_path
        self.console = console
        #: Whether a command from another terminal can be signed for this batch (a site
        #: users file): without one, a hold is left only by the next Ctrl-C.
        self.signable = signable
        #: The batch once it exists: its state says what an interrupt interrupted.
        self.batch: Batch | None = None
        #: Whether SIGINT reaches the batch (False: not on the main thread, or before the
        #: batch exists; then Ctrl-C is a KeyboardInterrupt, which the CLI reports).
        self.attached = False
        #: While True, a Ctrl-C after the batch ended interrupts (a wait the user may cut short).
        self.interruptible = False
        #: The SIGINT handler before the run (restored by ``ended``).
        self._outer: Any = signal.getsignal(signal.SIGINT)
        self._noting = False
        #: A Ctrl-C was pressed here and the batch has not been restarted since: the next
        #: one aborts.
        self.pressed_before = False
        self._acting = BetweenScans()

    # -- while the batch runs ---------------------------------------------------------

    def attach(self, batch: Batch) -> None:
        """From now until the batch ends, SIGINT commands ``batch``."""
        self.batch = batch
        self.attached = on_signal(signal.SIGINT, self.pressed, batch)

    def pressed(self, batch: Batch) -> None:
        """One Ctrl-C: give the command it means, between two scans of the control modules
        (replay then finds it where the run took it), and say so on one line of stderr."""
        self._acting.then(
            batch, lambda: self.console.print(self.act(batch), highlight=False, markup=False)
        )

    def act(self, batch: Batch) -> str:
        """Give the command this Ctrl-C means now; return what happened, in one line."""
        state = batch.state
        if state.is_final:  # the batch is over; only its process is still closing down
            return f"Ctrl-C: the batch has ended {state.label}; finishing up"
        first, self.pressed_before = not self.pressed_before, True
        wanted = _wanted(state)
        if first and wanted == [Command.ABORT]:  # not held from here: one press never aborts
            return f"Ctrl-C: the batch is {state.label}; Ctrl-C again aborts it{self._elsewhere()}"
        for cmd in wanted:
            try:
                batch.command(cmd, who=self.operator, why=WHY, via="ctrl-c")
            except CommandRefused:
                continue
            if cmd is Command.HOLD:
                return (
                    f"Ctrl-C: batch held by {self.operator}; Ctrl-C again aborts it"
                    f"{self._elsewhere(' (or stop, abort)')}"
                )
            return (
                f"Ctrl-C: batch aborted by {self.operator} (it was {state.label}); it drives "
                "its equipment to the safe state and ends Aborted"
            )
        return (
            f"Ctrl-C: the batch is {state.label}, where neither hold nor abort is valid; "
            "it finishes on its own"
        )

    def _elsewhere(self, more: str = "") -> str:
        """What another terminal can do: restart it, or nothing (no command can be signed)."""
        if not self.signable:
            return (
                " (no site users file: no command from another terminal can be signed for "
                "this batch)"
            )
        return (
            f", or from another terminal: poc-twin command {self.journal_path} restart "
            f"--operator NAME --reason TEXT{more}"
        )

    def __call__(self, event: Event) -> None:
        """Journal subscriber: when the procedure ends, SIGINT leaves the loop for a note.

        The loop stops hearing SIGINT here, while it still runs: asyncio closes its
        self-pipe before it drops its signal handler, and a signal in between makes
        CPython print a traceback-like "Exception ignored" message.
        """
        if (
            event.kind == "transition"
            and event.source.startswith("procedure:")
            and event.data.get("to") in ("Restarting", "Running")
        ):
            # Restarted (even if the restart fails and holds again): the next Ctrl-C is a
            # first one; the earlier press's "Ctrl-C again aborts it" was about that hold.
            self.pressed_before = False
        if (
            self.attached
            and not self._noting
            and event.kind == "transition"
            and self.batch is not None
            and self.batch.state.is_final
        ):
            self._note_from_now(self.batch.state)
            signal.set_wakeup_fd(-1)  # the loop's own SIGINT handler is dropped at its close

    # -- after the batch ended ----------------------------------------------------------

    def _note_from_now(self, final: ProceduralState) -> None:
        def note(signum: int, frame: FrameType | None) -> None:
            if self.interruptible:
                raise KeyboardInterrupt
            self.console.print(
                f"Ctrl-C: the batch has ended {final.label}; finishing up", highlight=False
            )

        signal.signal(signal.SIGINT, note)
        self._noting = True

    @contextlib.contextmanager
    def ended(self, final: ProceduralState) -> Iterator[None]:
        """Around the run command's last steps (summary, exit): a Ctrl-C only gets a note.

        Re-installs the note if the loop's close reset SIGINT to its default. On the way out
        an in-process caller (a test runner) gets its own handler back; the ``poc-twin``
        process keeps the note until it exits (``process_exits_after``).
        """
        try:
            self._note_from_now(final)
        except ValueError:  # not the main thread: nothing to guard
            yield
            return
        try:
            yield
        finally:
            if not self.process_exits_after:
                signal.signal(signal.SIGINT, self._outer)
                self._noting = False

    @contextlib.contextmanager
    def allow_interrupt(self) -> Iterator[None]:
        """A wait after the batch ended that Ctrl-C may cut short (telemetry delivery)."""
        self.interruptible = True
        try:
            yield
        finally:
            self.interruptible = False


def lines_to(display: BatchDisplay | None, fallback: Console) -> Console:
    """Where Ctrl-C's lines go: through the live panel's own console while it is drawn on a
    terminal (a line printed past it, on stderr, is drawn over by its next refresh and the
    person never reads "again aborts"); else ``fallback`` (stderr), where scripts read them."""
    if display is not None and display.console.is_terminal:
        return display.console
    return fallback
