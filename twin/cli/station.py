"""``poc-twin station serve``: the site's operator station in the browser."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from twin.cli.common import EXIT_FAIL, EXIT_INVALID, DebugOpt, _fail, app, out
from twin.cli.control import _host_port
from twin.cli.esign import UsersOpt
from twin.errors import PocTwinError

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
    debug: DebugOpt = False,
) -> None:
    """Serve the operator station: live batches, alarms, signed commands, scans, QC, review."""
    from twin.access.users import UserStore, UserStoreError, users_path
    from twin.signing import load_site_key
    from twin.station.acts import Station
    from twin.station.serve import serve

    host, port = _host_port(http, 8090)
    if not runs.is_dir():
        raise _fail(f"--runs {runs}: not a folder of batch journals; nothing started", EXIT_INVALID)
    path = users_path(users)
    try:  # a station nobody can sign in to is not started
        UserStore.open(path).close()
        key = load_site_key(site_key) if site_key is not None else None
    except (UserStoreError, PocTwinError) as exc:
        raise _fail(f"{exc}; nothing started", EXIT_INVALID) from None
    out.print(f"operator station on http://{host}:{port}/ for {runs}/", markup=False)
    try:
        asyncio.run(serve(runs, Station(path, key), host, port))
    except KeyboardInterrupt:
        return
    except (PocTwinError, OSError) as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
