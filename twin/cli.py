"""The ``poc-twin`` command line (contract: ../shared/design/CLI.md).

Exit codes: 0 success/Complete; 1 failure (journal broken, device error); 2 invalid
input, nothing started; 3 batch ended Stopped/Aborted; 4 command refused or batch
left Held; 5 some devices did not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from twin.bench import LoadedBench, load_bench
from twin.errors import InvalidInput, PocTwinError
from twin.journal import verify as verify_journal
from twin.recipe import LoadedRecipe, load_recipe

app = typer.Typer(
    name="poc-twin",
    help="Run, verify and supervise point-of-care cell-therapy batches on a real or twin bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Commission and inspect benches.", no_args_is_help=True)
twin_app = typer.Typer(help="The digital twin's devices.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(twin_app, name="twin")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # one problem, one line: editors parse them

EXIT_OK, EXIT_FAIL, EXIT_INVALID, EXIT_ENDED, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4, 5
DEFAULT_BENCH = Path("benches/sim.yaml")
_REPO_BENCH = Path(__file__).resolve().parents[1] / "benches" / "sim.yaml"

ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", help="Recipe parameter for this batch, NAME=VALUE (repeatable)"),
]
BenchOpt = Annotated[
    Path | None, typer.Option("--bench", help="Bench file (default: benches/sim.yaml)")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks")]


def _fail(message: str, code: int, debug: bool = False) -> typer.Exit:
    if debug:
        raise
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _bench_path(bench: Path | None) -> Path:
    if bench is not None:
        return bench
    return DEFAULT_BENCH if DEFAULT_BENCH.exists() else _REPO_BENCH


def _params(values: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"'{item}': write --param NAME=VALUE (e.g. vector=6mL)")
        params[name.strip()] = value.strip()
    return params


def _load(
    recipe: Path, bench: Path | None, params: dict[str, str] | None = None
) -> tuple[LoadedRecipe, LoadedBench]:
    problems = []
    loaded_recipe = loaded_bench = None
    try:
        loaded_recipe = load_recipe(recipe, params)
    except InvalidInput as exc:
        problems += exc.problems
    try:
        loaded_bench = load_bench(_bench_path(bench))
    except InvalidInput as exc:
        problems += exc.problems
    if loaded_recipe is not None and loaded_bench is not None:
        from twin.recipe.limits import check_against_bench

        problems += check_against_bench(loaded_recipe, loaded_bench)
    if problems:
        raise InvalidInput(problems)
    assert loaded_recipe is not None and loaded_bench is not None
    return loaded_recipe, loaded_bench


def _print_problems(exc: InvalidInput) -> None:
    for problem in exc.problems:
        err.print(str(problem), highlight=False, markup=False)


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
    )


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file")],
    bench: BenchOpt = None,
    journal: Annotated[
        Path | None, typer.Option(help="Journal file (default runs/<batch-id>.sqlite)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the twin's noise (sim bench)")] = None,
    batch_id: Annotated[str | None, typer.Option("--batch-id", help="Batch identifier")] = None,
    operator: Annotated[str, typer.Option(help="Operator starting the batch")] = "operator",
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live display")] = False,
    debug: DebugOpt = False,
) -> None:
    """Validate, then execute a batch, with live progress and a batch summary."""
    from twin.display import BatchDisplay
    from twin.runner import run_batch, summarize

    try:
        loaded_recipe, loaded_bench = _load(recipe, bench, _params(param))
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    batch_id = batch_id or f"{loaded_recipe.model.recipe.id}-{stamp}"
    journal_path = journal or Path("runs") / f"{batch_id}.sqlite"
    telemetry = _start_telemetry(broker, journal_path) if broker else None
    subscribers: list[Any] = []
    display = None if quiet else BatchDisplay(out, batch_id)
    if display is not None:
        subscribers.append(display)
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
            )
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
    except KeyboardInterrupt:
        raise _fail(
            f"interrupted; the journal {journal_path} holds every event up to here", EXIT_FAIL
        ) from None
    summary = summarize(journal_path)
    out.print()
    _print_summary(summary, journal_path)
    if telemetry is not None:
        _finish_telemetry(telemetry)
    if final.label == "Complete":
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_ENDED if final.is_final else EXIT_REFUSED)


def _start_telemetry(broker: str, journal_path: Path) -> Any:
    """Telemetry for this batch: refuse to start at a suspended site, else forward the journal."""
    from twin.telemetry.launch import SiteTelemetry
    from twin.telemetry.topics import TelemetryError

    try:
        telemetry = SiteTelemetry(broker, journal_path)
    except TelemetryError as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
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
        )
    telemetry.start()
    return telemetry


def _finish_telemetry(telemetry: Any) -> None:
    if telemetry.finish():
        out.print("telemetry: every event delivered to the broker")
    else:
        err.print(
            "note: telemetry still pending (broker unreachable?); a background forwarder keeps "
            f"trying; or later: python -m twin.telemetry forward {telemetry.journal_path} --once",
            highlight=False,
        )


def _print_summary(summary: Any, journal_path: Path) -> None:
    from rich.table import Table

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
    for reason in summary.hold_reasons:
        table.add_row("held", reason)
    table.add_row("events", str(summary.events))
    out.print(table)
    out.print(f"journal: {journal_path}", soft_wrap=True, highlight=False)


PublicKeyOpt = Annotated[
    Path | None,
    typer.Option("--public-key", help="Site public key (PEM): check the signed checkpoints"),
]
AnchorOpt = Annotated[
    Path | None,
    typer.Option("--anchor", help="Heads held elsewhere (JSON lines seq, head): expose rewrites"),
]


def _signature_inputs(public_key: Path | None, anchor: Path | None) -> tuple[Any, list[Any]]:
    from twin.signing import load_public_key, read_anchors

    key = load_public_key(public_key) if public_key is not None else None
    return key, (read_anchors(anchor) if anchor is not None else [])


@app.command()
def verify(
    journal: Annotated[Path, typer.Argument(help="Journal file")],
    public_key: PublicKeyOpt = None,
    anchor: AnchorOpt = None,
) -> None:
    """Check the hash chain and event sequence, and the site's signed checkpoints."""
    from twin.signing import check_journal_signatures

    try:
        key, anchors = _signature_inputs(public_key, anchor)
        result = verify_journal(journal)
        sig = check_journal_signatures(journal, key, anchors) if result.ok else None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    if not result.ok:
        err.print(
            f"{journal}: BROKEN at event {result.first_bad_seq}: {result.reason} "
            f"({result.events} events verified before it)",
            highlight=False,
        )
        raise typer.Exit(EXIT_FAIL)
    assert sig is not None
    if not sig.ok:
        err.print(f"{journal}: SIGNATURE CHECK FAILED at event {sig.first_bad_seq}: {sig.reason}")
        raise typer.Exit(EXIT_FAIL)
    out.print(f"{journal}: intact — {result.events} events, head {result.head[:16]}…")
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


@app.command()
def command(
    batch: Annotated[str, typer.Argument(help="Batch id (runs/<id>.sqlite) or journal file")],
    action: Annotated[str, typer.Argument(help="pause, resume, hold, restart, stop or abort")],
    operator: Annotated[str, typer.Option(help="Who gives the command")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the batch record)")],
    level: Annotated[
        str, typer.Option(help="procedure, unit, operation or phase (hold/restart only)")
    ] = "procedure",
) -> None:
    """Give an operator command to a running batch from another terminal."""
    from twin.engine.inbox import send_command
    from twin.engine.states import COMMANDS

    if action not in {c.value for c in COMMANDS}:
        valid = ", ".join(c.value for c in COMMANDS)
        raise _fail(f"unknown command '{action}'; valid: {valid}", EXIT_INVALID)
    path = Path(batch) if Path(batch).exists() else Path("runs") / f"{batch}.sqlite"
    if not path.exists():
        raise _fail(f"no journal for batch '{batch}' (looked for {path})", EXIT_INVALID)
    try:
        reply = asyncio.run(
            send_command(path, action, operator=operator, reason=reason, level=level)
        )
    except PocTwinError as exc:
        raise _fail(f"{exc}; is the batch still running?", EXIT_FAIL) from None
    if reply["status"] == "accepted":
        out.print(f"{action}: accepted — batch is now {reply['state']}")
        return
    err.print(f"{action}: {reply['status']} — {reply['message']}", highlight=False)
    raise typer.Exit(EXIT_REFUSED if reply["status"] == "refused" else EXIT_INVALID)


@app.command("confirm-identity")
def confirm_identity(
    batch: Annotated[str, typer.Argument(help="Batch id (runs/<id>.sqlite) or journal file")],
    patient_id: Annotated[str, typer.Option("--patient-id", help="Scanned from the wristband")],
    bag_id: Annotated[str, typer.Option("--bag-id", help="Scanned from the bag label")],
    operator: Annotated[str, typer.Option(help="Who scanned (electronic signature)")],
    reason: Annotated[str, typer.Option(help="Meaning, e.g. 'verified before gene transfer'")],
) -> None:
    """Scan patient and bag ids for the chain of identity; the batch compares them to its own."""
    from twin.engine.inbox import send_command

    path = Path(batch) if Path(batch).exists() else Path("runs") / f"{batch}.sqlite"
    try:
        reply = asyncio.run(
            send_command(
                path,
                "confirm-identity",
                operator=operator,
                reason=reason,
                extra={"patient_id": patient_id, "bag_id": bag_id},
            )
        )
    except PocTwinError as exc:
        raise _fail(f"{exc}; is the batch still running?", EXIT_FAIL) from None
    if reply["status"] != "accepted":
        err.print(f"confirm-identity: {reply['status']} — {reply['message']}", highlight=False)
        raise typer.Exit(EXIT_REFUSED)
    out.print("scan handed to the batch; it records whether it matches")


@bench_app.command("check")
def bench_check(bench: BenchOpt = None, debug: DebugOpt = False) -> None:
    """Connect to every device of a bench; print identity, status and one reading each."""
    from twin.bench import check_bench
    from twin.clock import run_batch_loop

    try:
        loaded = load_bench(_bench_path(bench))
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    results = run_batch_loop(lambda: check_bench(loaded), virtual=loaded.virtual_clock)
    failed = 0
    for result in results:
        link = ", ".join(f"{k} {v}" for k, v in result.counters.items())
        if result.ok:
            out.print(f"[green]✔[/] {result.name}: {result.identity}")
            out.print(f"    status: {result.status}")
            if result.reading:
                out.print(f"    reading: {result.reading}")
            out.print(f"    link: {link}")
        else:
            failed += 1
            err.print(f"[red]✘[/] {result.name}: {result.error}")
            if link:
                err.print(f"    link: {link}")
    if failed:
        raise typer.Exit(EXIT_NO_ANSWER)


@twin_app.command("serve")
def twin_serve(
    bench: BenchOpt = None,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="Fault scenario YAML to run on the clock")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Plant seed (default: the bench's)")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address the Modbus TCP devices bind")] = (
        "127.0.0.1"
    ),
    modbus_port: Annotated[
        int,
        typer.Option("--modbus-port", min=0, max=65535, help="First Modbus TCP port (0: any free)"),
    ] = 0,
) -> None:
    """Serve the simulated devices of a bench in real time until interrupted.

    See docs/twin/serve.md for a worked example with pymodbus and a serial terminal.
    """
    from twin.clock import Clock
    from twin.serve.live import LiveTwin, endpoint_text
    from twin.serve.scenario import load_scenario

    try:
        loaded = load_bench(_bench_path(bench))
        faults = load_scenario(scenario) if scenario is not None else None
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    if loaded.model.twin is None:
        raise _fail(f"{loaded.path}: this bench has no twin section to serve", EXIT_INVALID)

    def on_event(event: Any) -> None:
        out.print(f"t={event.t:10.1f} s  {event.device:15} {event.fault:15} {event.edge}")
        sys.stdout.flush()

    async def serve() -> None:
        twin = LiveTwin(
            loaded,
            Clock(),
            seed=seed,
            host=host,
            modbus_port=modbus_port,
            scenario=faults,
            on_event=on_event,
        )
        async with twin:
            for name, endpoint in twin.endpoints.items():
                driver = loaded.model.equipment[name].driver
                out.print(f"{name:15} {driver:24} {endpoint_text(endpoint)}")
            if faults is not None:
                out.print(f"scenario {faults.model.scenario}: {len(faults.model.faults)} fault(s)")
            out.print("serving; Ctrl-C to stop")
            sys.stdout.flush()
            await asyncio.Event().wait()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    except OSError as exc:
        raise _fail(f"cannot serve: {exc}", EXIT_FAIL) from None


control_app = typer.Typer(
    help="The control site: broker for a fleet, ingest + dashboard, fleet simulation.",
    no_args_is_help=True,
)
app.add_typer(control_app, name="control-site")


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    if ":" not in value:
        return value, default_port
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port or default_port)


@control_app.command("serve")
def control_serve(
    broker: Annotated[
        str, typer.Option(envvar="POC_TWIN_BROKER", help="mqtt[s]://USER:PASS@HOST:PORT")
    ],
    db: Annotated[
        str, typer.Option(help="postgresql://... or a SQLite file for one machine")
    ] = "control-site.sqlite",
    http: Annotated[str, typer.Option(help="Dashboard address HOST:PORT")] = "127.0.0.1:8080",
    users: Annotated[
        Path | None, typer.Option(help="Users allowed to make requests (control-site add-user)")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Ingest every site's telemetry into the store and serve the dashboard."""
    from twin.control_site.serve import serve

    host, port = _host_port(http, 8080)
    out.print(f"control site: dashboard on http://{host}:{port}/, store {db.split('@')[-1]}")
    try:
        asyncio.run(serve(broker, db, host, port, users))
    except KeyboardInterrupt:
        return
    except (PocTwinError, OSError) as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
    except Exception as exc:  # a driver's own error (psycopg, aiomqtt): one sentence
        raise _fail(f"{type(exc).__name__}: {exc}", EXIT_FAIL, debug) from None


@control_app.command("add-user")
def control_add_user(
    users: Annotated[Path, typer.Argument(help="Users file (created if missing)")],
    name: Annotated[str, typer.Argument(help="User name (recorded with every request)")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
) -> None:
    """Allow a control-site user to request holds and suspend or reinstate sites."""
    from twin.control_site.web import Users

    with users.open("a") as f:
        f.write(Users.line(name, password) + "\n")
    users.chmod(0o600)
    out.print(f"{name} added to {users}")


@control_app.command("broker")
def control_broker(
    directory: Annotated[Path, typer.Argument(help="Where config, passwords, ACL and data live")],
    site: Annotated[list[str], typer.Option("--site", help="A site allowed to publish")],
    control_user: Annotated[list[str], typer.Option(help="A control-site MQTT user")] = [  # noqa: B006
        "control"
    ],
    bind: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Plain MQTT port")] = 1883,
    tls_port: Annotated[int | None, typer.Option(help="MQTT over TLS port")] = None,
    hostname: Annotated[str, typer.Option(help="Broker host name in its cert")] = "localhost",
) -> None:
    """Configure and run Mosquitto for a fleet: per-site users and ACLs, optional TLS."""
    import json as _json

    from twin.telemetry.broker import BrokerConfig, Mosquitto, make_pki

    creds_path = directory / "credentials.json"
    known = _json.loads(creds_path.read_text()) if creds_path.exists() else {}
    config = BrokerConfig(directory, port=port, bind=bind, tls_port=tls_port)
    for name in site:
        known[name] = config.add_site(name, known.get(name))
    for name in control_user:
        known[name] = config.add_control(name, known.get(name))
    if tls_port is not None:
        pki = directory / "pki"
        config.tls = (
            {k: pki / f"{k}.pem" for k in ("ca", "cert", "key")}
            if (pki / "ca.pem").exists()
            else make_pki(pki, hostname)
        )
    directory.mkdir(parents=True, exist_ok=True)
    creds_path.write_text(_json.dumps(known, indent=1))
    creds_path.chmod(0o600)
    host = bind if bind != "0.0.0.0" else hostname
    for name in [*site, *control_user]:
        out.print(f"{name:16} {config.url(name, tls=tls_port is not None, host=host)}")
    broker = Mosquitto(config)
    try:
        broker.start()
        out.print(f"mosquitto running (config {directory / 'mosquitto.conf'}); Ctrl-C to stop")
        assert broker.proc is not None
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    finally:
        broker.stop()


@control_app.command("simulate-fleet")
def control_simulate_fleet(
    broker_dir: Annotated[Path, typer.Argument(help="Directory of 'control-site broker'")],
    journal: Annotated[Path, typer.Option(help="A recorded batch journal every site replays")],
    sites: Annotated[int, typer.Option(help="How many simulated sites")] = 10,
    rate: Annotated[float, typer.Option(help="Events per second per site (0: flat out)")] = 50.0,
    host: Annotated[str, typer.Option(help="Broker host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Broker port")] = 1883,
    out_dir: Annotated[Path, typer.Option(help="Where journals go")] = Path("runs/fleet"),
) -> None:
    """Simulate N sites, each writing a journal and publishing it with its own credentials."""
    import json as _json
    from datetime import UTC as _UTC

    from twin.telemetry.fleet import FleetSite, load_events, run_fleet

    known = _json.loads((broker_dir / "credentials.json").read_text())
    names = [n for n in known if n.startswith("sim-")][:sites]
    if len(names) < sites:
        raise _fail(
            f"{broker_dir} has {len(names)} sim-* sites; start it with "
            f"--site sim-001 ... --site sim-{sites:03d}",
            EXIT_INVALID,
        )
    run_dir = out_dir / datetime.now(_UTC).strftime("%Y%m%d-%H%M%S")
    fleet = [
        FleetSite(n, f"mqtt://{n}:{known[n]}@{host}:{port}/?unit=sim", run_dir / f"{n}.sqlite")
        for n in names
    ]
    events = load_events(journal)
    seconds = asyncio.run(run_fleet(fleet, events, rate=rate))
    total = len(events) * len(fleet)
    out.print(f"{len(fleet)} sites delivered {total} events in {seconds:.1f} s")


site_app = typer.Typer(help="A site's signing key for its journals.", no_args_is_help=True)
app.add_typer(site_app, name="site")


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

    try:
        private, public = generate_site_key(site, directory or default_key_dir(), overwrite=force)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
    out.print(f"private key: {private} (mode 0600; keep it off shared storage)", highlight=False)
    out.print(f"public key:  {public} (give it to QA and the control site)", highlight=False)
    out.print(f"sign journals: export {ENV_KEY}={private}", highlight=False)


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


@app.command()
def report(
    journal: Annotated[Path, typer.Argument(help="Journal file")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file (default: JOURNAL.html)")
    ] = None,
    public_key: PublicKeyOpt = None,
    anchor: AnchorOpt = None,
) -> None:
    """Write the self-contained HTML batch record; exit 1 if the journal does not verify."""
    from twin.report import write_report

    target = output or journal.with_suffix(".html")
    try:
        key, anchors = _signature_inputs(public_key, anchor)
        record = write_report(journal, target, key, anchors)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    worst = record.exceptions[0][0] if record.exceptions else "none"
    out.print(
        f"batch record: {target} — {len(record.exceptions)} exceptions (worst: {worst})",
        highlight=False,
    )
    if not record.verified:
        err.print(f"{journal}: does not verify; the report is written and marked as such")
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
    target = output or journal.with_suffix(suffix)
    try:
        ok = export_journal(journal, fmt, target)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    out.print(f"exported {journal} as {fmt}: {target}", highlight=False)
    if not ok:
        err.print(f"{journal}: does not verify; the export says so in its verification field")
        raise typer.Exit(EXIT_FAIL)


def main() -> None:
    app()
