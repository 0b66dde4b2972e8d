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

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one problem, one line: editors parse them

EXIT_OK, EXIT_FAIL, EXIT_INVALID, EXIT_ENDED, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4, 5
DEFAULT_BENCH = Path("benches/sim.yaml")
_REPO_BENCH = Path(__file__).resolve().parents[1] / "benches" / "sim.yaml"

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


def _load(recipe: Path, bench: Path | None) -> tuple[LoadedRecipe, LoadedBench]:
    problems = []
    loaded_recipe = loaded_bench = None
    try:
        loaded_recipe = load_recipe(recipe)
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
) -> None:
    """Check a recipe (and its setpoints against the bench's equipment limits) without running."""
    try:
        loaded, _ = _load(recipe, bench)
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live display")] = False,
    debug: DebugOpt = False,
) -> None:
    """Validate, then execute a batch, with live progress and a batch summary."""
    from twin.display import BatchDisplay
    from twin.runner import run_batch, summarize

    try:
        loaded_recipe, loaded_bench = _load(recipe, bench)
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    if broker:
        err.print("note: telemetry (--broker) is not available yet; running without it")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    batch_id = batch_id or f"{loaded_recipe.model.recipe.id}-{stamp}"
    journal_path = journal or Path("runs") / f"{batch_id}.sqlite"
    subscribers: list[Any] = []
    display = None if quiet else BatchDisplay(out, batch_id)
    if display is not None:
        subscribers.append(display)
    try:
        if display is not None:
            with display:
                final = run_batch(
                    loaded_recipe,
                    loaded_bench,
                    journal_path,
                    batch_id=batch_id,
                    operator=operator,
                    seed=seed,
                    subscribers=subscribers,
                )
        else:
            final = run_batch(
                loaded_recipe,
                loaded_bench,
                journal_path,
                batch_id=batch_id,
                operator=operator,
                seed=seed,
                subscribers=subscribers,
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
    if final.label == "Complete":
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_ENDED if final.is_final else EXIT_REFUSED)


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


@app.command()
def verify(journal: Annotated[Path, typer.Argument(help="Journal file")]) -> None:
    """Check the journal's hash chain and event sequence."""
    try:
        result = verify_journal(journal)
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    if result.ok:
        out.print(f"{journal}: intact — {result.events} events, head {result.head[:16]}…")
        return
    err.print(
        f"{journal}: BROKEN at event {result.first_bad_seq}: {result.reason} "
        f"({result.events} events verified before it)",
        highlight=False,
    )
    raise typer.Exit(EXIT_FAIL)


@app.command()
def command(
    batch: Annotated[str, typer.Argument(help="Batch id (runs/<id>.sqlite) or journal file")],
    action: Annotated[str, typer.Argument(help="pause, resume, hold, restart, stop or abort")],
    operator: Annotated[str, typer.Option(help="Who gives the command")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the batch record)")],
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
        reply = asyncio.run(send_command(path, action, operator=operator, reason=reason))
    except PocTwinError as exc:
        raise _fail(f"{exc}; is the batch still running?", EXIT_FAIL) from None
    if reply["status"] == "accepted":
        out.print(f"{action}: accepted — batch is now {reply['state']}")
        return
    err.print(f"{action}: {reply['status']} — {reply['message']}", highlight=False)
    raise typer.Exit(EXIT_REFUSED if reply["status"] == "refused" else EXIT_INVALID)


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
        if result.ok:
            out.print(f"[green]✔[/] {result.name}: {result.identity} — {result.reading}")
        else:
            failed += 1
            err.print(f"[red]✘[/] {result.name}: {result.error}")
    if failed:
        raise typer.Exit(EXIT_NO_ANSWER)


@twin_app.command("serve")
def twin_serve(bench: BenchOpt = None) -> None:
    """Serve the simulated devices of a bench (real time) until interrupted."""
    from twin.clock import Clock
    from twin.serve.bench import TwinBench

    try:
        loaded = load_bench(_bench_path(bench))
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    if loaded.model.twin is None:
        raise _fail(f"{loaded.path}: this bench has no twin section to serve", EXIT_INVALID)

    async def serve() -> None:
        async with TwinBench(loaded, Clock()) as twin:
            for name, endpoint in twin.endpoints.items():
                where = (
                    f"tcp://{endpoint['host']}:{endpoint['port']}"
                    if "host" in endpoint
                    else str(endpoint["port"])
                )
                driver = loaded.model.equipment[name].driver
                out.print(f"{name:15} {driver:24} {where}")
            out.print("serving; Ctrl-C to stop")
            sys.stdout.flush()
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def main() -> None:
    app()
