"""The batch: a recipe's procedure executed under the ISA-88 state model.

The procedure, each unit procedure, operation and phase has its own
:class:`StateMachine`. A command goes to the active element at a level
(procedure, unit, operation, phase), is checked against that element's state
(refused with the valid commands otherwise) and mirrored down the chain of
active elements below it. Only the '-ing' states run logic:

- Running runs the current phase; between phases, and wherever a phase calls
  ``safe_point``, a pending pause takes effect.
- Holding cancels the phase's logic and drives each item as the recipe declares
  for a hold (``on_hold``: keep its control and stop additions, or make it safe):
  every item for a procedure or unit hold, the phase's own items for a phase
  hold. Held waits for restart (or stop or abort).
- Restarting re-establishes every setpoint written so far, then the phase
  continues where it was (phases keep their own progress).
- Stopping lets the phase reach its next safe point, Aborting cancels it at once;
  both drive the items (``on_stop``; an abort always safe). At the procedure they end
  the batch; below it they end that element and the procedure holds for a decision, or,
  if nothing of the procedure remains after it, stops (aborts) too: never Complete.

Basic control is not procedural: the unit's control modules (:mod:`twin.engine.modules`)
read, monitor and control in every state. While only a person can move the batch on
(Held, Paused, a held phase, a scan awaited) the clock is told, so on the twin batch
time follows the wall.

Alarms (limits with deadband and delay, recipe-wide or per phase) and phase
failures react as the recipe declares: hold the phase, the unit, the whole
procedure, or abort. A device that stops answering always holds the procedure,
naming the device. Every command, transition and alarm is a journal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.access.esign import sign_event
from twin.access.users import Signer, UserStore
from twin.clock import Clock
from twin.engine.alarms import Alarms, is_critical
from twin.engine.context import BatchContext, PhaseInterrupted, refusal
from twin.engine.inbox import serve_commands
from twin.engine.lots import LotScan, NoScanWanted
from twin.engine.modules import ControlModules
from twin.engine.phases import AddMaterial, ConfirmIdentity, PhaseLogic, make_phase
from twin.engine.states import LEVELS, Command, ProceduralState, StateMachine
from twin.errors import (
    CommandRefused,
    CommunicationError,
    EquipmentError,
    InterlockTripped,
    SetpointLost,
)
from twin.journal import Event, Journal
from twin.recipe import LoadedRecipe
from twin.recipe.monitors import Monitor
from twin.status import status_words

__all__ = ["Batch", "PhaseStep"]

S = ProceduralState

#: The states a unit, operation or phase may be stopped or aborted from (STATE_MODEL.md:
#: Holding and Restarting take stop and abort as Running and Held do).
ENDS_EARLY_FROM = frozenset({S.RUNNING, S.HELD, S.HOLDING, S.RESTARTING})

#: Which level a monitor's or a failure's reaction holds (or aborts).
REACTION_LEVEL = {
    "hold_phase": "phase",
    "hold_unit": "unit",
    "hold": "procedure",
    "abort": "procedure",
    "none": "procedure",
}


def _alarm_kind(exc: BaseException, device: str | None, *, otherwise: str) -> str:
    """The alarm a failure raises: communication, interlock, device, or ``otherwise``."""
    if isinstance(exc, CommunicationError):
        return "communication"
    if isinstance(exc, InterlockTripped):
        return "interlock"
    if isinstance(exc, SetpointLost):
        return "setpoint_lost"
    return "device" if device else otherwise


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
        patient_id: str | None = None,
        bag_id: str | None = None,
        command_path: Path | None = None,
        users: UserStore | None = None,
        relay_token: str | None = None,
        lots: dict[str, str] | None = None,
        lot_expiry_required: bool = True,
        command_socket: socket.socket | None = None,
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
        #: Why a hold already in force is to be driven again (a batch brought back Held).
        self._hold_again = ""
        #: Why the procedure was stopped or aborted (its final transition says it again).
        self.end_reason = ""
        #: Where operator commands reach this batch (the journal's path unless told otherwise;
        #: None for a journal kept in memory: an ensemble batch nobody can reach).
        self.command_path = command_path if command_path is not None else journal.path
        #: The command address, if the runner claimed it before it created the journal; None
        #: once the batch's command server has it (and closes it when the batch ends).
        self.command_socket = command_socket
        #: The site's users: who may sign which command sent to this batch (None: no one).
        self.users = users
        self.relay_token = relay_token
        #: Alarms raised in this batch, by event sequence number, and those acknowledged.
        self.alarm_events: dict[int, Event] = {}
        self.acknowledged: set[int] = set()
        journal.subscribe(self._remember_alarm)
        #: The task re-establishing setpoints for a restart, while it does (a replay ends its
        #: call in flight where the batch's process died, as it ends the phase's).
        self.restoring_task: asyncio.Task[Any] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.alarms = Alarms(journal, self._on_alarm)
        #: Alarms whose reaction (a hold) found its element held or holding already: the
        #: reaction is due when that element runs again, if the alarm is still raised then.
        self._pending_reactions: dict[Monitor, str] = {}
        self.ctx = BatchContext(
            clock,
            journal,
            equipment,
            safe_point=self._safe_point,
            alarms=self.alarms,
            cut_short=self._cut_short,
            pausing=lambda: self.state in (S.PAUSING, S.PAUSED),
        )
        if patient_id and bag_id:
            self.ctx.ordered_identity = (patient_id, bag_id)
        self.ctx.expected_lots = dict(lots or {})
        # (False only to replay or resume a batch started before a scan needed an expiry)
        self.ctx.lots.expiry_required = lot_expiry_required
        kinds = {
            name: need.type for name, need in recipe.model.equipment.items() if name in equipment
        }
        #: The unit's basic control: reading, monitors and loops in every procedural state.
        self.modules = ControlModules(self.ctx, kinds, self._device_failed)
        self.ctx.control = self.modules
        self.ctx.on_awaiting_scan = self._awaiting_scan_changed
        self.ctx.next_change = self._next_change
        self._awaiting_scan = False
        #: Whether the batch can now move on only by a person's act (Held, Paused, a scan).
        self.awaiting_person = False

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

    def _identity_skipped(self, element: StateMachine) -> str | None:
        """The confirm_identity phase ending ``element`` early would skip (it or one after
        the current phase within it), while no scan has confirmed the chain of identity."""
        if self.ctx.identity is not None:
            return None
        for step in self.steps[self.position :]:
            inside = element in (step.unit, step.operation, step.phase)
            if inside and isinstance(step.logic, ConfirmIdentity):
                return f"phase {step.path}"
        return None

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
        self._wake()
        self._update_awaiting_person()

    def _awaiting_scan_changed(self, waiting: bool) -> None:
        self._awaiting_scan = waiting
        self._update_awaiting_person()
        self._wake()

    def _wake(self) -> None:
        """Every wait for the batch's next change ends: look again."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def between_scans(self) -> None:
        """Return once no control-module scan is waiting for a device's answer.

        A command from outside (a socket request, a signal) arrives at any instant of the
        wall, also while a scan waits for a device's answer; taken then, whether the drive
        began before that answer or after it was up to the wire, and replay (so `resume`)
        could find the record not reproduced (a SIGHUP's hold mid-read: 2 of 7 runs). Taken
        between scans, the scan's readings come before the command, in the record as in
        its replay. It waits one scan at most (a few ms; a silent device's retries)."""
        async with self.modules.lock:
            pass

    def hold_again(self, why: str) -> None:
        """Drive every item again as the hold in force declares: a batch brought back Held
        after its process died (a device may have come back in another state: restarted,
        power-cycled, or the twin's plant as last kept, from before the hold)."""
        if self.state is S.HELD:
            self._hold_again = why
            self._wake()

    def _update_awaiting_person(self) -> None:
        """Tell the clock whether only a person can move the batch on (a person's time is
        the wall's: on the twin the batch clock then follows it instead of jumping)."""
        state = self.state
        waiting = state in (S.HELD, S.PAUSED) or (
            state is S.RUNNING
            and (
                self._awaiting_scan or any(m.state in (S.HELD, S.PAUSED) for m in self._chain()[1:])
            )
        )
        if waiting != self.awaiting_person:
            self.awaiting_person = waiting
            self.clock.awaiting_person(waiting)

    @property
    def status(self) -> str:
        """The procedure's state, with a lower element's hold or pause made visible."""
        lot = self.ctx.lots.waiting_for if self._awaiting_scan else None
        return status_words(
            self.state.label,
            (
                (m.element, m.state.label)
                for m in self._chain()[1:]
                if m.state is not S.RUNNING and m.state is not S.IDLE
            ),
            identity_wanted=self._awaiting_scan and lot is None,
            lot_wanted=lot or "",
        )

    def _scan_awaited(self) -> str:
        """The scan a phase waits for, as the station and the console name it."""
        material = self.ctx.lots.waiting_for
        if material is not None:
            return f"a scan of the {material} container"
        return "the identity scan"

    def _next_change(self) -> asyncio.Future[None]:
        """A future resolved (with None) at the batch's next state change."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    async def _wait_change(self) -> None:
        await self._next_change()

    def _below(self, machine: StateMachine) -> list[StateMachine]:
        chain = self._chain()
        return chain[chain.index(machine) + 1 :] if machine in chain else []

    def _mirror(
        self,
        command: Command,
        who: str,
        why: str,
        top: StateMachine | None = None,
        skip: ProceduralState | None = None,
    ) -> None:
        """Apply a command to every active element below ``top`` that accepts it (but those
        in state ``skip``)."""
        for machine in self._below(top or self.procedure):
            if machine.state is not skip and machine.can(command):
                machine.fire(command, who=who, why=why)

    def _element(self, level: str) -> StateMachine:
        chain = self._chain()
        index = LEVELS.index(level)
        if index >= len(chain):
            raise CommandRefused(level, "command", "Idle", [])
        return chain[index]

    # -- commands ------------------------------------------------------------------

    def command(
        self,
        command: Command | str,
        *,
        who: str,
        why: str,
        level: str = "procedure",
        via: str | None = None,
        signer: Signer | None = None,
    ) -> Event:
        """An operator (or engine) command to the active element at ``level``.

        Hold and restart act at any level. Stop and abort act at any level too: below the
        procedure (while it runs) they end that element early, a stop at its phase's next
        safe point, an abort at once with its equipment made safe, and the procedure then
        holds for a person to decide; on restart it goes on after the ended element.
        Pause and resume act on the whole procedure. Returns the journalled ``command``
        event (a refusal carries it as ``CommandRefused.event``) for a signature to bind to.
        ``via`` names a way in where no site user signs: ``ctrl-c`` at the batch's own
        console, a ``control-site`` request. ``signer``'s signature is journalled with the
        command, in one commit, before anything is done (no kill leaves it unsigned).
        """
        cmd = Command(command)
        if level not in LEVELS:
            raise ValueError(f"unknown level '{level}'; levels: {', '.join(LEVELS)}")
        if cmd not in (Command.HOLD, Command.RESTART, Command.STOP, Command.ABORT):
            if level != "procedure":  # not quietly widened to the whole procedure
                raise ValueError(
                    f"{cmd.value} acts on the whole procedure, not a {level}; levels are for "
                    "hold, restart, stop and abort"
                )
            level = "procedure"
        target = self._element(level)
        valid = target.valid_commands()
        if level != "procedure":  # pause and resume act on the whole procedure only
            valid = [c for c in valid if c not in (Command.PAUSE.value, Command.RESUME.value)]
        accepted = cmd is not Command.FINISH and target.can(cmd)
        why_not = ""
        # Ending one element early, or restarting it, is a decision taken while the
        # procedure runs (the element itself running or held, to end it); otherwise
        # restart, stop or abort the procedure, which takes the elements below with it.
        if level != "procedure" and self.state is not S.RUNNING:
            valid = [c for c in valid if c not in ("restart", "stop", "abort")]
            if cmd in (Command.RESTART, Command.STOP, Command.ABORT):
                accepted = False
                why_not = (
                    f"the procedure is {self.state.label}: below it, restart, stop and abort "
                    "act only while it runs; give them to the procedure"
                )
        elif (
            level != "procedure"
            and cmd in (Command.STOP, Command.ABORT)
            and target.state not in ENDS_EARLY_FROM
        ):
            accepted = False
            valid = [c for c in valid if c not in ("stop", "abort")]
            why_not = (
                f"a {level} is ended early while it runs, is held, holding or restarting; "
                f"this one is {target.state.label}"
            )
        elif (
            level != "procedure"
            and cmd in (Command.STOP, Command.ABORT)
            and (skipped := self._identity_skipped(target)) is not None
        ):
            # Going on after an element ended early would go on without the chain of
            # identity: the rest of the procedure (a dose, the harvest) on cells nobody
            # confirmed are this patient's, and a vector's interlock holding each restart.
            accepted = False
            valid = [c for c in valid if c not in ("stop", "abort")]
            why_not = (
                f"ending it early would skip {skipped}, and the chain of identity is not "
                f"confirmed: the batch cannot go on without it; {cmd.value} the procedure"
            )
        elif cmd in (Command.RESTART, Command.STOP, Command.ABORT) and (
            above := [m for m in self._chain()[1 : LEVELS.index(level)] if m.state is not S.RUNNING]
        ):
            # A restart below a held element would re-establish every setpoint (additions,
            # items made safe) while that element's hold stands: it restarts the held one.
            # Ending one below it would leave the held (restarting) one so for good: that
            # one is stopped or aborted instead, which ends what is below it.
            valid = [c for c in valid if c not in ("restart", "stop", "abort")]
            accepted = False
            held = above[0]
            verb = "restart" if cmd is Command.RESTART else cmd.value
            why_not = (
                f"{held.element} is {held.state.label}: {verb} it "
                f"(--level {LEVELS[self._chain().index(held)]}), which {verb}s what is below it"
            )
        elif (
            cmd is Command.RESTART
            and not accepted
            and (
                below := [m for m in self._chain()[LEVELS.index(level) + 1 :] if m.state is S.HELD]
            )
        ):
            # A restart here while an element below it is held: that one is the one to
            # restart (the person asked for the procedure, seeing "held" on the station).
            held = below[0]
            why_not = (
                f"{held.element} is Held: restart it (--level {LEVELS[self._chain().index(held)]})"
            )
        with self.journal.together():  # the command and its signature: one commit
            event = self.journal.append(
                "command",
                target.element,
                {
                    "command": cmd.value,
                    "level": level,
                    "operator": who,
                    "reason": why,
                    "meaning": f"{who} requests {cmd.value} of {target.element}",
                    "accepted": accepted,
                    "state": target.state.label,
                    **({"via": via} if via else {}),
                },
            )
            if signer is not None:
                sign_event(self.journal, event, signer)
        if not accepted:
            refused = CommandRefused(target.element, cmd.value, target.state.label, valid, why_not)
            refused.event = event
            raise refused
        if cmd in (Command.HOLD, Command.STOP, Command.ABORT):
            # No dose or perfusion start may slip in before the equipment is driven.
            self.modules.additions = False
        target.fire(cmd, who=who, why=why)
        if cmd is Command.HOLD:
            self.hold_reason = why
        elif cmd in (Command.STOP, Command.ABORT) and target is self.procedure:
            self.end_reason = why  # the final state's row says why, as every row does
        self._mirror(cmd, who, why, top=target)
        return event

    def present_identity(
        self, patient_id: str, bag_id: str, *, who: str, why: str, signer: Signer | None = None
    ) -> bool:
        """An operator's identity scan, journalled at once (with the operator's signature when
        one is given) and handed to the confirm_identity phase; whether it matches."""
        return self.ctx.present_identity(patient_id, bag_id, who, why, signer)

    @property
    def identity_wanted(self) -> bool:
        """Whether the batch asks for the identity scan now (a person's scan is taken then)."""
        return self.ctx.identity_wanted

    def present_lot(
        self, scan: LotScan, *, who: str, why: str, signer: Signer | None = None
    ) -> tuple[Event, str | None]:
        """An operator's scan of a material container, checked by the addition waiting for it
        (journalled, with the signature); NoScanWanted when none waits, saying why."""
        try:
            return self.ctx.lots.present(scan, who=who, why=why, signer=signer)
        except NoScanWanted:
            raise NoScanWanted(self._no_lot_wanted()) from None

    def _no_lot_wanted(self) -> str:
        """Why no lot scan is taken now: the addition waits while the batch does (paused,
        held: it asks again when it runs on), or no addition waits for one."""
        status, step = self.status, self.current
        taken = self.ctx.lots.just_accepted
        if taken is not None:  # a second scan at once (a double read, a second person)
            return (
                f"the {taken.material} container's scan was accepted just now (lot "
                f"{taken.lot}): its addition doses that lot and wants no other scan"
            )
        logic = step.logic if step is not None else None
        ending = (S.STOPPING, S.ABORTING)
        if (
            isinstance(logic, AddMaterial)
            and logic.params.scan_lot
            and logic.scanned_lot is None
            and not logic.dosed
            and not any(m.state.is_final or m.state in ending for m in self._chain())
        ):
            return (
                f"the batch is {status}: its addition of {logic.params.material} waits for "
                "the container's scan and asks for it again (lot_requested) when the batch "
                "runs on (resumed after a pause, restarted after a hold); scan then"
            )
        return (
            f"no addition is waiting for a lot scan (the batch is {status}): an add phase "
            "with scan_lot asks for one (lot_requested); scan then"
        )

    def acknowledge(
        self,
        alarm_seq: int,
        *,
        who: str,
        comment: str,
        via: str | None = None,
        signer: Signer | None = None,
    ) -> Event:
        """A person acknowledges a raised alarm (by its event's sequence number); ``via``
        names a way in where no site user signs (the control site, whose user signed there).
        ``signer``'s signature is committed with it."""
        alarm = self.alarm_events.get(alarm_seq)
        if alarm is None:
            raise ValueError(f"event {alarm_seq} is not an alarm of this batch")
        if alarm_seq in self.acknowledged:
            raise ValueError(f"alarm {alarm_seq} was acknowledged already")
        self.acknowledged.add(alarm_seq)
        with self.journal.together():  # the acknowledgement and its signature: one commit
            event = self.journal.append(
                "alarm_ack",
                alarm.source,
                {
                    "alarm_seq": alarm_seq,
                    "alarm": alarm.data.get("alarm", ""),
                    "critical": is_critical(alarm),
                    "user": who,
                    "comment": comment,
                    **({"via": via} if via else {}),
                },
            )
            if signer is not None:
                sign_event(self.journal, event, signer)
        return event

    def _remember_alarm(self, event: Event) -> None:
        if event.kind == "alarm":
            self.alarm_events[event.seq] = event

    def _finish(self, who: str = "engine", why: str = "") -> None:
        """The '-ing' state's logic is done: procedure and active elements move on.

        An element below that is Holding on its own (a phase hold given while the procedure
        was pausing or restarting) is left to its own hold, which drives its items
        (:meth:`_drive_own_hold`): it is not carried to Held by the procedure's pause or
        restart."""
        own_holds = S.HOLDING if self.state in (S.PAUSING, S.RESTARTING) else None
        self._mirror(Command.FINISH, who, why, skip=own_holds)
        self.procedure.fire(Command.FINISH, who=who, why=why)

    def _pause_point(self) -> str:
        """Where a pause outside a phase's own safe point took effect, as the record says it:
        between phases, or at a phase that waits (held below, or for the identity scan)."""
        step = self.current
        if step is None or step.phase.state in (S.IDLE, S.COMPLETE):
            return "paused between phases"
        waiting = [m for m in self._chain()[1:] if m.state in (S.HOLDING, S.HELD)]
        if waiting:
            return f"paused while {waiting[0].element} is {waiting[0].state.label}"
        if self._awaiting_scan:
            return f"paused at {step.path}, waiting for {self._scan_awaited()}"
        return f"paused at {step.path}"

    @property
    def phase_task(self) -> asyncio.Task[None] | None:
        """The task running the current phase's logic (the context's: its writes are the
        phase's)."""
        return self.ctx.phase_task

    def ends_at_interruption(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether a device call made by ``task`` ends where the batch's process died, never
        sent again by a resume: the phase's, a restart's rewrite, a base dose (a dose or a
        setpoint is never given twice; a safe state or a reading goes on)."""
        return task is not None and (
            task is self.phase_task
            or task is self.restoring_task
            or task in self.modules.dose_tasks()
        )

    def _cut_short(self) -> str | None:
        """Why the running phase is about to be cancelled (a hold or an abort accepted for
        it or above), else None: it then begins no new write."""
        for machine in self._chain():
            if machine.state in (S.HOLDING, S.ABORTING):
                return f"{machine.element} is {machine.state.label}"
        return None

    async def _safe_point(self) -> None:
        # One turn of the loop first: a command due at this very batch time (an operator's
        # timer, or a replayed input) is seen here whichever of the two timers fires first,
        # so ties on the clock cannot make a replay differ from its record.
        await asyncio.sleep(0)
        while True:
            state = self.state
            step = self.current
            if step is not None and step.phase.state is not S.RUNNING and state is S.RUNNING:
                raise PhaseInterrupted(f"phase is {step.phase.state.label}")
            if state is S.RUNNING:
                return
            if state is S.PAUSING:
                self._finish(why="paused at a safe point")
            elif state is S.PAUSED:
                await self._wait_change()
            else:
                raise PhaseInterrupted(f"batch is {state.label}")

    # -- alarms and failures -----------------------------------------------------------

    def _on_alarm(self, monitor: Monitor, message: str) -> None:
        """Apply a monitor's configured reaction when its alarm is raised."""
        reaction = monitor.reaction
        if reaction == "none":
            return
        command = Command.ABORT if reaction == "abort" else Command.HOLD
        level = REACTION_LEVEL[reaction]
        try:
            self.command(command, who=f"alarm:{monitor.label}", why=message, level=level)
        except CommandRefused:
            # Already held or ending: the alarm is in the journal all the same, and a hold
            # waits for the element to run again (a restart does not run past it unseen).
            self._pending_reactions[monitor] = message

    def _react_pending(self) -> None:
        """Restarted: each alarm whose hold found the batch held and that is still raised
        holds it now (once: a person then restarts with the alarm before them)."""
        pending, self._pending_reactions = self._pending_reactions, {}
        for monitor, message in pending.items():
            if self.alarms.is_raised(monitor):
                self._on_alarm(monitor, f"{message}, raised while held and still so at the restart")

    def _reaction(self, name: str, to: str) -> str:
        """``control`` or ``safe``: what ``to`` (hold, stop, abort) does to item ``name``."""
        need = self.recipe.model.equipment.get(name)
        return need.reaction(to) if need is not None else "safe"

    async def _drive(self, to: str, why: str, equipment: list[str] | None = None) -> None:
        """Drive each item to what the recipe declares for a hold, stop or abort.

        ``safe``: the device's safe state, and the control loops stop writing to it;
        ``control``: its control and monitoring go on, additions stop (a bioreactor's own
        safe state is exactly that: temperature and rocking kept, pumps and perfusion off).
        """
        names = equipment if equipment is not None else list(self.equipment)
        # Where the drive begins, in the record: a command that lands while it runs is
        # replayed after this, where the engine had got to (not before the drive began).
        self.journal.append("drive", "batch", {"on": to, "why": why, "equipment": names})
        await self.modules.cut_additions(names)
        async with self.modules.lock:
            for name in names:
                reaction = self._reaction(name, to)
                if name in self.modules.released:
                    reaction = "safe"  # made safe already (an aborted phase): stays safe
                if reaction == "safe":
                    self.modules.release(name)
                elif self.modules.kinds.get(name) != "bioreactor":
                    self.modules.keep(name)
                    self.journal.append("control_kept", name, {"why": why, "on": to})
                    continue
                try:
                    await self.equipment[name].safe_state()
                except EquipmentError as exc:
                    self.journal.append(
                        "alarm", name, {"alarm": "safe_state_failed", "message": str(exc)}
                    )
                else:
                    self.journal.append("safe_state", name, {"why": why, "reaction": reaction})
            await self._settle_transfers(to, names)

    async def _settle_transfers(self, to: str, names: list[str]) -> None:
        """Doses and harvests the hold, stop or abort cut short, their pumps stopped by the
        drive: the pump's total says what it moved. Journalled (``addition_interrupted``,
        ``harvest_interrupted``, naming the setpoint: the record shows what went in), and
        kept for a restart (an ``add`` phase doses the rest, a ``harvest`` drains the rest of
        the bag). A transfer the phase still runs (a controlled stop lets it finish) is not
        settled here."""
        for name in names:
            transfer = self.ctx.transfers.get(name)
            if transfer is None or not transfer.runner.done():
                continue
            del self.ctx.transfers[name]
            device = self.ctx.bioreactor(name)
            setpoint = self.journal.as_written(transfer.setpoint).seq
            if transfer.parameter == "harvest":
                kind, what, total = "harvest_interrupted", "harvested", device.harvested_ml
                data: dict[str, Any] = {"setpoint": setpoint}
            else:
                kind, what, total = "addition_interrupted", "added", device.added_ml
                data = {
                    "parameter": transfer.parameter,
                    "setpoint": setpoint,
                    "requested_ml": transfer.requested_ml,
                }
            if transfer.delivered_ml is not None:  # the device refused it: nothing moved
                data["refused"] = True
                data["message"] = "the device refused it"
            else:
                try:
                    transfer.delivered_ml = await self.ctx.read(name, what, total)
                except EquipmentError as exc:
                    # recorded as a failed read (a replay's read fails the same way)
                    self.journal.append(
                        "no_answer", name, {"what": what, "message": str(exc)}, durable=False
                    )
                    data["message"] = f"the pump's total could not be read: {exc}"
            data["delivered_ml" if what == "added" else "drained_ml"] = transfer.delivered_ml
            data["on"] = to
            self.journal.append(kind, name, data)

    async def _restore(self, restarting: list[StateMachine]) -> bool:
        """Restarting: every remembered setpoint re-established, the loops act on all again.

        False if a hold, stop or abort superseded the restart part-way (the element whose
        restart it is left Restarting): the rest of the setpoints are not written, that
        command's drive decides what the items do; also where a resumed batch's process
        died mid-rewrite (the write then in flight is not sent again after the resume's
        hold). A lower element's own hold given meanwhile lets the rewrite finish: it is
        driven after it, as that element's hold declares."""
        lead = restarting[0]

        def still_restarting() -> bool:
            return lead.state is S.RESTARTING

        async with self.modules.lock:
            self.restoring_task = asyncio.current_task()
            try:
                if not await self.ctx.restore_setpoints(still_restarting):
                    return False
            except PhaseInterrupted:  # replay: the call in flight where the process died
                return False
            finally:
                self.restoring_task = None
            self.modules.resume()
            return True

    def _device_failed(self, exc: Exception, equipment: str | None = None) -> None:
        """The control modules hit a fault (a device stopped answering, an interlock refused
        a loop's write, or a fault of the modules themselves): alarm, and hold if running.
        The alarm names the equipment item (a replay takes a device's failure from it)."""
        self._device_alarm(exc, equipment)
        if self.procedure.can(Command.HOLD):
            self.command(Command.HOLD, who="engine", why=str(exc) or type(exc).__name__)

    def device_failed_at_resume(self, name: str, exc: Exception) -> None:
        """A device failed its re-read as the batch came back after an interruption (its
        link down, a probe reading NaN): its alarm, as the control modules raise one (the
        resume then holds the batch, for its own reason), and the device is down for them:
        a further failed read is recorded without a new alarm, the alarm clears when it
        answers again, and a restart while it still fails alarms and holds again."""
        if not isinstance(exc, EquipmentError):
            exc = EquipmentError(name, f"re-read failed in the driver: {exc!r}")
        self.modules.down[name] = self._device_alarm(exc, name)

    def _device_alarm(self, exc: Exception, equipment: str | None) -> str:
        """Journal a device's (or the control modules') failure as an alarm; its kind."""
        device = equipment or getattr(exc, "device", None)
        kind = _alarm_kind(exc, device, otherwise="control_modules")
        message = str(exc) or type(exc).__name__
        step = self.current
        self.journal.append(
            "alarm",
            device or "control modules",
            {
                "alarm": kind,
                "message": message,
                "phase": step.path if step else "procedure",
                "reaction": "hold",
                **refusal(exc),
            },
        )
        return kind

    def _fail(self, exc: BaseException) -> None:
        """A phase failed: alarm naming the device or phase, then the recipe's reaction."""
        step = self.current
        where = step.path if step else "procedure"
        device = self.modules.equipment_of(exc)  # "gas unit B" is item "gas", as when read
        kind = _alarm_kind(exc, device, otherwise="phase_failure")
        message = str(exc) or type(exc).__name__
        reaction = "hold" if kind == "communication" or step is None else step.logic.on_failure
        self.journal.append(
            "alarm",
            device or where,
            {
                "alarm": kind,
                "message": message,
                "phase": where,
                "reaction": reaction,
                **refusal(exc),
            },
        )
        command = Command.ABORT if reaction == "abort" else Command.HOLD
        with contextlib.suppress(CommandRefused):  # held or ending already: alarm recorded
            self.command(command, who="engine", why=message, level=REACTION_LEVEL[reaction])

    def _restart_failed(self, exc: EquipmentError, restarting: StateMachine) -> None:
        """Setpoints not re-established: the failure's alarm and the recipe's reaction, and
        the element being restarted holds again, for a person to restart it (never retried
        on its own: a rewrite failing at once would otherwise spin, alarm after alarm)."""
        self._fail(exc)  # its alarm, whatever command came meanwhile
        if restarting.state is S.RESTARTING:
            level = LEVELS[self._chain().index(restarting)]
            with contextlib.suppress(CommandRefused):
                self.command(Command.HOLD, who="engine", why=f"restart failed: {exc}", level=level)

    # -- the run -------------------------------------------------------------------

    async def _supervise(self, step: PhaseStep) -> str:
        """Run the phase's logic once; say why it stopped: done, lower (a held element), or up."""
        task = asyncio.create_task(self._phase_logic(step), name=step.path)
        self.ctx.phase_task = task
        while True:
            # Registered now, not in a task's first turn: a command landing before that turn
            # (in the same loop turn as the phase's last step) would not wake this wait,
            # and the hold would wait for the phase (forever, for a dose whose answer the
            # cut pump never gives in a replay).
            change = self._next_change()
            try:
                done, _ = await asyncio.wait({task, change}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:  # the batch itself cancelled (its journal failed): no orphans
                task.cancel()
                change.cancel()
                raise
            if task in done:
                change.cancel()
                return self._phase_ended(step, task)
            states = {self.state} | {m.state for m in self._chain()[1:]}
            if (
                S.STOPPING in states
                and not states & {S.HOLDING, S.ABORTING}
                and not self._awaiting_scan
            ):
                continue  # a controlled stop: the phase shuts down at its next safe point
            waiting_scan_pauses = S.PAUSING in states and self._awaiting_scan
            if states & {S.HOLDING, S.STOPPING, S.ABORTING} or waiting_scan_pauses:
                # (A phase waiting for a person's scan is at a safe point: it pauses there
                # and asks again on resume.)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return "lower" if self.state is S.RUNNING else "up"
            # Pausing, Paused or Running again: the phase goes on to its next safe point.

    def _phase_ended(self, step: PhaseStep, task: asyncio.Task[None]) -> str:
        """The phase's logic ended: finished (the phase completes, or its stop ends it),
        interrupted at a safe point, or failed (alarm and the recipe's reaction)."""
        exc = task.exception()
        if exc is None and self._cut_short() is None:
            if step.phase.state is S.STOPPING and self.state is S.RUNNING:
                # Stopped below the procedure, and its logic reached its end before any
                # safe point: the element ends as a stopped one does (_end_below), the
                # procedure holds for a decision. Before, the phase was finished Stopped
                # here and the procedure waited for ever for a restart nothing could give.
                return "lower"
            step.phase.fire(Command.FINISH, why="phase logic finished")
            if step.phase.state is S.COMPLETE:
                self.alarms.deactivate(step.path)
                if step.last_of_operation:
                    step.operation.fire(Command.FINISH, why="all its phases complete")
                if step.last_of_unit:
                    step.unit.fire(Command.FINISH, why="all its operations complete")
                self.position += 1
                return "done"
            # Its logic ended while it was stopping: the element ends (below).
            return "lower" if self.state is S.RUNNING else "up"
        # Failed, interrupted, or finished on the turn a hold or abort came: the hold or
        # abort is carried out (its drive, its end), and a restart re-runs what is left.
        if exc is not None and not isinstance(exc, PhaseInterrupted):
            self._fail(exc)
        return "lower" if self.state is S.RUNNING else "up"

    async def _phase_logic(self, step: PhaseStep) -> None:
        """The phase's logic, begun at a safe point: a hold, stop, abort or pause accepted
        after the phase was started but before its task's first turn is met there, before
        the phase writes anything (a set_gas aborted as it began set its gases flowing).
        Checked without yielding: a phase nothing stopped begins on the same loop turn as
        before, so records keep their order of readings and writes."""
        if self.state is not S.RUNNING or step.phase.state is not S.RUNNING:
            await self._safe_point()
        await step.logic.run(self.ctx)

    async def _hold_below(self, step: PhaseStep) -> bool:
        """A hold at unit, operation or phase level; True when the phase may run again."""
        chain = self._chain()[1:]
        while self.state is S.RUNNING:
            if any(m.state is S.HOLDING for m in chain):
                # (also a hold given while an element's restart rewrote setpoints, or the
                # hold a failed rewrite called for: each is driven, then Held)
                await self._drive_own_hold(step)
                continue
            if any(m.state in (S.STOPPING, S.ABORTING) for m in chain):
                return True  # a held element stopped or aborted: it ends (_end_below)
            restarting = [m for m in chain if m.state is S.RESTARTING]
            if restarting:
                try:
                    restored = await self._restore(restarting)
                except EquipmentError as exc:
                    self._restart_failed(exc, restarting[0])
                    continue
                for machine in restarting if restored else []:
                    if machine.state is S.RESTARTING:
                        machine.fire(Command.FINISH, why="setpoints re-established")
                if restored:
                    self._react_pending()
                continue  # look again: a command may have come during the rewrite
            if all(m.state is S.RUNNING for m in chain):
                return True
            await self._wait_change()
        return False

    async def _drive_own_hold(self, step: PhaseStep | None) -> None:
        """A unit, operation or phase Holding on its own: drive its items as the hold says
        (the phase's own for a phase hold, else all), then it is Held. Whether the
        procedure runs or waits (Paused): not when it runs again."""
        holding = [m for m in self._chain()[1:] if m.state is S.HOLDING]
        if not holding:
            return
        scope = holding[0]
        equipment = step.logic.equipment if step is not None and scope is step.phase else None
        await self._drive("hold", f"hold of {scope.element}: {self.hold_reason}", equipment)
        for machine in reversed(holding):
            if machine.state is S.HOLDING:  # not if stopped or aborted during the drive
                machine.fire(Command.FINISH, why=self.hold_reason)

    async def _run_step(self, step: PhaseStep) -> None:
        for machine in (step.unit, step.operation, step.phase):
            if machine.state is S.IDLE:
                machine.fire(Command.START, who=self.operator, why=step.logic.describe())
                if machine is step.phase:
                    self.alarms.activate(step.path, step.logic.monitors)
        while True:
            below = [m.state for m in self._chain()[1:]]
            if S.STOPPING in below or S.ABORTING in below:
                await self._end_below(step)
                return
            if any(state is not S.RUNNING for state in below):
                # Held (or restarting) below: the phase's logic does not run until it is
                # restarted, also across a pause of the whole procedure.
                if not await self._hold_below(step):
                    return
                continue
            if await self._supervise(step) != "lower":
                return

    async def _end_below(self, step: PhaseStep) -> None:
        """A unit, operation or phase stopped or aborted: it ends, the procedure skips what
        remains of it and holds for a person to decide how the batch goes on."""
        chain = self._chain()[1:]
        ending = [m for m in chain if m.state in (S.STOPPING, S.ABORTING)]
        scope = ending[0]
        aborted = scope.state is S.ABORTING
        why = f"{scope.element} {'aborted' if aborted else 'stopped'}"
        if aborted:  # straight to the safe state; a stop ends the element, control goes on
            equipment = step.logic.equipment if scope is step.phase else None
            await self._drive("abort", why, equipment)
        for machine in reversed(ending):
            if machine.state in (S.STOPPING, S.ABORTING):  # as it was before the drive
                machine.fire(Command.FINISH, why=why)
        self.alarms.deactivate(step.path)
        # Skip what remains of the ended element; elements it leaves behind complete.
        while self.current is not None and scope in (
            self.current.phase,
            self.current.operation,
            self.current.unit,
        ):
            left = self.current
            self.position += 1
            if left.last_of_operation and left.operation.state is S.RUNNING:
                left.operation.fire(Command.FINISH, why=f"after {why}")
            if left.last_of_unit and left.unit.state is S.RUNNING:
                left.unit.fire(Command.FINISH, why=f"after {why}")
        if self.current is None and self.procedure.can(Command.STOP):
            # Nothing of the procedure is left to decide on: it cannot complete, and
            # ends as the element did (a restart would have made a stopped unit Complete).
            ends = Command.ABORT if aborted else Command.STOP
            self.command(ends, who="engine", why=f"{why}: nothing of the procedure remains")
        elif self.procedure.can(Command.HOLD):
            self.command(
                Command.HOLD, who="engine", why=f"{why}: held for a decision on how to go on"
            )

    async def run(self) -> ProceduralState:
        """Execute the procedure until it ends Complete, Stopped or Aborted."""
        inbox = None
        if self.command_path is not None:
            claimed, self.command_socket = self.command_socket, None  # the server's from here
            inbox = await serve_commands(
                self, self.command_path, self.users, self.relay_token, claimed
            )
        try:
            self.procedure.fire(Command.START, who=self.operator, why="batch started")
            self.alarms.activate("recipe", self.recipe.model.monitors)
            self.modules.start()
            while not self.state.is_final:
                state = self.state
                if state is S.RUNNING:
                    step = self.current
                    if step is None:
                        self._finish(why="procedure finished")
                    else:
                        await self._run_step(step)
                elif state is S.PAUSING:
                    self._finish(why=self._pause_point())
                elif state in (S.PAUSED, S.HELD):
                    if self._hold_again and state is S.HELD:
                        why, self._hold_again = self._hold_again, ""
                        await self._drive("hold", why)
                        continue
                    await self._drive_own_hold(self.current)
                    await self._wait_change()
                # Each '-ing' state ends only if it is still the state its work was done
                # for: a command given meanwhile (an abort during a hold's drive) is
                # served by the next turn, with its own drive, never finished unserved.
                elif state is S.HOLDING:
                    await self._drive("hold", f"hold: {self.hold_reason}")
                    if self.state is state:
                        self._finish(why=self.hold_reason)
                elif state is S.RESTARTING:
                    try:
                        restored = await self._restore([self.procedure])
                    except EquipmentError as exc:
                        self._restart_failed(exc, self.procedure)
                    else:
                        if restored and self.state is state:
                            self._finish(why="setpoints re-established")
                            self._react_pending()
                elif state in (S.STOPPING, S.ABORTING):
                    to = "stop" if state is S.STOPPING else "abort"
                    await self._drive(to, state.label.lower())
                    done = "stopped" if to == "stop" else "aborted"
                    why = f"{done}, equipment in its {to} state"
                    if self.state is state:
                        self._finish(why=f"{why}: {self.end_reason}" if self.end_reason else why)
            return self.state
        finally:
            await self.modules.stop()
            self.clock.awaiting_person(False)
            if inbox is not None:
                inbox.close()
                await inbox.wait_closed()
            self.journal.commit()
