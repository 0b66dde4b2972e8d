"""``poc-twin forecast``: harvest day and P(release) of a running batch, from the twin batches
of its recipe whose samples look like its own (twin/ensemble/forecast.py)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from twin.cli.common import (
    EXIT_FAIL,
    EXIT_INVALID,
    DebugOpt,
    _fail,
    _output_file,
    _text_output,
    app,
    err,
    out,
)
from twin.cli.whatif import _default_bench
from twin.errors import InvalidInput, PocTwinError


@app.command("forecast")
def forecast_cmd(
    journal: Annotated[Path, typer.Argument(help="The batch's journal (running or ended)")],
    spec: Annotated[Path, typer.Option("--spec", help="Release specification (YAML)")],
    library: Annotated[
        Path | None,
        typer.Option(
            "--library",
            help="Twin batches of the same recipe and parameters: a `whatif` results file, "
            "built or extended here as needed (default: forecast/JOURNAL.library.sqlite "
            "beside the journal)",
        ),
    ] = None,
    members: Annotated[
        int, typer.Option("--members", min=20, help="Twin batches the library holds")
    ] = 200,
    at_day: Annotated[
        float | None,
        typer.Option("--at-day", min=0.0, help="Forecast as it stood on this batch day"),
    ] = None,
    min_ess: Annotated[
        float,
        typer.Option("--min-ess", min=5.0, help="Effective twin batches an interval rests on"),
    ] = 30.0,
    bench: Annotated[
        Path | None,
        typer.Option("--bench", help="Twin bench (default: benches/sim-in-process.yaml)"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Base seed of the library")] = 0,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            envvar="POC_TWIN_DASK_SCHEDULER",
            help="A Dask scheduler, tcp://HOST:PORT, to build the library on",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Local cluster's worker processes (default: cores)"),
    ] = None,
    summary_json: Annotated[
        Path | None, typer.Option("--json", help="Also write the forecast as JSON")
    ] = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save/--no-save",
            help="Keep the forecast beside the journal for the station and the control site "
            "(not with --at-day)",
        ),
    ] = True,
    debug: DebugOpt = False,
) -> None:
    """Forecast a batch's harvest day and P(release) from its own samples so far.

    Exit codes: 0 forecast made; 1 no forecast (no twin batch of the library is consistent
    with this batch, or some library batches raised); 2 invalid input."""
    from twin.ensemble.forecast import ForecastError, batch_so_far, forecast
    from twin.ensemble.forecast import save as save_forecast
    from twin.journal import JournalError, read_events

    release = _spec(spec)
    if not journal.is_file():
        raise _fail(f"{journal}: no such journal", EXIT_INVALID)
    try:
        batch = batch_so_far(read_events(journal), at_day)
    except JournalError as exc:  # names the journal itself
        raise _fail(str(exc), EXIT_INVALID, debug) from None
    except ForecastError as exc:
        raise _fail(f"{journal}: {exc}", EXIT_INVALID, debug) from None
    library_path = library or journal.parent / "forecast" / f"{journal.name}.library.sqlite"
    _output_file(library_path, "--library")
    try:
        kept = _library(
            batch, library_path, bench, members, seed, scheduler, workers, debug, release
        )
        result = forecast(batch, kept, release, min_ess=min_ess)
    except ForecastError as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
    record = result.as_dict()
    record["library"] = str(library_path)
    _print(result)
    if summary_json is not None:
        _text_output(summary_json, "--json").write_text(
            json.dumps(record, indent=2), encoding="utf-8"
        )
    if save and at_day is None:
        save_forecast(journal, record)


def _spec(path: Path) -> Any:
    """The release spec, or every problem in it as FILE:LINE:COL and exit 2."""
    from twin.cli.common import _print_problems
    from twin.ensemble.spec import load_spec

    try:
        return load_spec(path)
    except InvalidInput as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None


def _recipe_file(batch: Any, library_path: Path) -> Path:
    """The batch's recipe as a file the library's batches load: its own path while that
    still holds the same text, else the text the journal keeps, beside the library."""
    from twin.recipe.loader import content_hash

    recorded = batch.recipe
    path = Path(str(recorded.get("path", "")))
    try:
        if path.is_file() and content_hash(path.read_text(encoding="utf-8")) == recorded.get(
            "sha256"
        ):
            return path.resolve()
    except OSError:
        pass
    text = recorded.get("text")
    if not text:
        raise PocTwinError("the journal does not keep its recipe's text")
    copy = library_path.with_name(library_path.name + ".recipe.yaml")
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(str(text), encoding="utf-8")
    return copy.resolve()


def _library(
    batch: Any,
    library_path: Path,
    bench: Path | None,
    members: int,
    seed: int,
    scheduler: str | None,
    workers: int | None,
    debug: bool,
    release: Any,
) -> list[dict[str, Any]]:
    """The library's batches, after running those it lacks (the same ensemble as `whatif`
    without --vary: donors and noise vary, the batch's recipe and parameters do not)."""
    from twin.bench import load_bench
    from twin.ensemble.library import ensemble_definition, fill
    from twin.ensemble.member import plan_members
    from twin.ensemble.results import EnsembleMismatch, ResultsFile
    from twin.recipe import load_recipe

    bench_path = bench if bench is not None else _default_bench()
    try:
        recipe_path = _recipe_file(batch, library_path)
        parameters = {k: str(v) for k, v in (batch.recipe.get("parameters") or {}).items()}
        loaded = load_recipe(recipe_path, parameters)
        loaded_bench = load_bench(bench_path)
    except InvalidInput as exc:
        from twin.cli.common import _print_problems

        _print_problems(exc)
        raise typer.Exit(EXIT_INVALID) from None
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_INVALID, debug) from None
    twin = loaded_bench.model.twin
    if twin is None:
        raise _fail(f"{bench_path}: a forecast needs a twin bench", EXIT_INVALID)
    definition = ensemble_definition(
        loaded,
        loaded_bench,
        variations=[],
        seed=seed,
        scan_delay_min=15.0,
        max_days=30.0,
        hold_response_min=60.0,
    )
    plans = plan_members(
        recipe=str(recipe_path),
        bench=str(bench_path.resolve()),
        batches=members,
        base_seed=seed,
        variations=[],
    )
    seeded = batch.seeded_viable_cells
    if seeded and abs(seeded - twin.inoculum.volume_ml * twin.inoculum.viable_cells_per_ml) > (
        1e-9 * seeded
    ):  # the twin batches are seeded as this batch was
        inoculum = {"viable_cells_per_ml": seeded / twin.inoculum.volume_ml}
        definition["inoculum"] = inoculum
        plans = [dataclasses.replace(p, inoculum=inoculum) for p in plans]
    plans = [dataclasses.replace(p, parameters=parameters) for p in plans]
    try:
        store = ResultsFile(library_path, definition)
    except EnsembleMismatch as exc:
        raise _fail(
            f"{exc}; a forecast library is `whatif` of this batch's recipe and parameters "
            "without --vary",
            EXIT_INVALID,
            debug,
        ) from None
    try:
        missing = len(plans) - len(store.done() & {p.index for p in plans})
        if missing:
            where = scheduler or f"a local cluster of {workers or os.cpu_count() or 1} worker(s)"
            err.print(
                f"{library_path}: running {missing} twin batches of "
                f"{loaded.model.recipe.id} for the library on {where}",
                highlight=False,
                markup=False,
            )
        count = [0]

        def keep(result: dict[str, Any]) -> None:
            count[0] += 1
            if count[0] % 20 == 0 or count[0] == missing:
                err.print(f"  [{count[0]}/{missing}]", highlight=False, markup=False)

        try:
            fill(store, plans, keep, scheduler=scheduler, workers=workers)
        except OSError as exc:
            raise _fail(f"Dask scheduler {scheduler}: {exc}", EXIT_FAIL, debug) from None
        kept = list(store.results(limit=members))
    finally:
        store.close()
    errors = [r for r in kept if r["outcome"].get("state") == "error"]
    if errors:
        for r in errors[:3]:
            err.print(f"library batch {r['plan']['index']}: {r['outcome'].get('error')}")
        raise typer.Exit(EXIT_FAIL)
    return kept


def _print(f: Any) -> None:
    from twin.ensemble.forecast import outcome_label

    when = f"day {f.made_at_day:.2f}"
    head = f"[bold]{f.batch_id}[/] at {when} ({f.state}), from {f.samples_used} sample(s)"
    out.print(head)
    if f.ended:
        out.print("  the batch has ended: this is what its samples up to then foretold")
    hd = f.harvest_day
    if hd is not None:
        out.print(
            f"harvest: [bold]day {hd.p50:.1f}[/] (90 %: day {hd.p5:.1f}-{hd.p95:.1f}); "
            f"P(harvest) {100 * f.p_harvest:.0f} %"
        )
    else:
        out.print("harvest: none of the matching twin batches harvested")
    lo, hi = f.p_release_interval
    out.print(
        f"P(release, {f.spec}): [bold]{100 * f.p_release:.0f} %[/] (90 %: {100 * lo:.0f}-"
        f"{100 * hi:.0f} %); before any sample {100 * (f.prior_p_release or 0):.0f} %"
    )
    if f.p_ready is not None:
        out.print(f"P(releasable by day {f.ready_by:g}): {100 * f.p_ready:.0f} %")
    for key, iv in f.outcomes.items():
        if key == "duration":
            continue
        label, unit = outcome_label(key)
        out.print(f"  {label}: {iv.p50:.3g} {unit} (90 %: {iv.p5:.3g}-{iv.p95:.3g})")
    traits = ", ".join(f"{k} {iv.p50:.3g} ({iv.p5:.3g}-{iv.p95:.3g})" for k, iv in f.donor.items())
    if traits:
        out.print(f"  donor traits fitted: {traits}", highlight=False)
    out.print(
        f"  from {f.consistent_batches} of {f.library_batches} twin batches consistent with "
        f"its samples ({f.effective_batches:.0f} effective, tempering {f.tempering:.2f})"
    )


@app.command("forecast-check")
def forecast_check(
    library: Annotated[Path, typer.Argument(help="A forecast library (whatif results file)")],
    spec: Annotated[Path, typer.Option("--spec", help="Release specification (YAML)")],
    at_day: Annotated[float, typer.Option("--at-day", min=0.0, help="Forecast day to check")],
    batches: Annotated[
        int,
        typer.Option("--batches", min=1, help="Library batches still running that day to forecast"),
    ] = 50,
    min_ess: Annotated[
        float,
        typer.Option("--min-ess", min=5.0, help="Effective twin batches an interval rests on"),
    ] = 30.0,
    require: Annotated[
        float | None,
        typer.Option(
            "--require",
            min=0.0,
            max=1.0,
            help="Fail (exit 1) when the harvest day's 90 % interval holds the truth less "
            "often than this",
        ),
    ] = None,
) -> None:
    """How good the forecast is on a given day: forecast library batches from their own
    samples (donor hidden, each left out of the library) and count how often the 90 %
    intervals held what they really did.

    Exit codes: 0 checked; 1 below --require; 2 invalid input."""
    import sqlite3

    from twin.ensemble.forecast import calibrate, outcome_label

    release = _spec(spec)
    if not library.is_file():
        raise _fail(f"{library}: no such library", EXIT_INVALID)
    try:
        db = sqlite3.connect(f"file:{library}?mode=ro", uri=True)
        rows = db.execute("SELECT plan, outcome FROM members ORDER BY idx").fetchall()
        db.close()
    except sqlite3.Error as exc:
        raise _fail(f"{library}: not a forecast library ({exc})", EXIT_INVALID) from None
    kept = [{"plan": json.loads(p), "outcome": json.loads(o)} for p, o in rows]
    result = calibrate(kept, release, at_day, batches, min_ess=min_ess)
    out.print(
        f"forecasts on day {at_day:g} of {result.batches} library batches "
        f"({result.skipped} skipped: harvested by then or unmatched), each from the other "
        f"{len(kept) - 1}:"
    )
    for key, (inside, n) in result.covered.items():
        label, _ = outcome_label(key)
        out.print(
            f"  {label}: 90 % interval held the truth in {inside} of {n} ({100 * inside / n:.0f} %)"
        )
    out.print(
        f"  P(release): Brier score {result.release_brier:.3f} against "
        f"{result.prior_brier:.3f} before any sample (0 is perfect)"
    )
    rate = result.rate("duration")
    if require is not None and (rate is None or rate < require):
        err.print(
            f"harvest-day coverage {'none' if rate is None else f'{100 * rate:.0f} %'} is "
            f"below the required {100 * require:.0f} %",
            markup=False,
        )
        raise typer.Exit(EXIT_FAIL)
