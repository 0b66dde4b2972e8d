"""Commands that re-run a recorded batch: replay (compare) and resume (continue after a crash)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from twin.access.roles import Act
from twin.access.users import AccessRefused, Signer, UserStoreError
from twin.cli.common import (
    EXIT_FAIL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_REFUSED,
    DebugOpt,
    PaceOpt,
    _fail,
    _print_problems,
    app,
    err,
    out,
    said,
)
from twin.cli.esign import PasswordFileOpt, UsersOpt, read_password, users_for_batch
from twin.errors import InvalidInput, PocTwinError

JournalArg = Annotated[Path, typer.Argument(help="Journal file of the batch")]


@app.command()
def replay(
    journal: JournalArg,
    recipe: Annotated[
        Path | None,
        typer.Option(help="Replay with this recipe instead of the recorded one (a changed recipe)"),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Re-run a recorded batch against its recorded device I/O; name the first divergence."""
    from twin.replay import replay as run_replay

    try:
        result = run_replay(journal, recipe)
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
    if result.recipe_sha256 != result.recorded_sha256:
        out.print(
            f"note: replayed with recipe sha256 {result.recipe_sha256[:16]}…, recorded "
            f"{result.recorded_sha256[:16]}…",
            highlight=False,
        )
    if result.identical:
        from twin.access.entries import batch_writes

        if result.record_ended:
            ending = "the whole batch"
        elif batch_writes(journal):  # its process goes on writing it
            ending = "up to the end of the record so far (the batch is still running)"
        else:
            ending = "up to the end of the record (the batch was interrupted there)"

        out.print(
            f"{journal}: identical — {result.reproduced} events reproduced, {ending}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_OK)
    assert result.divergence is not None
    err.print(
        f"{journal}: diverges after {result.reproduced} of {result.recorded} events\n"
        + result.divergence.describe(),
        highlight=False,
        markup=False,
    )
    raise typer.Exit(EXIT_FAIL)


def _supervisor_signs(
    journal: Path, operator: str, password_file: Path | None, users: Path | None, restart: bool
) -> tuple[Signer, Signer | None]:
    """The signature of the supervisor who resumes (and, with ``--restart``, restarts: a
    second act, signed for as such); a refusal is journalled, exit 4."""
    from twin.access.entries import journal_refusal_in

    store = users_for_batch(users)
    if store is None:
        raise _fail(
            "resuming a batch is a supervisor's signed act, and this site has no users file "
            "(site/users.sqlite or --users; docs/access.md)",
            EXIT_REFUSED,
        )
    try:
        password = read_password(operator, password_file)
        resumes = store.sign(operator, password, Act.RESUME_INTERRUPTED)
        return resumes, store.sign(operator, password, Act.RESTART) if restart else None
    except AccessRefused as exc:
        journal_refusal_in(journal, exc, held=True)  # resume holds the journal's address
        raise _fail(str(exc), EXIT_REFUSED) from None
    except UserStoreError as exc:  # the users file locked by another process
        raise _fail(str(exc), EXIT_REFUSED) from None
    finally:
        store.close()


def _telemetry_of(broker: str, journal: Path) -> Any:
    """The telemetry of the resumed batch (its URL checked: exit 2, nothing signed or written)."""
    from twin.telemetry.launch import SiteTelemetry
    from twin.telemetry.topics import TelemetryError

    try:
        return SiteTelemetry(broker, journal)
    except TelemetryError as exc:  # it names what it is about (--broker, a setting)
        said = str(exc).removesuffix("; nothing started")
        raise _fail(f"{said}; nothing resumed", EXIT_INVALID) from None
    except ValueError as exc:  # urllib: a port that is not a number or out of range, bad IPv6
        raise _fail(f"--broker: {exc}; nothing resumed", EXIT_INVALID) from None


def _start_resumed_telemetry(telemetry: Any) -> None:
    """Forward the resumed batch's journal. A suspension stops new batches only, not this one
    (it started before); the site's record keeps it and the supervisor is told."""
    suspension, live = telemetry.suspension()
    if suspension.suspended:
        err.print(
            f"note: site {telemetry.broker.site} is suspended by the control site "
            f"({suspension.operator}: {suspension.reason}): no new batch may start; this one "
            "started before and resumes",
            highlight=False,
            markup=False,
        )
    if not live:
        err.print(
            f"note: broker {telemetry.broker.host}:{telemetry.broker.port} unreachable; the batch "
            "resumes and its journal is forwarded when the broker is back",
            highlight=False,
            markup=False,
        )
    telemetry.start()


@app.command()
def resume(
    journal: JournalArg,
    restart: Annotated[
        bool, typer.Option("--restart", help="Also restart the held batch and run on")
    ] = False,
    operator: Annotated[
        str, typer.Option(help="Your site user id (a supervisor signs the resume)")
    ] = "",
    reason: Annotated[str, typer.Option(help="Why (recorded in the batch record)")] = "",
    site_key: Annotated[
        Path | None,
        typer.Option(envvar="POC_TWIN_SITE_KEY", help="Site Ed25519 key: signs the journal"),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            envvar="POC_TWIN_BROKER",
            help="MQTT broker URL for telemetry, as the batch was run with: its forwarder "
            "sends the control site what it lacks and carries its requests back",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live display")] = False,
    pace: PaceOpt = None,
    users: UsersOpt = None,
    password_file: PasswordFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Bring back a batch whose process died: replay its record, hold, re-read the equipment.

    A supervisor's signed act (--operator is the site user id; the password is asked).
    Once the batch is back, Ctrl-C holds it (journalled with this --operator) and a second
    Ctrl-C aborts it, as in ``run``. With a broker (``--broker`` or POC_TWIN_BROKER, as for
    ``run``) the journal is forwarded again from what the control site lacks, the events
    written while the process was dead and the resume's deviation included, and the
    control site's holds and acknowledgements reach the resumed batch.
    """
    from twin.cli.ctrl_c import CtrlC, lines_to
    from twin.cli.recorded import read_recorded
    from twin.cli.stop_signals import StopSignals
    from twin.display import BatchDisplay
    from twin.engine.inbox import BatchProcessRunning, claim_command_address
    from twin.replay.resume import resume as run_resume
    from twin.runner import summarize

    if not operator or not reason:
        raise _fail("resume needs --operator and --reason (recorded with the deviation)", 2)
    said(reason)
    try:
        summary_before = summarize(journal)
        recorded = read_recorded(journal)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_INVALID, debug) from None
    if recorded.closed:  # a refusal, as a command to it is: before any panel or password
        # (a batch final but not closed, its process killed in between, is resumed: the
        # resume writes its batch_ended)
        raise _fail(
            f"{journal}: batch {recorded.batch_id} already ended {recorded.state}; nothing to "
            "resume (a new batch is a new run)",
            EXIT_REFUSED,
        )
    try:  # before a password is asked or a byte written: one process writes a journal
        claimed = claim_command_address(journal)
    except BatchProcessRunning:
        raise _fail(
            f"{journal}: its batch is running in another process (it takes commands: "
            "poc-twin command); resume brings back only a batch whose process died. "
            "Nothing was written.",
            EXIT_REFUSED,
        ) from None
    telemetry = _telemetry_of(broker, journal) if broker else None  # a bad URL: nothing signed
    signer = restarter = None
    if summary_before is None or summary_before.state not in ("Complete", "Stopped", "Aborted"):
        signer, restarter = _supervisor_signs(journal, operator, password_file, users, restart)
    if telemetry is not None:
        _start_resumed_telemetry(telemetry)
    batch_id = summary_before.batch_id if summary_before else str(journal)
    display = None if quiet else BatchDisplay(out, batch_id)
    subscribers: list[Any] = [display] if display is not None else []
    ctrl_c = CtrlC(operator, journal, lines_to(display, err))
    subscribers.append(ctrl_c)
    stops = StopSignals(journal, lines_to(display, err))  # SIGTERM, SIGHUP: hold, then stop
    subscribers.append(stops)

    def live(batch: Any) -> None:
        ctrl_c.attach(batch)
        stops.attach(batch)

    try:
        with display if display is not None else contextlib.nullcontext():
            final = run_resume(
                journal,
                operator=operator,
                reason=reason,
                restart=restart,
                site_key=site_key,
                subscribers=subscribers,
                pace=1.0 if pace is None else pace,  # a wall bench goes live: no pace
                users=users_for_batch(users),
                person=signer,
                restarter=restarter,
                on_live=live,
                claimed=claimed,
                relay_token=telemetry.relay_token if telemetry is not None else None,
            )
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
    except asyncio.CancelledError:  # the run ended by a stop signal, the batch left Held
        if stops.stopped_by is None or stops.batch is None:
            raise
        final = stops.batch.state
    except KeyboardInterrupt:
        if ctrl_c.batch is None or not ctrl_c.batch.state.is_final:
            # before the batch was back (re-run, re-read), or a Ctrl-C that did not reach it
            raise _fail(
                f"interrupted while resuming; poc-twin resume {journal} brings it back",
                EXIT_REFUSED,
            ) from None
        final = ctrl_c.batch.state
    from twin.cli.batch import _close_telemetry, _exit_code, _print_summary

    with ctrl_c.ended(final):
        out.print()
        _print_summary(summarize(journal), journal)
        _close_telemetry(telemetry, ctrl_c)
        raise typer.Exit(_exit_code(final))
