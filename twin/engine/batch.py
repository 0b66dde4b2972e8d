"""The batch: a recipe's procedure executed under the ISA-88 state model.

The procedure, each unit procedure, operation and phase has its own
:class:`StateMachine`; an operator command is checked against the procedure's
state (refused with the valid commands otherwise) and mirrored down the chain
of active elements. Only the '-ing' states run logic:

- Running runs the current phase; between phases, and wherever a phase calls
  ``safe_point``, a pending pause takes effect.
- Holding cancels the phase's logic and drives every equipment item to its safe
  state; Held waits for restart, stop or abort.
- Restarting re-establishes every setpoint written so far, then the phase
  continues where it was (phases keep their own progress).
- Stopping and Aborting drive equipment safe and end the batch.

A phase that fails (a device stops answering, a check is missed) holds the
batch and the journal says why; an operator decides what happens next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twin.clock import Clock
from twin.engine.context import BatchContext, PhaseInterrupted
from twin.engine.inbox import serve_commands
from twin.engine.phases import PhaseLogic, make_phase
from twin.engine.states import Command, ProceduralState, StateMachine
from twin.errors import CommandRefused, EquipmentError
from twin.journal import Journal
from twin.recipe import LoadedRecipe

__all__ = ["Batch", "PhaseStep"]

S = ProceduralState


@dataclass
class PhaseStep:
    """One phase of the procedure with the elements it sits in."""

    path: str
    unit: StateMachine
    operation: StateMachine
    phase: StateMachine
    logic: PhaseLogic
    last_of_operation: bool
    last_of_unit: bool


class Batch:
    """Runs one batch of a recipe on a set of equipment and records everything in the journal."""

    def __init__(
        self,
        recipe: LoadedRecipe,
        equipment: dict[str, Any],
        journal: Journal,
        clock: Clock,
        *,
        batch_id: str,
        operator: str,
    ) -> None:
        self.recipe = recipe
        self.equipment = equipment
        self.journal = journal
        self.clock = clock
        self.batch_id = batch_id
        self.operator = operator
        self.procedure = self._machine(f"procedure:{recipe.model.recipe.id}")
        self.steps = list(self._build_steps())
        self.position = 0
        self.hold_reason = ""
        self._waiters: list[asyncio.Future[None]] = []
        self.ctx = BatchContext(clock, journal, equipment, safe_point=self._safe_point)

    # -- structure -----------------------------------------------------------------

    def _machine(self, element: str) -> StateMachine:
        machine = StateMachine(element)
        machine.subscribe(
            lambda src, dst, cmd, who, why: self._on_transition(element, src, dst, cmd, who, why)
        )
        return machine

    def _build_steps(self) -> Iterable[PhaseStep]:
        for unit in self.recipe.model.procedure:
            unit_sm = self._machine(f"unit:{unit.unit_procedure}")
            for o, op in enumerate(unit.operations):
                op_sm = self._machine(f"operation:{unit.unit_procedure}/{op.operation}")
                for i, params in enumerate(op.phases):
                    logic = make_phase(params)
                    path = f"{unit.unit_procedure}/{op.operation}/{i + 1}:{logic.label}"
                    yield PhaseStep(
                        path=path,
                        unit=unit_sm,
                        operation=op_sm,
                        phase=self._machine(f"phase:{path}"),
                        logic=logic,
                        last_of_operation=i == len(op.phases) - 1,
                        last_of_unit=i == len(op.phases) - 1 and o == len(unit.operations) - 1,
                    )

    @property
    def current(self) -> PhaseStep | None:
        return self.steps[self.position] if self.position < len(self.steps) else None

    @property
    def state(self) -> ProceduralState:
        return self.procedure.state

    def _chain(self) -> list[StateMachine]:
        step = self.current
        chain = [self.procedure]
        if step is not None:
            chain += [step.unit, step.operation, step.phase]
        return chain

    # -- events --------------------------------------------------------------------

    def _on_transition(
        self, element: str, src: S, dst: S, cmd: Command, who: str, why: str
    ) -> None:
        self.journal.append(
            "transition",
            element,
            {"from": src.label, "to": dst.label, "command": cmd.value, "who": who, "why": why},
        )
        if element == self.procedure.element:
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def _wait_change(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def _mirror(self, command: Command, who: str, why: str) -> None:
        """Apply a command to every active element below the procedure that accepts it."""
        for machine in self._chain()[1:]:
            if machine.can(command):
                machine.fire(command, who=who, why=why)

    # -- commands ------------------------------------------------------------------

    def command(self, command: Command | str, *, who: str, why: str) -> None:
        """An operator (or engine) command: checked, recorded, applied down the chain."""
        cmd = Command(command)
        if cmd is Command.FINISH:
            raise CommandRefused(
                self.procedure.element, cmd.value, self.state.label, self.procedure.valid_commands()
            )
        accepted = self.procedure.can(cmd)
        self.journal.append(
            "command",
            self.procedure.element,
            {
                "command": cmd.value,
                "operator": who,
                "reason": why,
                "meaning": f"operator requests {cmd.value}",
                "accepted": accepted,
                "state": self.state.label,
            },
        )
        self.procedure.fire(cmd, who=who, why=why)  # raises CommandRefused when not accepted
        if cmd is Command.HOLD:
            self.hold_reason = why
        self._mirror(cmd, who, why)

    def _finish(self, who: str = "engine", why: str = "") -> None:
        """The '-ing' state's logic is done: procedure and active elements move on."""
        self._mirror(Command.FINISH, who, why)
        self.procedure.fire(Command.FINISH, who=who, why=why)

    async def _safe_point(self) -> None:
        while True:
            state = self.state
            if state is S.RUNNING:
                return
            if state is S.PAUSING:
                self._finish(why="paused at a safe point")
            elif state is S.PAUSED:
                await self._wait_change()
            else:
                raise PhaseInterrupted(f"batch is {state.label}")

    # -- equipment safety ------------------------------------------------------------

    async def _drive_safe(self, why: str) -> None:
        for name, item in self.equipment.items():
            try:
                await item.safe_state()
            except EquipmentError as exc:
                self.journal.append(
                    "alarm", name, {"alarm": "safe_state_failed", "message": str(exc)}
                )
            else:
                self.journal.append("safe_state", name, {"why": why})

    def _fail_into_hold(self, exc: BaseException) -> None:
        step = self.current
        where = step.path if step else "procedure"
        device = getattr(exc, "device", None)
        kind = "communication" if device else "phase_failure"
        message = str(exc) or type(exc).__name__
        self.journal.append(
            "alarm", device or where, {"alarm": kind, "message": message, "phase": where}
        )
        self.hold_reason = message
        self.procedure.fire(Command.HOLD, who="engine", why=message)
        self._mirror(Command.HOLD, "engine", message)

    # -- the run -------------------------------------------------------------------

    async def _run_step(self, step: PhaseStep) -> None:
        for machine in (step.unit, step.operation, step.phase):
            if machine.state is S.IDLE:
                machine.fire(Command.START, who=self.operator, why=step.logic.describe())
        task = asyncio.create_task(step.logic.run(self.ctx), name=step.path)
        while True:
            change = asyncio.create_task(self._wait_change())
            done, _ = await asyncio.wait({task, change}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                change.cancel()
                exc = task.exception()
                if exc is None:
                    step.phase.fire(Command.FINISH, why="phase logic finished")
                    if step.phase.state is S.COMPLETE:
                        if step.last_of_operation:
                            step.operation.fire(Command.FINISH)
                        if step.last_of_unit:
                            step.unit.fire(Command.FINISH)
                        self.position += 1
                elif isinstance(exc, PhaseInterrupted):
                    pass  # the state change that caused it is handled by the caller
                else:
                    self._fail_into_hold(exc)
                return
            if self.state in (S.HOLDING, S.STOPPING, S.ABORTING):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return
            # Pausing, Paused or Running again: the phase goes on to its next safe point.

    async def run(self) -> ProceduralState:
        """Execute the procedure until it ends Complete, Stopped or Aborted."""
        inbox = await serve_commands(self, self.journal.path)
        try:
            self.procedure.fire(Command.START, who=self.operator, why="batch started")
            while not self.state.is_final:
                state = self.state
                if state is S.RUNNING:
                    step = self.current
                    if step is None:
                        self._finish(why="procedure finished")
                    else:
                        await self._run_step(step)
                elif state is S.PAUSING:
                    self._finish(why="paused between phases")
                elif state in (S.PAUSED, S.HELD):
                    await self._wait_change()
                elif state is S.HOLDING:
                    await self._drive_safe(f"hold: {self.hold_reason}")
                    self._finish(why=self.hold_reason)
                elif state is S.RESTARTING:
                    try:
                        await self.ctx.restore_setpoints()
                    except EquipmentError as exc:
                        self._fail_into_hold(exc)
                    else:
                        self._finish(why="setpoints re-established")
                elif state in (S.STOPPING, S.ABORTING):
                    await self._drive_safe(state.label.lower())
                    self._finish()
            return self.state
        finally:
            inbox.close()
            await inbox.wait_closed()
            self.journal.commit()
