"""Compose a batch: recipe + bench -> connected equipment -> engine -> journal.

The CLI, the HIL suite and the tests all start batches through here, so there
is one way a batch is run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin import __version__
from twin.access.esign import REQUIRED_FLAG, sign_event
from twin.access.users import Signer, UserStore
from twin.bench import LoadedBench, OpenBench, open_bench, with_seed
from twin.clock import DEFAULT_PACE, Clock, run_batch_loop
from twin.engine.batch import Batch
from twin.engine.inbox import claim_command_address
from twin.engine.states import ProceduralState
from twin.errors import InvalidInput, JournalWriteFailed, PocTwinError
from twin.journal import Event, Journal, read_events
from twin.recipe import LoadedRecipe
from twin.signing import load_site_key
from twin.sim.bedside import BedsideOperator
from twin.sim.qc_lab import TwinQcLab

__all__ = [
    "BatchSummary",
    "run_batch",
    "run_batch_async",
    "run_while_recorded",
    "summarize",
    "twin_keep_path",
]


@dataclass(frozen=True)
class BatchSummary:
    """What a user sees when a batch ends, read back from the journal (the only truth)."""

    batch_id: str
    state: str
    days: float
    events: int
    harvested_ml: float | None
    viable_cells: float | None
    viability_pct: float | None
    transduced_pct: float | None
    fold_expansion: float | None
    hold_reasons: list[str]
    #: The infusion bag formulated from the harvest (``formulation`` event), if any.
    formulation: dict[str, Any] | None = None
    #: Each unit procedure, operation or phase stopped or aborted before its end: which,
    #: by whom, when and why ("held" rows name its holds, with who and how long).
    ended_early: list[str] = dataclasses.field(default_factory=list)


def twin_keep_path(journal_path: Path) -> Path:
    """Where a sim bench's twin keeps its plant for this batch (beside the journal)."""
    return journal_path.with_name(journal_path.name + ".twin")


#: What each device said it was when the batch started (model, serial, firmware).
EQUIPMENT_IDENTITY = "equipment_identity"


async def _identities(equipment: dict[str, Any]) -> dict[str, Any]:
    """Each device's identity, read as a bench check reads it; a device that cannot say is
    recorded as such (the batch still starts: its first poll decides)."""
    found: dict[str, Any] = {}
    for name, device in equipment.items():
        try:
            ident = await device.identify()
        except PocTwinError as exc:
            found[name] = {"error": str(exc)}
        else:
            found[name] = dataclasses.asdict(ident)
    return found


def summarize(journal_path: Path | str) -> BatchSummary:
    """Read a journal and say how its batch ended: its holds at every level (the
    procedure's by its reason, an element's by the element, who and how long) and each
    element stopped or aborted early."""
    from twin.report.elements import Episodes, timed

    episodes = Episodes()
    batch_id, state, seeded = "?", "Idle", None
    days, events = 0.0, 0
    harvest: dict[str, Any] = {}
    formulation: dict[str, Any] | None = None
    holds: list[tuple[int, str]] = []
    closed = False
    for event in read_events(journal_path):
        events += 1
        days = event.batch_time / 86400.0
        closed = closed or event.kind == "batch_ended"
        if event.kind == "batch_started":
            batch_id = event.data["batch_id"]
            seeded = event.data.get("seeded_viable_cells")
        elif event.kind == "transition":
            episodes.see(event)
            if event.source.startswith("procedure:"):
                state = event.data["to"]
                if state == "Holding":
                    holds.append((event.seq, event.data.get("why", "")))
        elif event.kind == "harvest":
            harvest = event.data
        elif event.kind == "formulation":
            formulation = event.data
    ended = []
    for ep in episodes.episodes:  # an element's own (not the procedure's mirrored down)
        if ep.kind == "hold":
            how_long = timed(ep, days * 86400.0, ended=closed)
            holds.append((ep.seq, f"{ep.element} by {ep.who} for {how_long}: {ep.why}"))
        else:
            when = f"at batch time {ep.start / 3600.0:.1f} h"
            ended.append(f"{ep.element} {ep.done} by {ep.who} {when}: {ep.why}")
    cells = harvest.get("viable_cells")
    return BatchSummary(
        batch_id=batch_id,
        state=state,
        days=days,
        events=events,
        harvested_ml=harvest.get("volume_ml"),
        viable_cells=cells,
        viability_pct=harvest.get("viability_pct"),
        transduced_pct=harvest.get("transduced_pct"),
        fold_expansion=(cells / seeded) if cells and seeded else None,
        hold_reasons=[why for _, why in sorted(holds)],
        formulation=formulation,
        ended_early=ended,
    )


async def run_while_recorded(
    run: asyncio.Future[ProceduralState], journal: Journal
) -> ProceduralState:
    """The batch's final state, unless its journal fails first: then the batch is stopped
    where it stands and JournalWriteFailed raised (the run ends with one sentence, and
    ``poc-twin resume`` brings the batch back from what was committed).

    Without this a failed write (a full disk) went into the engine's own fault handling,
    which journals the fault: each handler failed in turn and the batch waited for ever,
    unrecorded, on nothing."""
    failed: asyncio.Future[JournalWriteFailed] = asyncio.get_running_loop().create_future()

    def tell(failure: JournalWriteFailed) -> None:
        if not failed.done():
            failed.set_result(failure)

    journal.on_failure(tell)
    if journal.failure is not None:
        tell(journal.failure)
    try:
        await asyncio.wait({run, failed}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this task cancelled (or interrupted): so is the batch's
        run.cancel()
        raise
    if journal.failure is None:
        return await run
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await run  # its clean-up (scan stopped, command inbox closed) writes nothing more
    raise journal.failure.again()


async def run_batch_async(
    recipe: LoadedRecipe,
    bench: LoadedBench,
    journal_path: Path | None,
    *,
    batch_id: str,
    operator: str,
    seed: int | None = None,
    patient_id: str | None = None,
    bag_id: str | None = None,
    site: str = "local",
    site_key: Path | None = None,
    subscribers: list[Callable[[Event], None]] | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    on_bench: Callable[[OpenBench, Clock], None] | None = None,
    users: UserStore | None = None,
    starter: Signer | None = None,
    lots: dict[str, str] | None = None,
    relay_token: str | None = None,
    bedside_after_s: float | None = None,
    qc_lab: bool = False,
) -> ProceduralState:
    """Run one batch to its end on an already-running loop (virtual or real).

    ``bedside_after_s``: the twin's simulated person at the bag scans what the batch asks
    for this long after it asks (:mod:`twin.sim.bedside`); only on a bench with the twin.
    ``qc_lab``: the twin's simulated QC lab enters the results it can give for the batch's
    QC samples once the batch has ended (:mod:`twin.sim.qc_lab`); only with the twin.

    ``starter``: the person who signed the start (an engineer's run-development
    signature on a development bench); their signature follows ``batch_started``.

    ``users``: the site's users, who sign every command sent to the batch; without
    them no command is accepted (the batch still runs to its end, or Ctrl-C).

    ``journal_path`` None: the journal is kept in memory (an ensemble batch; its
    ``subscribers`` keep what they need) and the batch has no command address.
    """
    bench = with_seed(bench, seed)
    if recipe.model.confirms_identity and not (patient_id and bag_id):
        raise InvalidInput(
            f"recipe {recipe.model.recipe.id} confirms the chain of identity: the batch needs "
            "the patient id and the bag id it is made for (--patient-id, --bag-id)"
        )
    if bedside_after_s is not None and bench.model.twin is None:
        raise InvalidInput(
            f"bench {bench.model.bench}: a simulated operator stands only at the twin's bag; "
            "at real equipment a person scans"
        )
    if qc_lab and bench.model.twin is None:
        raise InvalidInput(
            f"bench {bench.model.bench}: the simulated QC lab measures only the twin's bag; "
            "real samples go to a real lab (poc-twin qc)"
        )
    clock = Clock(zone=bench.zone)
    bedside = BedsideOperator(clock, bedside_after_s) if bedside_after_s is not None else None
    signer = load_site_key(site_key) if site_key is not None else None
    if signer is not None:
        site = signer.site
    claimed = None
    if journal_path is None:
        journal = Journal.in_memory(clock.now, signer=signer)
        keep = None
    else:
        # Claimed before the file exists: no resume can write it while this batch starts.
        claimed = claim_command_address(journal_path)
        try:
            journal = Journal(journal_path, clock.now, signer=signer)
        except BaseException:
            claimed.close()
            raise
        keep = twin_keep_path(journal_path)
    for subscriber in [*(subscribers or []), *([bedside.hear] if bedside else [])]:
        journal.subscribe(subscriber)
    batch: Batch | None = None
    try:
        async with open_bench(bench, clock, twin_keep=keep) as opened:
            if on_bench is not None:  # e.g. the HIL suite starting a fault scenario on the twin
                on_bench(opened, clock)
            lab = TwinQcLab(opened.twin.plant) if qc_lab else None
            if lab is not None:
                journal.subscribe(lab.hear)
            seeded = None
            if bench.model.twin is not None:
                ino = bench.model.twin.inoculum
                seeded = ino.volume_ml * ino.viable_cells_per_ml
            # read before the batch starts: the engine's first act and replay's start coincide
            identities = await _identities(opened.equipment)
            with journal.together():  # the start and its signature: one commit
                started = journal.append(
                    "batch_started",
                    "batch",
                    {
                        "batch_id": batch_id,
                        "operator": operator,
                        "site": site,
                        "site_key_id": signer.key_id if signer is not None else None,
                        "patient_id": patient_id,
                        "bag_id": bag_id,
                        "poc_twin_version": __version__,
                        "recipe": {
                            "id": recipe.model.recipe.id,
                            "version": recipe.model.recipe.version,
                            "status": recipe.model.recipe.status,
                            "path": str(recipe.path),
                            "sha256": recipe.sha256,
                            "text": recipe.text,
                            "parameters": recipe.parameters,
                        },
                        "bench": {
                            "name": bench.model.bench,
                            "path": str(bench.path),
                            "text": bench.path.read_text(encoding="utf-8"),
                            "seed": bench.model.twin.seed if bench.model.twin else None,
                            "development": bench.model.development,
                            "donor": (
                                bench.model.twin.donor.profile(
                                    bench.model.twin.inoculum.viability_pct
                                ).as_record()
                                if bench.model.twin
                                else None
                            ),
                        },
                        "seeded_viable_cells": seeded,
                        "lots": dict(lots or {}),
                        "lot_expiry_required": True,
                        "clock_zero": clock.started_at.isoformat(),
                        **(
                            {"simulated_operator": {"scan_after_s": bedside_after_s}}
                            if bedside_after_s is not None
                            else {}
                        ),
                        **({"simulated_qc_lab": True} if qc_lab else {}),
                        REQUIRED_FLAG: users is not None,
                    },
                )
                if starter is not None:
                    sign_event(journal, started, starter)
            journal.append(EQUIPMENT_IDENTITY, "batch", identities)
            batch = Batch(
                recipe,
                opened.equipment,
                journal,
                clock,
                batch_id=batch_id,
                operator=operator,
                patient_id=patient_id,
                bag_id=bag_id,
                users=users,
                relay_token=relay_token,
                lots=lots,
                command_socket=claimed,
            )
            if bedside is not None:
                bedside.attend(batch)
            if on_batch is not None:
                on_batch(batch)
            final = await run_while_recorded(asyncio.ensure_future(batch.run()), journal)
            journal.append("batch_ended", "batch", {"state": final.label})
            if lab is not None:  # results come after the batch, as from a real lab
                lab.report(journal)
            return final
    finally:
        if claimed is not None and (batch is None or batch.command_socket is claimed):
            # Never served. Once the batch's command server has it, only the server closes
            # it: closed under a listening server (a cancelled run whose batch task has not
            # finished yet), the loop would spin on its dead descriptor.
            claimed.close()
        journal.close()


def run_batch(
    recipe: LoadedRecipe,
    bench: LoadedBench,
    journal_path: Path,
    *,
    pace: float | None = DEFAULT_PACE,
    **kwargs: Any,
) -> ProceduralState:
    """Run one batch on the loop its bench asks for (virtual time on the twin).

    ``pace``: batch seconds per wall second while the batch waits on a person (twin only).
    """
    return run_batch_loop(
        lambda: run_batch_async(recipe, bench, journal_path, **kwargs),
        virtual=bench.virtual_clock,
        pace=pace,
    )
