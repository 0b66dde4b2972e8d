"""``poc-twin station serve``: the site's operator station in the browser."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from twin.cli.common import EXIT_FAIL, EXIT_INVALID, DebugOpt, _fail, _print_problems, app, out
from twin.cli.control import _host_port
from twin.cli.esign import UsersOpt
from twin.errors import InvalidInput, PocTwinError

__all__ = ["station_app"]

station_app = typer.Typer(help="The site's operator station (web page).", no_args_is_help=True)
app.add_typer(station_app, name="station")


@station_app.command("serve")
def station_serve(
    http: Annotated[str, typer.Option(help="Station address HOST:PORT")] = "127.0.0.1:8090",
    runs: Annotated[Path, typer.Option(help="Folder of the site's batch journals")] = Path("runs"),
    users: UsersOpt = None,
    site_key: Annotated[
        Path | None,
        typer.Option(envvar="POC_TWIN_SITE_KEY", help="Site Ed25519 key: signs QC entries"),
    ] = None,
    forecast_spec: Annotated[
        Path | None,
        typer.Option(
            "--forecast-spec",
            help="Release spec: forecast each running batch again after every new sample "
            "(poc-twin forecast; the first one builds the batch's library of twin batches)",
        ),
    ] = None,
    forecast_members: Annotated[
        int, typer.Option("--forecast-members", min=20, help="Twin batches per library")
    ] = 200,
    debug: DebugOpt = False,
) -> None:
    """Serve the operator station: live batches, alarms, signed commands, scans, QC, review,
    and (with --forecast-spec) each running batch's forecast kept up to date."""
    from twin.access.users import UserStore, UserStoreError, users_path
    from twin.signing import load_site_key
    from twin.station.acts import Station
    from twin.station.serve import NotListening, serve

    host, port = _host_port(http, 8090)
    if not runs.is_dir():
        raise _fail(f"--runs {runs}: not a folder of batch journals; nothing started", EXIT_INVALID)
    path = users_path(users)
    try:  # a station nobody can sign in to is not started
        UserStore.open(path).close()
        key = load_site_key(site_key) if site_key is not None else None
    except (UserStoreError, PocTwinError) as exc:
        raise _fail(f"{exc}; nothing started", EXIT_INVALID) from None
    forecaster = None
    if forecast_spec is not None:
        from twin.ensemble.spec import load_spec
        from twin.station.forecasts import Forecaster

        try:
            load_spec(forecast_spec)
        except InvalidInput as exc:
            _print_problems(exc)
            raise typer.Exit(EXIT_INVALID) from None
        forecaster = Forecaster(forecast_spec.resolve(), members=forecast_members)

    def listening(bound: int) -> None:  # the port bound: --http HOST:0 asks for a free one
        shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
        out.print(f"operator station on http://{shown}:{bound}/ for {runs}/", markup=False)

    try:
        asyncio.run(serve(runs, Station(path, key), host, port, forecaster, listening))
    except KeyboardInterrupt:
        return
    except NotListening as exc:  # where it cannot listen: nothing started
        raise _fail(f"{exc}; nothing started", EXIT_INVALID, debug) from None
    except (PocTwinError, OSError) as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
