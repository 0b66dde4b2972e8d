"""``poc-twin resume``: bring back a batch whose process died, as trusted batch engines do.

1. The journal must verify. The engine is re-run against it (replay): from the
   recorded recipe, device answers and operator inputs it re-derives every
   recorded event, so the phase in progress, its timers, doses given and the
   control loops' state are exactly what the record implies. If the engine
   cannot reproduce the record, nothing is resumed.
2. At the end of the record the batch is handed over: the journal continues
   from its last committed event (same chain), the batch clock counts the
   interruption (wall time since the last event), a ``deviation`` event records
   the gap and any setpoint whose confirmation was lost (a dose may or may not
   have been given: the operator must check), and the batch is commanded to
   hold before anything reaches the equipment.
3. The bench is opened, every device re-read (journalled, alarms evaluated),
   the hold drives equipment to its safe state; the batch waits in Held. No
   phase command is re-issued until an operator restarts (``--restart`` with
   operator and reason does it in the same step).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from twin.access.esign import sign_event
from twin.access.users import Signer, UserStore
from twin.bench import OpenBench, open_bench
from twin.clock import DEFAULT_PACE, Clock, VirtualTimeLoop, run_batch_loop, wall_now
from twin.engine.batch import Batch
from twin.engine.context import CONFIRMED
from twin.engine.inbox import claim_command_address, serve_commands
from twin.engine.states import Command, ProceduralState
from twin.errors import JournalError, PocTwinError
from twin.journal import Event, Journal
from twin.replay.interruption import hold_after_interruption
from twin.replay.recording import Recording, load_recording
from twin.replay.session import ReplaySession
from twin.runner import run_while_recorded, twin_keep_path
from twin.serve.keeping import restore_plant
from twin.signing import load_site_key
from twin.sim.bedside import BedsideOperator
from twin.sim.qc_lab import TwinQcLab

__all__ = ["ResumeRefused", "resume", "resume_async", "unconfirmed_setpoints"]

S = ProceduralState


class ResumeRefused(PocTwinError):
    """The batch cannot be resumed (it ended, or the engine cannot reproduce its record)."""


def unconfirmed_setpoints(events: list[Event]) -> list[dict[str, Any]]:
    """Setpoints journalled but never confirmed by their device: the write may or may not
    have reached it before the process died."""
    pending: dict[tuple[str, str], Event] = {}
    for e in events:
        if e.kind == "setpoint" and not e.data.get("control_loop"):
            pending[(e.source, str(e.data.get("parameter")))] = e
        elif e.kind == CONFIRMED:
            pending.pop((e.source, str(e.data.get("parameter"))), None)
        elif e.kind == "alarm" and e.data.get("alarm") in ("communication", "device"):
            for key in [k for k in pending if k[0] == e.source]:
                del pending[key]
    return [
        {
            "seq": e.seq,
            "equipment": e.source,
            "parameter": e.data.get("parameter"),
            "value": e.data.get("value"),
            "unit": e.data.get("unit", ""),
        }
        for e in sorted(pending.values(), key=lambda e: e.seq)
    ]


async def _until_held(batch: Batch) -> None:
    while batch.state not in (S.HELD,) and not batch.state.is_final:
        await batch._wait_change()


async def resume_async(
    recording: Recording,
    *,
    operator: str,
    reason: str,
    restart: bool = False,
    site_key: Path | None = None,
    subscribers: list[Callable[[Event], None]] | None = None,
    on_bench: Callable[[OpenBench, Clock], None] | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    on_live: Callable[[Batch], None] | None = None,
    pace: float | None = DEFAULT_PACE,
    users: UserStore | None = None,
    person: Signer | None = None,
    restarter: Signer | None = None,
    claimed: socket.socket | None = None,
    relay_token: str | None = None,
) -> ProceduralState:
    """Resume on the running loop, which must be a :class:`VirtualTimeLoop` (replay first).

    The re-run goes at full speed; from the hand-over on, a batch on the twin that waits
    on a person (it is held until an operator restarts it) follows the wall at ``pace``.
    ``on_batch`` gets the batch before its record is re-run; ``on_live`` once it is back
    (held after the interruption, taking commands): from then on, as in a run, what a
    person does to it is a command (Ctrl-C at the terminal, twin/cli/ctrl_c.py).

    ``person`` signs the resume; ``restarter`` (or ``person``) the ``--restart``.
    Nothing is written while another process runs the batch: its command address is
    claimed first (``claimed``, if the caller claimed it already), else BatchProcessRunning.
    ``relay_token`` is the secret of the telemetry forwarder started with it (``resume
    --broker``): holds and acknowledgements the control site requests reach the batch through
    that forwarder only, as in a run.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise TypeError("resume replays the record first: run it on a VirtualTimeLoop")
    if recording.ended:
        state = next(e.data["state"] for e in reversed(recording.events) if e.kind == "batch_ended")
        raise ResumeRefused(f"{recording.path}: the batch already ended {state}; nothing to resume")
    claim = claimed if claimed is not None else claim_command_address(recording.path)
    # closed here if the batch never takes commands, else with its command server
    with contextlib.closing(claim), recording.recipe() as recipe, recording.bench() as bench:
        session = ReplaySession(
            recording,
            recipe,
            bench,
            command_path=Path(f"{recording.path}.resuming"),
            beyond_the_record=True,
        )
        batch, journal, clock = session.batch, session.journal, session.clock
        for subscriber in subscribers or []:
            journal.subscribe(subscriber)
        if on_batch is not None:
            on_batch(batch)
        run = await session.start()
        await asyncio.wait({run, journal.done}, return_when=asyncio.FIRST_COMPLETED)
        await session.stop()
        if journal.divergence is not None or not journal.exhausted:
            await _cancel(run)
            why = journal.divergence.describe() if journal.divergence else "record not reproduced"
            raise ResumeRefused(
                f"{recording.path}: the engine does not reproduce this record, so it cannot "
                f"know the batch's state; not resumed.\n{why}"
            )
        keep = twin_keep_path(recording.path)
        if bench.model.twin is not None and keep.exists():
            # Read before anything is written: a damaged kept plant refuses the resume
            # here, not after a deviation "resumed" that never happened is in the record.
            restore_plant(keep, bench.model.twin.seed)
        signer = load_site_key(site_key) if site_key is not None else None
        live = Journal.reopen(recording.path, clock.now, signer=signer)
        derived = journal.hand_over(live)
        people = _simulated_people(recording, bench, clock, batch, live)
        inbox = None
        try:
            async with contextlib.AsyncExitStack() as stack:

                async def open_equipment() -> None:
                    opened = await stack.enter_async_context(
                        open_bench(bench, clock, twin_keep=keep, twin_restore=True)
                    )
                    if on_bench is not None:
                        on_bench(opened, clock)
                    for name, device in batch.equipment.items():
                        device.live = opened.equipment[name]
                    if people.wants_lab and opened.twin is not None:
                        people.lab = TwinQcLab(opened.twin.plant)
                        live.subscribe(people.lab.hear)

                last = recording.last_of_the_batch
                gap = wall_now() - datetime.fromisoformat(last.wall_time)
                gap_s = max(0.0, gap.total_seconds())
                await loop.settle()  # the engine as far as the record takes it, as replay has it
                if not bench.virtual_clock:
                    loop.go_live()
                loop.advance_to(loop.time() + gap_s)
                loop.pace = pace
                loop.follow_wall(batch.awaiting_person)
                deviation = _deviation(batch, recording, gap_s, derived, operator, reason)
                recorded: list[Event] = []
                live.subscribe(lambda e: recorded.append(e) if e.kind == "deviation" else None)

                def sign_resume() -> None:  # the supervisor's: committed with the deviation
                    if person is not None and recorded:
                        sign_event(live, recorded[-1], person)

                await hold_after_interruption(
                    batch,
                    deviation,
                    session.kinds,
                    session.feed,
                    session.feed.boundary(len(journal.recorded)),
                    open_equipment,
                    signed=sign_resume if person is not None else None,
                )
                inbox = await serve_commands(
                    batch, recording.path, users, relay_token=relay_token, claimed=claim
                )
                if on_live is not None:
                    on_live(batch)
                if restart:
                    await _until_held(batch)
                    if batch.state is S.HELD:  # signed in the command's own commit
                        batch.command(
                            Command.RESTART, who=operator, why=reason, signer=restarter or person
                        )
                final = await run_while_recorded(run, live)
                live.append("batch_ended", "batch", {"state": final.label})
                if people.lab is not None:
                    people.lab.report(live)
                return final
        finally:
            if inbox is not None:
                inbox.close()
                await inbox.wait_closed()
            await _cancel(run)
            live.close()


@dataclass
class _SimulatedPeople:
    """The twin's simulated people the batch was started with, back for its resumed part."""

    bedside: BedsideOperator | None = None
    wants_lab: bool = False
    lab: TwinQcLab | None = None


def _simulated_people(
    recording: Recording, bench: Any, clock: Clock, batch: Batch, live: Journal
) -> _SimulatedPeople:
    """A batch started with ``--simulated-operator`` / ``--simulated-qc-lab`` on the twin
    keeps them when resumed: the person at the bag scans what the resumed batch asks for;
    the lab measures the QC samples drawn from now on (the bag of earlier ones is gone)."""
    people = _SimulatedPeople()
    started = recording.events[0].data if recording.events else {}
    if bench.model.twin is None:
        return people
    operator = started.get("simulated_operator")
    if isinstance(operator, dict) and type(operator.get("scan_after_s")) in (int, float):
        people.bedside = BedsideOperator(clock, float(operator["scan_after_s"]))
        live.subscribe(people.bedside.hear)
        people.bedside.attend(batch)
    people.wants_lab = started.get("simulated_qc_lab") is True
    return people


async def _cancel(run: asyncio.Task[Any]) -> None:
    if not run.done():
        run.cancel()
        with contextlib.suppress(BaseException):
            await run


def _deviation(
    batch: Batch,
    recording: Recording,
    gap_s: float,
    derived: int,
    operator: str,
    reason: str,
) -> dict[str, Any]:
    """The interruption as the batch record shows it: how long, where, what is unconfirmed."""
    last = recording.last_of_the_batch
    step = batch.current
    unconfirmed = unconfirmed_setpoints(recording.events)
    where = f" at {step.path}" if step else ""
    lost = f"; {len(unconfirmed)} setpoint(s) not confirmed by their device" if unconfirmed else ""
    return {
        "deviation": "interruption",
        "message": (
            f"batch process interrupted after event {last.seq} for {gap_s:.0f} s; "
            f"resumed in {batch.state.label}{where}{lost}"
        ),
        "last_seq": last.seq,
        "interrupted_after": last.wall_time,
        "gap_s": round(gap_s, 3),
        "state": batch.state.label,
        "phase": step.path if step else None,
        "derived_events": derived,
        "unconfirmed": unconfirmed,
        "hold_reason": f"resumed after an interruption of {gap_s:.0f} s: held until an operator "
        "restarts",
        "operator": operator,
        "meaning": f"{operator} resumes the batch after an interruption",
        "reason": reason,
    }


def resume(path: Path | str, **kwargs: Any) -> ProceduralState:
    """Resume the batch in ``path``: replayed in virtual time, then on its bench's clock."""
    recording = load_recording(path)
    if not recording.events:
        raise JournalError(f"{path}: empty journal")
    return run_batch_loop(lambda: resume_async(recording, **kwargs), virtual=True, pace=None)
