"""Commands on benches and the twin: bench check, twin serve."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from twin.bench import load_bench
from twin.cli.common import (
    EXIT_FAIL,
    EXIT_INVALID,
    EXIT_NO_ANSWER,
    BenchOpt,
    DebugOpt,
    _bench_path,
    _fail,
    _print_problems,
    bench_app,
    err,
    out,
    twin_app,
)
from twin.errors import InvalidInput


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
