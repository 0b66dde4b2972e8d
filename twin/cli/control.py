"""The control site: broker for a fleet, ingest + dashboard, fleet simulation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from twin.cli.common import (
    EXIT_FAIL,
    EXIT_INVALID,
    DebugOpt,
    _fail,
    app,
    out,
)
from twin.clock import wall_now
from twin.errors import PocTwinError

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
    site_keys: Annotated[
        list[Path] | None,
        typer.Option(
            "--site-keys",
            help="Sites' public keys: a <site>.pub file or a directory of them (repeatable); "
            "chain heads are verified against them",
        ),
    ] = None,
    refresh_s: Annotated[
        float, typer.Option("--refresh-s", help="How often open dashboard pages update")
    ] = 2.0,
    debug: DebugOpt = False,
) -> None:
    """Ingest every site's telemetry into the store and serve the dashboard."""
    from twin.control_site.serve import serve

    host, port = _host_port(http, 8080)
    out.print(f"control site: dashboard on http://{host}:{port}/, store {db.split('@')[-1]}")
    try:
        asyncio.run(
            serve(broker, db, host, port, users, site_keys=site_keys or [], refresh_s=refresh_s)
        )
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
    processes: Annotated[
        int | None, typer.Option(help="Worker processes the sites are spread over (default: cores)")
    ] = None,
    keys: Annotated[
        Path | None, typer.Option(help="Directory of <site>.key: the sites sign their journals")
    ] = None,
    host: Annotated[str, typer.Option(help="Broker host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Broker port")] = 1883,
    out_dir: Annotated[Path, typer.Option(help="Where journals go")] = Path("runs/fleet"),
) -> None:
    """Simulate N sites, each writing a journal and publishing it with its own credentials."""
    import json as _json

    from twin.clock import wall_monotonic
    from twin.telemetry.fleet import FleetProcesses, FleetSite

    known = _json.loads((broker_dir / "credentials.json").read_text())
    names = [n for n in known if n.startswith("sim-")][:sites]
    if len(names) < sites:
        raise _fail(
            f"{broker_dir} has {len(names)} sim-* sites; start it with "
            f"--site sim-001 ... --site sim-{sites:03d}",
            EXIT_INVALID,
        )
    stamp = wall_now().strftime("%Y%m%d-%H%M%S")
    run_dir = (out_dir / stamp).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    fleet = [  # batch ids carry the run's stamp: a second run is new batches, not a rewrite
        FleetSite(
            f"{n}-{stamp}",
            f"mqtt://{n}:{known[n]}@{host}:{port}/?unit=sim",
            run_dir / f"{n}.sqlite",
            (keys / f"{n}.key").resolve() if keys is not None else None,
        )
        for n in names
    ]
    workers = FleetProcesses(fleet, journal.resolve(), processes=processes, rate=rate)
    try:
        workers.start()
        start = wall_monotonic()
        workers.go()
        workers.wait()
    except PocTwinError as exc:
        raise _fail(str(exc), EXIT_FAIL) from None
    finally:
        workers.stop()
    out.print(
        f"{len(fleet)} sites in {len(workers.procs)} processes delivered their journals "
        f"({run_dir}) in {wall_monotonic() - start:.1f} s"
    )
