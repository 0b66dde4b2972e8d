"""Commands on batch records: verify, report, export, and the site's signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from twin.access.roles import Act
from twin.cli.common import (
    EXIT_FAIL,
    EXIT_INVALID,
    EXIT_REFUSED,
    _fail,
    _text_output,
    app,
    err,
    out,
    said,
)
from twin.cli.esign import PasswordFileOpt, UsersOpt, read_password
from twin.cli.signed import _sign_entry, user_app
from twin.errors import PocTwinError
from twin.journal import verify as verify_journal
from twin.names import UnsafeName, check_safe_name

PublicKeyOpt = Annotated[
    Path | None,
    typer.Option("--public-key", help="Site public key (PEM): check the signed checkpoints"),
]
AnchorOpt = Annotated[
    str | None,
    typer.Option(
        "--anchor",
        help="Heads held elsewhere: a file of JSON lines (seq, head), or the control site's "
        "URL (http://USER@HOST:PORT) to fetch this batch's anchored heads from",
    ),
]
ControlPasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--control-password-file",
        envvar="POC_TWIN_CONTROL_PASSWORD_FILE",
        help="File (mode 0600) with the control-site password of the --anchor URL's user "
        "(else asked, or one line of standard input)",
    ),
]


def _signature_inputs(
    journal: Path,
    public_key: Path | None,
    anchor: str | None,
    control_password_file: Path | None = None,
) -> tuple[Any, list[Any]]:
    from twin.anchor_fetch import anchors_url, is_url, load_anchors
    from twin.signing import load_public_key

    key = load_public_key(public_key) if public_key is not None else None
    if anchor is None:
        return key, []
    password = None
    try:
        if is_url(anchor):
            _, user = anchors_url(anchor, journal)
            if user:  # the dashboard's login (HTTP Basic): never on the command line
                password = read_password(user, control_password_file, "control-site password")
        return key, load_anchors(anchor, journal, password)
    except UnicodeDecodeError as exc:  # a binary file given as the anchors
        why = f"not UTF-8 text: {exc.reason}"
        raise _fail(f"{anchor}: cannot read anchors ({why})", EXIT_FAIL) from None


@app.command()
def verify(
    journal: Annotated[Path, typer.Argument(help="Journal file")],
    public_key: PublicKeyOpt = None,
    anchor: AnchorOpt = None,
    control_password_file: ControlPasswordFileOpt = None,
) -> None:
    """Check the hash chain and event sequence, and the site's signed checkpoints."""
    from twin.access.entries import batch_writes
    from twin.signing import check_journal_signatures

    try:
        key, anchors = _signature_inputs(journal, public_key, anchor, control_password_file)
        result = verify_journal(journal)
        sig = check_journal_signatures(journal, key, anchors) if result.ok else None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    if not result.ok:
        err.print(
            f"{journal}: BROKEN at event {result.first_bad_seq}: {result.reason} "
            f"({result.events} events verified before it)",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_FAIL)
    assert sig is not None
    if not sig.ok:
        err.print(
            f"{journal}: SIGNATURE CHECK FAILED at event {sig.first_bad_seq}: {sig.reason}",
            markup=False,
        )
        raise typer.Exit(EXIT_FAIL)
    running = sig.ended_at is None and batch_writes(journal)
    if sig.ended_at is None and not running:
        err.print(
            f"{journal}: INCOMPLETE after event {result.events}: the batch did not end and no "
            "batch process writes this journal: interrupted (poc-twin resume) or cut short "
            "(--anchor with the control site's heads tells which)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAIL)
    people = _check_esignatures(journal)
    out.print(f"{journal}: intact — {result.events} events, head {result.head[:16]}…", markup=False)
    _print_esignatures(people)
    if running:
        out.print(
            "batch running: not ended yet, its end is not in the journal (verify again once "
            "it has ended to check that it is complete)",
            highlight=False,
        )
    guarded = "edited, deleted, inserted or reordered events"
    if sig.verified:
        ids = ", ".join(sorted(sig.key_ids))
        out.print(
            f"signatures: {sig.verified} checkpoints verified (key {ids}), signed through event "
            f"{sig.signed_through}; {sig.unsigned_tail} events after it are chained but unsigned",
            soft_wrap=True,
        )
        guarded += f"; a rewrite of events 1-{sig.signed_through} by anyone without the site key"
    elif sig.checkpoints:
        out.print(f"signatures: {sig.checkpoints} checkpoints present, not checked (--public-key)")
    else:
        out.print("signatures: none (journal written without a site key)")
    if anchors:
        out.print(f"anchors: {sig.anchors_matched} anchored heads match the journal")
        guarded += "; any rewrite or truncation of the anchored events, even with the site key"
    out.print(f"detects: {guarded}.", highlight=False, soft_wrap=True)
    if not sig.verified:
        missed = "a rewrite of the whole chain with recomputed hashes (needs a site key)"
    elif not anchors:
        missed = "a rewrite re-signed with the site key, or a cut tail, unless --anchor is given"
    else:
        missed = "changes to events after the last anchored head"
    out.print(f"does not detect: {missed}; see docs/journal.md", highlight=False, soft_wrap=True)


site_app = typer.Typer(help="A site's signing key for its journals.", no_args_is_help=True)
app.add_typer(site_app, name="site")
site_app.add_typer(user_app, name="user")


@site_app.command("keygen")
def site_keygen(
    site: Annotated[str, typer.Argument(help="Site name (one word), e.g. lyon-huc")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to write the keys (default ~/.config/...)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key")] = False,
) -> None:
    """Create a site's Ed25519 key pair; the private key signs journal heads, kept apart."""
    from twin.signing import ENV_KEY, default_key_dir, generate_site_key

    try:  # it names the key files, the checkpoints' source and the site's MQTT topics
        check_safe_name(site, "site name")
        private, public = generate_site_key(site, directory or default_key_dir(), overwrite=force)
    except (PocTwinError, UnsafeName) as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
    except OSError as exc:  # --dir is a file, or cannot be written
        raise _fail(
            f"cannot write the keys in {exc.filename}: {exc.strerror}", EXIT_INVALID
        ) from None
    out.print(
        f"private key: {private} (mode 0600; keep it off shared storage)",
        highlight=False,
        markup=False,
    )
    out.print(
        f"public key:  {public} (give it to QA and the control site)", highlight=False, markup=False
    )
    out.print(f"sign journals: export {ENV_KEY}={private}", highlight=False, markup=False)


@site_app.command("anchor")
def site_anchor(journal: Annotated[Path, typer.Argument(help="Journal file")]) -> None:
    """Print the journal's signed heads as JSON lines, to be held elsewhere (anchors)."""
    import json

    from twin.signing import anchors_of

    try:
        for record in anchors_of(journal):
            print(json.dumps(record, sort_keys=True))
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None


def _beside(journal: Path, suffix: str) -> Path:
    """The default output file: the journal's name with ``suffix`` (none for '.' or '/')."""
    try:
        return journal.with_suffix(suffix)
    except ValueError:  # '.', '..', '/': no file name to take
        raise _fail(f"{journal}: not a journal file", EXIT_FAIL) from None


@app.command()
def report(
    journal: Annotated[Path, typer.Argument(help="Journal file")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="HTML file (default: JOURNAL.html); a FILE.pdf gets the record as PDF only",
        ),
    ] = None,
    public_key: PublicKeyOpt = None,
    anchor: AnchorOpt = None,
    control_password_file: ControlPasswordFileOpt = None,
    pdf: Annotated[
        Path | None,
        typer.Option("--pdf", help="Also print the record to this PDF (headless Chromium)"),
    ] = None,
) -> None:
    """Write the self-contained HTML batch record (and its PDF); exit 1 if the journal does
    not verify."""
    import tempfile

    from twin.report import write_report
    from twin.report.pdf import print_pdf

    only_pdf = output is not None and output.suffix.lower() == ".pdf"  # -o FILE.pdf (CLI.md)
    if only_pdf and pdf is not None and pdf != output:
        raise _fail(
            f"-o {output} and --pdf {pdf}: two PDFs of one record; give one; nothing written",
            EXIT_INVALID,
        )
    printed = (
        _text_output(pdf or output, "--pdf" if pdf else "--output") if pdf or only_pdf else None
    )
    with tempfile.TemporaryDirectory(prefix="poc-twin-report-") as scratch:
        if only_pdf:  # the HTML the PDF is printed from is nobody's file
            target = Path(scratch) / "record.html"
        elif output:
            target = _text_output(output, "--output")
        else:
            target = _text_output(_beside(journal, ".html"), "default --output", given=False)
        try:
            key, anchors = _signature_inputs(journal, public_key, anchor, control_password_file)
            record = write_report(journal, target, key, anchors)
            if printed is not None:
                print_pdf(target, printed)
        except PocTwinError as exc:
            raise _fail(str(exc), EXIT_FAIL) from None
        except OSError as exc:
            raise _fail(f"cannot write {target}: {exc.strerror}", EXIT_FAIL) from None
    worst = record.exceptions[0][0] if record.exceptions else "none"
    written = f"{printed} (PDF)" if only_pdf else str(target)
    out.print(
        f"batch record: {written} — {len(record.exceptions)} exceptions (worst: {worst})"
        + (f"; PDF {printed}" if printed is not None and not only_pdf else ""),
        highlight=False,
        markup=False,
    )
    if not record.verified:
        err.print(
            f"{journal}: does not verify; the report is written and marked as such", markup=False
        )
        raise typer.Exit(EXIT_FAIL)


@app.command()
def export(
    journal: Annotated[Path, typer.Argument(help="Journal file")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, csv or trends-csv")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: JOURNAL.json/.csv)")
    ] = None,
) -> None:
    """Export a batch for other tools; exit 1 if the journal does not verify (still written)."""
    from twin.export import FORMATS, export_journal

    if fmt not in FORMATS:
        raise _fail(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}", EXIT_INVALID)
    suffix = ".json" if fmt == "json" else (".trends.csv" if fmt == "trends-csv" else ".csv")
    target = (
        _text_output(output, "--output")
        if output
        else _text_output(_beside(journal, suffix), "default --output", given=False)
    )
    try:
        ok = export_journal(journal, fmt, target)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    except OSError as exc:
        raise _fail(f"cannot write {target}: {exc.strerror}", EXIT_FAIL) from None
    out.print(f"exported {journal} as {fmt}: {target}", highlight=False, markup=False)
    if not ok:
        err.print(
            f"{journal}: does not verify; the export says so in its verification field",
            markup=False,
        )
        raise typer.Exit(EXIT_FAIL)


def _check_esignatures(journal: Path) -> Any:
    """People's e-signatures bound to their acts; exit 1 naming each problem."""
    from twin.access.esign import check_signatures
    from twin.journal import read_events

    try:
        people = check_signatures(read_events(journal))
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    if not people.ok:
        for problem in people.problems:
            err.print(f"{journal}: E-SIGNATURE: {problem}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FAIL)
    return people


def _print_esignatures(people: Any) -> None:
    rule = "every person's act signed" if people.required else "signatures not required"
    out.print(
        f"e-signatures: {people.signatures} bound to the acts they sign ({rule})",
        highlight=False,
    )


@app.command()
def qc(
    journal: Annotated[Path, typer.Argument(help="Journal file of the ended batch")],
    result: Annotated[
        list[str],
        typer.Option(
            "--result", help="TEST=VALUE: viability, car, cd3 (%), endotoxin (EU/mL), vcn"
        ),
    ],
    operator: Annotated[str, typer.Option(help="Your site user id (QA signs the results)")],
    reason: Annotated[str, typer.Option(help="Meaning, e.g. 'QC lab release testing'")],
    lab_ref: Annotated[str, typer.Option("--lab-ref", help="The QC lab's report number")] = "",
    site_key: Annotated[
        Path | None,
        typer.Option(envvar="POC_TWIN_SITE_KEY", help="Site Ed25519 key: signs the journal"),
    ] = None,
    password_file: PasswordFileOpt = None,
    users: UsersOpt = None,
) -> None:
    """Enter QC lab results into the batch's journal, signed by QA; the batch record judges
    release by them."""
    from twin.errors import InvalidInput
    from twin.report.qc import parse_results, record_qc_results
    from twin.signing import load_site_key

    try:
        entries = parse_results(result)
    except InvalidInput as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False, markup=False)
        raise typer.Exit(EXIT_INVALID) from None
    said(reason)
    if lab_ref:
        from twin.words import UnfitText, check_scanned_id

        try:
            check_scanned_id(lab_ref, "--lab-ref")
        except UnfitText as exc:
            raise _fail(f"{exc}; nothing was signed or written", EXIT_INVALID) from None
    from twin.access.entries import EntryRefused, ended_batch

    try:  # before the password: an entry into a batch that never ended is refused anyway
        ended_batch(journal, "enter QC results")
    except EntryRefused as exc:
        raise _fail(str(exc), EXIT_REFUSED) from None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
    person = _sign_entry(journal, operator, password_file, users, Act.QC_RESULT)
    try:
        signer = load_site_key(site_key) if site_key is not None else None
        written = record_qc_results(
            journal, entries, person=person, reason=reason, lab_ref=lab_ref, signer=signer
        )
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    for data in written:
        out.print(
            f"{data['name']}: {data['value']:g} {data['unit']} ({data['criterion']}) "
            f"— {data['verdict']}",
            highlight=False,
        )
    out.print(
        f"recorded in {journal}; `poc-twin report {journal}` judges release with them", markup=False
    )
