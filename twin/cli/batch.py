"""Commands that run a batch and talk to a running one: validate, run, command, confirm-identity."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from twin.access.roles import Act
from twin.access.users import AccessRefused, Signer, UserStore, UserStoreError
from twin.bench import with_donor_seed
from twin.cli.common import (
    EXIT_ENDED,
    EXIT_FAIL,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_REFUSED,
    BenchOpt,
    DebugOpt,
    PaceOpt,
    ParamOpt,
    _existing_folder,
    _fail,
    _load,
    _params,
    _print_problems,
    app,
    err,
    out,
    pace_for,
    said,
)
from twin.cli.esign import (
    PasswordFileOpt,
    RunPasswordFileOpt,
    UsersOpt,
    read_password,
    users_for_batch,
)
from twin.clock import wall_now
from twin.engine.lots import MATERIALS
from twin.errors import InvalidInput, JournalError, PocTwinError
from twin.journal import check_new_journal
from twin.names import UnsafeName, check_safe_name

if TYPE_CHECKING:
    from twin.bench import LoadedBench
    from twin.cli.ctrl_c import CtrlC
    from twin.engine.states import ProceduralState


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file")],
    bench: BenchOpt = None,
    param: ParamOpt = None,
) -> None:
    """Check a recipe (and its setpoints against the bench's equipment limits) without running."""
    try:
        loaded, _ = _load(recipe, bench, _params(param))
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    header = loaded.model.recipe
    out.print(
        f"{recipe}: valid — {header.product} v{header.version} ({header.status}), "
        f"sha256 {loaded.sha256[:16]}…",
        highlight=False,
        markup=False,  # a product name is text, even with [brackets] in it
    )


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file")],
    bench: BenchOpt = None,
    journal: Annotated[
        Path | None, typer.Option(help="Journal file (default runs/<batch-id>.sqlite)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the twin's noise (sim bench)")] = None,
    lot: Annotated[
        list[str] | None,
        typer.Option(
            "--lot",
            help="MATERIAL=LOT of a material this batch doses (repeatable): the batch record "
            "lists each addition with its lot",
        ),
    ] = None,
    donor_seed: Annotated[
        int | None,
        typer.Option(
            "--donor-seed",
            help="Draw the twin's donor (growth, transduction, death, viability, CD4/CD8) "
            "by this seed; the journal records the donor's traits (sim bench)",
        ),
    ] = None,
    batch_id: Annotated[str | None, typer.Option("--batch-id", help="Batch identifier")] = None,
    operator: Annotated[
        str,
        typer.Option(
            envvar="POC_TWIN_OPERATOR",
            help="Who starts the batch (a site user: on a development bench an engineer, "
            "who signs the start)",
        ),
    ] = "operator",
    broker: Annotated[
        str | None, typer.Option(envvar="POC_TWIN_BROKER", help="MQTT broker URL for telemetry")
    ] = None,
    param: ParamOpt = None,
    site: Annotated[str, typer.Option(envvar="POC_TWIN_SITE", help="This site's name")] = "local",
    site_key: Annotated[
        Path | None,
        typer.Option(envvar="POC_TWIN_SITE_KEY", help="Site Ed25519 key: signs the journal"),
    ] = None,
    patient_id: Annotated[
        str | None, typer.Option("--patient-id", help="Patient the batch is made for")
    ] = None,
    bag_id: Annotated[
        str | None, typer.Option("--bag-id", help="Label of the patient's starting-material bag")
    ] = None,
    simulated_operator: Annotated[
        float | None,
        typer.Option(
            "--simulated-operator",
            min=0.0,
            max=1440.0,
            metavar="MINUTES",
            help="On the twin's bench only: a simulated person at the bag scans the identity "
            "and the containers the batch asks for, MINUTES of batch time after it asks "
            "(journalled as twin:bedside, unsigned)",
        ),
    ] = None,
    simulated_qc_lab: Annotated[
        bool,
        typer.Option(
            "--simulated-qc-lab",
            help="On the twin's bench only: the twin's simulated QC lab enters, once the "
            "batch ends, results for the QC tests the twin models (vector copies) on each "
            "sample sent for QC (journalled as twin:qc-lab, unsigned)",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live display")] = False,
    pace: PaceOpt = None,
    users: UsersOpt = None,
    password_file: RunPasswordFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Validate, then execute a batch, with live progress and a batch summary.

    With a site users file, a run on a development bench (the twin, a test bench) is an
    engineer's signed act: --operator must be an engineer, who signs with the password.

    Ctrl-C holds the batch (journalled with this --operator) and a second Ctrl-C aborts it:
    the batch is never killed mid-step, and ends as any other batch does.
    """
    from twin.cli.ctrl_c import CtrlC, lines_to
    from twin.cli.stop_signals import StopSignals
    from twin.display import BatchDisplay
    from twin.runner import run_batch, summarize

    try:
        loaded_recipe, loaded_bench = _load(recipe, bench, _params(param))
        loaded_bench = with_donor_seed(loaded_bench, donor_seed)
        lots = _lots(lot)
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    for material, fixed in loaded_recipe.model.fixed_lots().items():
        if material in lots and lots[material] not in fixed:
            raise _fail(
                f"--lot {material}={lots[material]}: every {material} addition of the recipe "
                f"fixes its lot ({', '.join(sorted(fixed))}); this one would never be dosed; "
                "nothing started",
                EXIT_INVALID,
            )
    _starter_and_ids_or_exit(operator, patient_id, bag_id)
    if loaded_recipe.model.confirms_identity and not (patient_id and bag_id):
        raise _fail(
            f"{recipe}: the recipe confirms the chain of identity: give the --patient-id and "
            "--bag-id the batch is made for; nothing started",
            EXIT_INVALID,
        )
    if simulated_operator is not None and loaded_bench.model.twin is None:
        raise _fail(
            f"--simulated-operator: bench {loaded_bench.model.bench} has real equipment; "
            "a person scans there; nothing started",
            EXIT_INVALID,
        )
    pace = pace_for(loaded_bench, pace)
    if simulated_qc_lab and loaded_bench.model.twin is None:
        raise _fail(
            f"--simulated-qc-lab: bench {loaded_bench.model.bench} has real equipment; "
            "its samples go to a real QC lab (poc-twin qc); nothing started",
            EXIT_INVALID,
        )
    stamp = wall_now().strftime("%Y%m%d-%H%M%S")
    if batch_id is None:
        batch_id = f"{loaded_recipe.model.recipe.id}-{stamp}"
    try:  # it names the journal: never a path of its own
        check_safe_name(batch_id, "--batch-id")
    except UnsafeName as exc:
        raise _fail(f"{exc}; nothing started", EXIT_INVALID) from None
    journal_path = journal or Path("runs") / f"{batch_id}.sqlite"
    try:  # written only where the user pointed, never over something else
        check_new_journal(journal_path)
    except JournalError as exc:
        raise _fail(f"{exc}; nothing started", EXIT_INVALID) from None
    _journal_folder_or_exit(journal_path)
    site_users = users_for_batch(users)
    starter = _development_signature(site_users, loaded_bench, operator, password_file)
    _production_starter_or_exit(site_users, loaded_bench, operator)
    if site_users is None:
        err.print(
            "note: no site users file (site/users.sqlite or --users): no command can be "
            "signed for this batch; Ctrl-C still holds it",
            highlight=False,
            markup=False,
        )
    telemetry = _start_telemetry(broker, journal_path) if broker else None
    subscribers: list[Any] = []
    display = None if quiet else BatchDisplay(out, batch_id)
    if display is not None:
        subscribers.append(display)
    # Through the live panel's own console while it is shown: a line printed past it (on
    # stderr) is drawn over by its next refresh, and the person never reads "again aborts".
    ctrl_c = CtrlC(operator, journal_path, lines_to(display, err), signable=site_users is not None)
    subscribers.append(ctrl_c)
    stops = StopSignals(journal_path, lines_to(display, err))  # SIGTERM, SIGHUP: hold, stop
    subscribers.append(stops)

    def attach(batch: Any) -> None:
        ctrl_c.attach(batch)
        stops.attach(batch)

    try:
        with display if display is not None else contextlib.nullcontext():
            final = run_batch(
                loaded_recipe,
                loaded_bench,
                journal_path,
                batch_id=batch_id,
                operator=operator,
                seed=seed,
                subscribers=subscribers,
                patient_id=patient_id,
                bag_id=bag_id,
                site=site,
                site_key=site_key,
                on_batch=attach,
                pace=pace,
                users=site_users,
                starter=starter,
                lots=lots,
                relay_token=telemetry.relay_token if telemetry is not None else None,
                bedside_after_s=simulated_operator * 60.0
                if simulated_operator is not None
                else None,
                qc_lab=simulated_qc_lab,
            )
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
    except KeyboardInterrupt:
        final = _interrupted(ctrl_c, journal_path)
    except asyncio.CancelledError:  # the run ended by a stop signal, the batch left Held
        if stops.stopped_by is None or stops.batch is None:
            raise
        final = stops.batch.state
    with ctrl_c.ended(final):
        summary = summarize(journal_path)
        out.print()
        _print_summary(summary, journal_path)
        _close_telemetry(telemetry, ctrl_c)
        raise typer.Exit(_exit_code(final))


_MATERIALS = MATERIALS


def _journal_folder_or_exit(journal_path: Path) -> None:
    """The journal's folder is one (or can be made) and can be written: else exit 2, nothing
    started (it failed only once the batch began, exit 1, after a signature, telemetry)."""
    folder = _existing_folder(journal_path)
    if not folder.is_dir():
        raise _fail(
            f"--journal {journal_path}: {folder} is a file, not a folder; nothing started",
            EXIT_INVALID,
        )
    if not os.access(folder, os.W_OK | os.X_OK):  # also a read-only file system, for root
        raise _fail(
            f"--journal {journal_path}: the folder {folder} cannot be written; nothing started",
            EXIT_INVALID,
        )


def _starter_and_ids_or_exit(operator: str, patient_id: str | None, bag_id: str | None) -> None:
    """Who starts the batch is a site user id (it is journalled and every Ctrl-C is theirs),
    and the patient and bag ids are what their labels print (every scan is compared with
    them): exit 2, nothing started, for anything else."""
    from twin.words import UnfitText, check_barcode_id

    try:
        check_safe_name(operator, "--operator")
        if patient_id is not None:
            check_barcode_id(patient_id, "--patient-id")
        if bag_id is not None:
            check_barcode_id(bag_id, "--bag-id")
    except (UnsafeName, UnfitText) as exc:
        raise _fail(f"{exc}; nothing started", EXIT_INVALID) from None


def _lots(values: list[str] | None) -> dict[str, str]:
    """``--lot MATERIAL=LOT`` options as {material: lot}; exit 2 for anything else."""
    lots: dict[str, str] = {}
    for item in values or []:
        material, sep, lot = (part.strip() for part in item.partition("="))
        if not sep or material not in _MATERIALS:
            raise _fail(
                f"--lot '{item}': write MATERIAL=LOT with MATERIAL one of "
                f"{', '.join(_MATERIALS)}; nothing started",
                EXIT_INVALID,
            )
        if not lot or len(lot) > 64 or not lot.isprintable():
            raise _fail(f"--lot '{item}': a lot is 1-64 printable characters", EXIT_INVALID)
        if lots.get(material, lot) != lot:  # which one is meant is not for the order to say
            raise _fail(
                f"--lot {material} given twice ({lots[material]}, {lot}): give each material's "
                "lot once; nothing started",
                EXIT_INVALID,
            )
        lots[material] = lot
    return lots


def _development_signature(
    users: UserStore | None, bench: LoadedBench, operator: str, password_file: Path | None
) -> Signer | None:
    """The engineer's signature for a run on a development bench (site users in force);
    None where no signature is asked. A refusal exits 4, nothing started (and audited)."""
    if users is None or not bench.model.development:
        return None
    try:
        return users.sign(operator, read_password(operator, password_file), Act.RUN_DEVELOPMENT)
    except (AccessRefused, UserStoreError) as exc:
        raise _fail(f"{exc}; nothing started", EXIT_REFUSED) from None


def _production_starter_or_exit(users: UserStore | None, bench: LoadedBench, operator: str) -> None:
    """On a production bench with site users in force, who starts the batch (unsigned) is
    an enabled, unlocked site user: their name is on ``batch_started`` and on every Ctrl-C
    hold and abort. Exit 4, nothing started, for anyone else; one message for an unknown,
    disabled or locked id, as a refused signature has (no one learns which ids exist)."""
    from twin.access.users import RESERVED_IDS

    if users is None or bench.model.development:
        return
    try:
        user = None if operator.lower() in RESERVED_IDS else users.get(operator)
    except UserStoreError as exc:
        raise _fail(f"{exc}; nothing started", EXIT_REFUSED) from None
    if user is None or user.disabled or user.locked:
        raise _fail(
            f"--operator '{operator}': not a site user who may start a batch on this bench "
            "(unknown, disabled or locked id); nothing started",
            EXIT_REFUSED,
        )


def _interrupted(ctrl_c: CtrlC, journal_path: Path) -> ProceduralState:
    """A Ctrl-C that did not reach the batch as a command: before the batch existed (bench
    still opening), off the main thread, or just as its loop closed. The batch's final state
    if it had ended (the summary follows), else one sentence and exit 1."""
    batch = ctrl_c.batch
    if batch is not None and batch.state.is_final:
        return batch.state
    where = "before the batch began" if batch is None else f"with the batch {batch.state.label}"
    hint = "" if batch is None else f"; poc-twin resume {journal_path} brings it back"
    raise _fail(
        f"interrupted {where}; the journal {journal_path} holds every event up to here{hint}",
        EXIT_FAIL,
    ) from None


def _exit_code(final: ProceduralState) -> int:
    """CLI.md: 0 Complete, 3 ended Stopped/Aborted, 4 left waiting (Held)."""
    if final.label == "Complete":
        return EXIT_OK
    return EXIT_ENDED if final.is_final else EXIT_REFUSED


def _start_telemetry(broker: str, journal_path: Path) -> Any:
    """Telemetry for this batch: refuse to start at a suspended site, else forward the journal."""
    from twin.telemetry.launch import SiteTelemetry
    from twin.telemetry.topics import TelemetryError

    try:
        telemetry = SiteTelemetry(broker, journal_path)
    except TelemetryError as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
    except ValueError as exc:  # urllib: a port that is not a number or out of range, bad IPv6
        raise _fail(f"--broker: {exc}; nothing started", EXIT_INVALID) from None
    suspension, live = telemetry.suspension()
    if suspension.suspended:
        raise _fail(
            f"site {telemetry.broker.site} is suspended by the control site "
            f"({suspension.operator}: {suspension.reason}); no new batch may start until it is "
            "reinstated",
            EXIT_INVALID,
        )
    if not live:
        err.print(
            f"note: broker {telemetry.broker.host}:{telemetry.broker.port} unreachable; the batch "
            "runs and its journal is forwarded when the broker is back",
            highlight=False,
            markup=False,
        )
    telemetry.start()
    return telemetry


def _close_telemetry(telemetry: Any, ctrl_c: CtrlC) -> None:
    """After the summary: where the events are (a Ctrl-C meanwhile leaves the forwarder
    detached, still trying)."""
    if telemetry is None:
        return
    try:
        with ctrl_c.allow_interrupt():
            _finish_telemetry(telemetry)
    except KeyboardInterrupt:
        err.print(
            "interrupted: telemetry still pending; a background forwarder keeps trying",
            highlight=False,
        )


def _finish_telemetry(telemetry: Any) -> None:
    """Say where the journal's events are: stored by the control site, only at the broker,
    or still on their way (a detached forwarder keeps trying)."""
    status, said_ = telemetry.outcome()
    if status == "stored":
        out.print(f"telemetry: {said_}", highlight=False, markup=False)
        return
    hint = f"python -m twin.telemetry forward {telemetry.journal_path} --once"
    if status == "pending":
        said_ = (
            f"telemetry {said_} (broker unreachable, or the control "
            f"site not acknowledging yet?); a background forwarder keeps trying; or later: {hint}"
        )
    else:
        said_ = f"telemetry: {said_}; send them again: {hint}"
    err.print(f"note: {said_}", highlight=False, markup=False)


def _print_summary(summary: Any, journal_path: Path) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Batch {summary.batch_id}", show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    style = "bold green" if summary.state == "Complete" else "bold red"
    table.add_row("state", f"[{style}]{summary.state}[/]")
    table.add_row("duration", f"{summary.days:.2f} days (batch clock)")
    if summary.viable_cells is not None:
        table.add_row("viable cells", f"{summary.viable_cells:.3g}")
        table.add_row(
            "fold expansion", f"{summary.fold_expansion:.1f}x" if summary.fold_expansion else "-"
        )
        table.add_row("viability", f"{summary.viability_pct:.1f} %")
        table.add_row("transduced (CAR+)", f"{summary.transduced_pct:.1f} %")
        table.add_row("harvest volume", f"{summary.harvested_ml:.0f} mL")
    if summary.formulation is not None:
        f = summary.formulation
        table.add_row(
            "formulated dose",
            f"{f['dose_car_positive_cells']:.3g} CAR+ in {f['final_volume_ml']:g} mL "
            f"({f['harvest_drawn_ml']:.1f} mL of harvest)",
        )
    for reason in summary.hold_reasons:
        table.add_row("held", Text(reason))  # an operator's words: text, never markup
    for ended in summary.ended_early:  # a unit procedure, operation or phase cut short
        table.add_row("ended early", Text(ended))
    table.add_row("events", str(summary.events))
    out.print(table)
    out.print(f"journal: {journal_path}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def command(
    batch: Annotated[str, typer.Argument(help="Batch id (runs/<id>.sqlite) or journal file")],
    action: Annotated[str, typer.Argument(help="pause, resume, hold, restart, stop or abort")],
    operator: Annotated[str, typer.Option(help="Your site user id (you sign the command)")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the batch record)")],
    level: Annotated[
        str, typer.Option(help="procedure, unit, operation or phase (hold, restart, stop, abort)")
    ] = "procedure",
    password_file: PasswordFileOpt = None,
) -> None:
    """Give a signed operator command to a running batch from another terminal.

    The batch checks your user id, password and role before anything happens.
    """
    # What a person gives a running batch (start is the engine's own; reset, below).
    given = ("pause", "resume", "hold", "restart", "stop", "abort")
    if action == "reset":
        _reset_refused(_journal_of(batch))
    if action not in given:
        raise _fail(f"unknown command '{action}'; valid: {', '.join(given)}", EXIT_INVALID)
    if action in ("pause", "resume") and level != "procedure":  # before anyone signs
        raise _fail(
            f"{action} acts on the whole procedure, not a {level}; levels are for hold, "
            "restart, stop and abort",
            EXIT_INVALID,
        )
    from twin.engine.states import LEVELS

    if level not in LEVELS:
        raise _fail(f"unknown level '{level}'; levels: {', '.join(LEVELS)}", EXIT_INVALID)
    said(reason)
    path = _journal_of(batch)
    _served_or_exit(path, action)
    password = read_password(operator, password_file)
    reply = _send(path, action, operator=operator, password=password, reason=reason, level=level)
    _accepted_or_exit(action, reply)
    out.print(f"{action}: accepted — batch is now {reply['state']}", markup=False)


@app.command("confirm-identity")
def confirm_identity(
    batch: Annotated[str, typer.Argument(help="Batch id (runs/<id>.sqlite) or journal file")],
    patient_id: Annotated[str, typer.Option("--patient-id", help="Scanned from the wristband")],
    bag_id: Annotated[str, typer.Option("--bag-id", help="Scanned from the bag label")],
    operator: Annotated[str, typer.Option(help="Your site user id (you sign the scan)")],
    reason: Annotated[str, typer.Option(help="Meaning, e.g. 'verified before gene transfer'")],
    password_file: PasswordFileOpt = None,
) -> None:
    """Scan patient and bag ids for the chain of identity; the batch compares them to its own."""
    from twin.words import UnfitText, check_barcode_id

    try:
        check_barcode_id(patient_id, "--patient-id")
        check_barcode_id(bag_id, "--bag-id")
    except UnfitText as exc:
        raise _fail(f"confirm-identity: {exc}; nothing sent", EXIT_INVALID) from None
    said(reason)
    path = _journal_of(batch)
    _served_or_exit(path, "confirm-identity")
    password = read_password(operator, password_file)
    reply = _send(
        path,
        "confirm-identity",
        operator=operator,
        password=password,
        reason=reason,
        extra={"patient_id": patient_id, "bag_id": bag_id},
    )
    if reply["status"] == "mismatch":  # recorded and signed: the batch reacts to it
        err.print(f"confirm-identity: MISMATCH — {reply['message']}", highlight=False, markup=False)
        raise typer.Exit(EXIT_REFUSED)
    _accepted_or_exit("confirm-identity", reply)
    out.print("scan matches this batch's patient and bag; the batch goes on")


@app.command("scan-lot")
def scan_lot(
    batch: Annotated[str, typer.Argument(help="Batch id (runs/<id>.sqlite) or journal file")],
    material: Annotated[str, typer.Option(help=f"The material scanned: {', '.join(_MATERIALS)}")],
    operator: Annotated[str, typer.Option(help="Your site user id (you sign the scan)")],
    reason: Annotated[str, typer.Option(help="Meaning, e.g. 'vector container at the bedside'")],
    gs1: Annotated[
        str | None,
        typer.Option(help="The container's GS1 label: '(01)GTIN(17)YYMMDD(10)LOT' or raw scan"),
    ] = None,
    lot: Annotated[
        str | None, typer.Option(help="The lot, keyed in (instead of --gs1; needs --expiry)")
    ] = None,
    expiry: Annotated[
        str | None, typer.Option(help="The expiry date keyed in, YYYY-MM-DD (needed with --lot)")
    ] = None,
    password_file: PasswordFileOpt = None,
) -> None:
    """Scan a material container for the addition waiting on it: the batch checks material,
    lot and expiry, journals the scan with your signature, and doses only a scan that passes."""
    from twin.engine.lots import scan_from

    try:
        scan = scan_from(material, gs1, lot, expiry)
    except ValueError as exc:
        raise _fail(f"scan-lot: {exc}; nothing sent", EXIT_INVALID) from None
    said(reason)
    path = _journal_of(batch)
    _served_or_exit(path, "scan-lot")
    password = read_password(operator, password_file)
    reply = _send(
        path,
        "scan-lot",
        operator=operator,
        password=password,
        reason=reason,
        extra=scan.record(),
    )
    _accepted_or_exit("scan-lot", reply)
    out.print(f"lot {scan.lot} of {material} verified; the batch doses it", markup=False)


@app.command("ack")
def acknowledge(
    batch: Annotated[str, typer.Argument(help="Batch id (runs/<id>.sqlite) or journal file")],
    alarm: Annotated[int, typer.Argument(help="The alarm's event number (the record lists it)")],
    operator: Annotated[str, typer.Option(help="Your site user id (you sign the acknowledgement)")],
    comment: Annotated[str, typer.Option(help="What was seen and done")],
    password_file: PasswordFileOpt = None,
    users: UsersOpt = None,
) -> None:
    """Acknowledge an alarm with a comment; a critical alarm needs a supervisor.

    A running batch takes it through its command socket; for an ended batch it is
    appended to the journal here, checked against the site's users file.
    """
    from twin.access.entries import batch_is_running

    said(comment, "--comment")
    path = _journal_of(batch)
    if batch_is_running(path):
        password = read_password(operator, password_file)
        reply = _send(
            path,
            "acknowledge",
            operator=operator,
            password=password,
            reason=comment,
            extra={"alarm": alarm},
        )
        _accepted_or_exit("ack", reply)
        out.print(f"alarm {alarm} acknowledged", markup=False)
        return
    from twin.cli.signed import acknowledge_ended

    acknowledge_ended(path, alarm, operator, comment, password_file, users)


def _journal_of(batch: str) -> Path:
    """A journal file as given, else the batch id's default journal runs/<id>.sqlite."""
    try:
        is_file = Path(batch).is_file()
    except OSError:  # a name too long for the file system: not a file, then not a batch id
        is_file = False
    if is_file:
        path = Path(batch)
    else:
        try:  # a batch id, not a path: it names runs/<id>.sqlite and nothing else
            check_safe_name(batch, "batch id")
        except UnsafeName as exc:
            raise _fail(f"{exc} (nor an existing journal file)", EXIT_INVALID) from None
        path = Path("runs") / f"{batch}.sqlite"
    if not path.exists():
        raise _fail(f"no journal for batch '{batch}' (looked for {path})", EXIT_INVALID)
    return path


def _accepted_or_exit(action: str, reply: dict[str, Any], invalid: int = EXIT_INVALID) -> None:
    """Return if the batch accepted the request; else say why and exit 4 (refused) or
    ``invalid`` (a request the batch could not take)."""
    if reply["status"] == "accepted":
        return
    err.print(f"{action}: {reply['status']} — {reply['message']}", highlight=False, markup=False)
    raise typer.Exit(EXIT_REFUSED if reply["status"] == "refused" else invalid)


def _reset_refused(path: Path) -> NoReturn:
    """ISA-88's reset takes an ended batch to Idle. Here a batch's process ends with the
    batch, and the unit is free (Idle) for a new run then: nothing is left to reset, and a
    batch still running cannot be reset. Exit 4 either way, saying which; nothing is signed
    or journalled."""
    from twin.access.entries import batch_is_running
    from twin.cli.recorded import read_recorded

    try:
        recorded = read_recorded(path)
    except JournalError as exc:
        raise _fail(f"{exc}; give the journal file of a batch", EXIT_INVALID) from None
    if recorded.ended:  # (its process may still be closing down)
        why = (
            f"batch {recorded.batch_id} has ended {recorded.state}, and its process with it: "
            "nothing is left to reset; the unit is Idle for a new batch (poc-twin run)"
        )
    elif not batch_is_running(path):
        _unserved_exit(path, "reset")
    else:
        why = (
            "reset takes an ended batch (Complete, Stopped, Aborted) to Idle; this batch is "
            f"{recorded.state}: stop or abort it first"
        )
    err.print(f"reset: refused — {why}", highlight=False, markup=False)
    raise typer.Exit(EXIT_REFUSED)


def _served_or_exit(path: Path, action: str) -> None:
    """Before a password is asked: if no process runs ``path``'s batch, say why and exit."""
    from twin.access.entries import batch_is_running

    if not batch_is_running(path):
        _unserved_exit(path, action)


def _unserved_exit(path: Path, action: str) -> NoReturn:
    """No process answers for ``path``: the journal says why (ended, died, not begun), one
    sentence, a refusal (exit 4)."""
    from twin.cli.recorded import unserved

    try:
        why = unserved(path)
    except JournalError as exc:
        raise _fail(f"{exc}; give the journal file of a batch", EXIT_INVALID) from None
    err.print(f"{action}: refused — {why}", highlight=False, markup=False)
    raise typer.Exit(EXIT_REFUSED) from None


def _send(path: Path, action: str, **request: Any) -> dict[str, Any]:
    """Hand one request to the process running ``path``'s batch and return its reply (a
    process that ended since :func:`_served_or_exit` is explained the same way)."""
    from twin.engine.inbox import NoRunningBatch, send_command

    try:
        reply: dict[str, Any] = asyncio.run(send_command(path, action, **request))
    except NoRunningBatch:
        _unserved_exit(path, action)
    return reply
