"""``poc-twin whatif``: the chance a recipe gives a releasable dose on time, from an ensemble
of twin batches (twin/ensemble/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from twin.cli.common import (
    EXIT_FAIL,
    EXIT_INVALID,
    DebugOpt,
    ParamOpt,
    _fail,
    _load,
    _output_file,
    _params,
    _print_problems,
    _text_output,
    app,
    err,
    out,
)
from twin.errors import InvalidInput

IN_PROCESS_BENCH = Path("benches/sim-in-process.yaml")
_REPO_IN_PROCESS = Path(__file__).resolve().parents[2] / "benches" / "sim-in-process.yaml"


def _default_bench() -> Path:
    return IN_PROCESS_BENCH if IN_PROCESS_BENCH.exists() else _REPO_IN_PROCESS


@app.command("whatif")
def whatif(
    recipe: Annotated[Path, typer.Argument(help="Recipe file")],
    batches: Annotated[int, typer.Option("--batches", min=1, help="Twin batches to run")],
    spec: Annotated[Path, typer.Option("--spec", help="Release specification (YAML)")],
    vary: Annotated[
        list[str] | None,
        typer.Option(
            "--vary",
            help="NAME=DIST: a recipe parameter, donor.TRAIT or inoculum.QUANTITY drawn per "
            "batch, e.g. moi='uniform(3, 8)' (repeatable)",
        ),
    ] = None,
    param: ParamOpt = None,
    bench: Annotated[
        Path | None,
        typer.Option("--bench", help="Twin bench (default: benches/sim-in-process.yaml)"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Base seed of the ensemble")] = 0,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            envvar="POC_TWIN_DASK_SCHEDULER",
            help="A Dask scheduler, tcp://HOST:PORT (default: a local cluster)",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Local cluster's worker processes (default: cores)"),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="Results file; a killed run continues from it "
            "(default: runs/whatif-ID-SEED.sqlite)",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="HTML report (default: the results file with .html)"),
    ] = None,
    ready_by: Annotated[
        float | None,
        typer.Option("--ready-by", min=0.0, help="Day by which a dose must be ready (or spec's)"),
    ] = None,
    scan_delay_min: Annotated[
        float,
        typer.Option("--scan-delay", min=0.0, help="Minutes the scripted operator takes to scan"),
    ] = 15.0,
    hold_response_min: Annotated[
        float,
        typer.Option(
            "--hold-response",
            min=0.0,
            help="Minutes before the scripted operator restarts a held batch (3 times, then "
            "aborts)",
        ),
    ] = 60.0,
    max_days: Annotated[
        float,
        typer.Option("--max-days", min=0.1, help="A batch still running then is aborted"),
    ] = 30.0,
    summary_json: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures as JSON")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Run BATCHES twin batches of RECIPE, each with its own donor and seed; report the
    outcome distributions, P(release), P(ready by day D) and what drives failures.

    Exit codes: 0 the ensemble ran (whatever the probabilities); 1 some batches raised (see
    the report); 2 invalid input, nothing run."""
    from twin.ensemble.analysis import analyse
    from twin.ensemble.html import render_report
    from twin.ensemble.library import ensemble_definition, fill
    from twin.ensemble.member import plan_members
    from twin.ensemble.results import EnsembleMismatch, ResultsFile
    from twin.ensemble.spec import load_spec
    from twin.ensemble.vary import VaryError, parse_vary

    bench_path = bench if bench is not None else _default_bench()
    problems = []
    try:
        loaded, loaded_bench = _load(recipe, bench_path, _params(param))
    except InvalidInput as exc:
        problems += exc.problems
    try:
        release = load_spec(spec)
    except InvalidInput as exc:
        problems += exc.problems
    if problems:
        _print_problems(InvalidInput(problems))
        raise typer.Exit(EXIT_INVALID)
    if loaded_bench.model.twin is None:
        raise _fail(
            f"{bench_path}: whatif runs twin batches; this bench has no twin section "
            "(use benches/sim-in-process.yaml)",
            EXIT_INVALID,
        )
    try:
        variations = [parse_vary(v, dict(loaded.model.parameters)) for v in vary or []]
    except VaryError as exc:
        raise _fail(str(exc), EXIT_INVALID, debug) from None
    fixed = _params(param)
    plans = plan_members(
        recipe=str(recipe.resolve()),
        bench=str(bench_path.resolve()),
        batches=batches,
        base_seed=seed,
        variations=variations,
        scan_delay_min=scan_delay_min,
        max_days=max_days,
        hold_response_min=hold_response_min,
    )
    if fixed:
        plans = [_with_fixed(p, fixed) for p in plans]
    _check_drawn_recipes(plans, variations)
    recipe_id = loaded.model.recipe.id
    definition = ensemble_definition(
        loaded,
        loaded_bench,
        variations=variations,
        seed=seed,
        scan_delay_min=scan_delay_min,
        max_days=max_days,
        hold_response_min=hold_response_min,
    )
    results_path = results or Path("runs") / f"whatif-{recipe_id}-{seed}.sqlite"
    _output_file(results_path, "--results")
    report_path = _text_output(report or results_path.with_suffix(".html"), "--report")
    try:
        store = ResultsFile(results_path, definition)
    except EnsembleMismatch as exc:
        raise _fail(str(exc), EXIT_INVALID, debug) from None
    try:
        done = store.done()
        todo = [p for p in plans if p.index not in done]
        if len(todo) < len(plans):
            out.print(
                f"{results_path}: {len(plans) - len(todo)} of {batches} batches already "
                f"there; running the other {len(todo)}"
            )
        n_workers = workers or os.cpu_count() or 1
        where = scheduler or f"a local cluster of {n_workers} worker process(es)"
        if todo:
            out.print(f"running {len(todo)} twin batches of {recipe_id} on {where}")
        finished = [0]

        def keep(result: dict[str, Any]) -> None:
            finished[0] += 1
            o = result["outcome"]
            day = f"day {o['duration']:.2f}" if o.get("duration") is not None else "no harvest"
            verdict = ", ".join(release.failures(o)) or "release"
            err.print(
                f"  [{finished[0]}/{len(todo)}] batch {result['plan']['index']}: "
                f"{o['state']}, {day}: {verdict}",
                highlight=False,
                markup=False,
            )

        try:
            fill(store, todo, keep, scheduler=scheduler, workers=n_workers)
        except OSError as exc:
            raise _fail(f"Dask scheduler {scheduler}: {exc}", EXIT_FAIL, debug) from None
        kept = list(store.results(limit=batches))
    finally:
        store.close()
    analysis = analyse(kept, release, ready_by)
    report_path.write_text(render_report(analysis, release, kept, definition), encoding="utf-8")
    _print_summary(analysis)
    out.print(f"report: {report_path}   results: {results_path}")
    if summary_json is not None:
        _text_output(summary_json, "--json").write_text(
            json.dumps(_figures(analysis), indent=2), encoding="utf-8"
        )
    if analysis.errors:
        for line in analysis.errors[:5]:
            err.print(line, highlight=False, markup=False)
        raise typer.Exit(EXIT_FAIL)


def _with_fixed(plan: Any, fixed: dict[str, str]) -> Any:
    import dataclasses

    return dataclasses.replace(plan, parameters={**fixed, **plan.parameters})


def _check_drawn_recipes(plans: list[Any], variations: list[Any]) -> None:
    """Every drawn parameter set must make a valid recipe: refused before any batch runs."""
    if not any(v.kind == "parameter" for v in variations):
        return
    from twin.recipe import load_recipe

    for plan in plans:
        try:
            load_recipe(plan.recipe, plan.parameters)
        except InvalidInput as exc:
            err.print(f"batch {plan.index} draws {plan.parameters}:", markup=False)
            _print_problems(exc)
            raise typer.Exit(EXIT_INVALID) from None


def _pct(p: float | None, ci: tuple[float, float] | None) -> str:
    if p is None or ci is None:
        return "—"
    return f"{100 * p:.1f} % (95 % CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f} %)"


def _print_summary(a: Any) -> None:
    from twin.ensemble.spec import OUTCOMES

    out.print(
        f"[bold]{a.batches} batches[/]: " + ", ".join(f"{c} {s}" for s, c in a.states.items())
    )
    out.print(f"P(release): [bold]{_pct(a.p_release, a.p_release_ci)}[/]")
    if a.ready_by is not None:
        out.print(f"P(releasable by day {a.ready_by:g}): [bold]{_pct(a.p_ready, a.p_ready_ci)}[/]")
    for key, n in a.limit_failures.items():
        if n:
            out.print(f"  {n} fail {OUTCOMES[key].label}")
    for key in ("duration", "viable_cells", "car_positive", "dose_per_kg", "vector_copies"):
        s = a.spreads.get(key)
        if s is not None:
            unit = OUTCOMES[key].unit
            out.print(
                f"  {OUTCOMES[key].label}: median {s.p50:.3g} {unit} "
                f"(5-95 %: {s.p5:.3g}-{s.p95:.3g})"
            )
    if a.drivers:
        top = ", ".join(f"{d.name} {d.effect:+.2f}" for d in a.drivers[:3])
        out.print(f"  drives failures (rank-biserial): {top}")


def _figures(a: Any) -> dict[str, Any]:
    """The analysis as JSON for scripts (CI gates on P(release), say)."""
    return {
        "batches": a.batches,
        "states": a.states,
        "released": a.released,
        "p_release": a.p_release,
        "p_release_ci": list(a.p_release_ci),
        "limit_failures": a.limit_failures,
        "ready_by": a.ready_by,
        "p_ready": a.p_ready,
        "p_ready_ci": list(a.p_ready_ci) if a.p_ready_ci else None,
        "ready_curve": a.ready_curve,
        "outcomes": {
            k: {
                "n": s.n,
                "mean": s.mean,
                "sd": s.sd,
                "p5": s.p5,
                "p50": s.p50,
                "p95": s.p95,
                "min": s.low,
                "max": s.high,
            }
            for k, s in a.spreads.items()
        },
        "drivers": [
            {
                "input": d.name,
                "effect": d.effect,
                "mean_failed": d.mean_failed,
                "mean_passed": d.mean_passed,
            }
            for d in a.drivers
        ],
        "errors": a.errors,
    }
