"""The control site: broker for a fleet, ingest + dashboard, fleet simulation."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from twin.cli.common import (
    EXIT_FAIL,
    EXIT_INVALID,
    DebugOpt,
    _fail,
    app,
    err,
    out,
)
from twin.clock import wall_now
from twin.errors import PocTwinError
from twin.names import UnsafeName, check_safe_name

control_app = typer.Typer(
    help="The control site: broker for a fleet, ingest + dashboard, fleet simulation.",
    no_args_is_help=True,
)
app.add_typer(control_app, name="control-site")


#: A DNS host name (RFC 1123 labels); anything else must be an IP address.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _host(value: str, option: str) -> str:
    """A host name or IP address (brackets around IPv6 allowed); else exit 2.

    It goes into a listener, a config file or a certificate: no spaces, lines or markup.
    """
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if len(bare) <= 253 and _HOSTNAME.fullmatch(bare):
        return bare
    raise _fail(f"{option} '{value}' is not a host name or IP address", EXIT_INVALID)


def _host_port(value: str, default_port: int, option: str = "--http") -> tuple[str, int]:
    """HOST:PORT (or HOST, or :PORT) with a port 0-65535; else exit 2, nothing started."""
    if ":" not in value or value.endswith("]"):
        host, port_text = value, ""
    else:
        host, _, port_text = value.rpartition(":")
    if port_text and not (port_text.isascii() and port_text.isdigit() and int(port_text) < 65536):
        raise _fail(f"{option} '{value}': the port must be a number 0-65535", EXIT_INVALID)
    return _host(host or "127.0.0.1", option), int(port_text or default_port)


def _seconds(value: float) -> float:
    if not (value > 0 and value <= 3600):  # also refuses NaN and inf
        raise typer.BadParameter("between 0 and 3600 seconds")
    return value


def _rate(value: float) -> float:
    if not (value >= 0 and value <= 1e6):  # also refuses NaN and inf
        raise typer.BadParameter("between 0 (flat out) and 1e6 events per second")
    return value


def _names(values: list[str], what: str) -> list[str]:
    """Site and user names go into password files, ACLs and MQTT topics: safe names only."""
    try:
        return [check_safe_name(v, what) for v in values]
    except UnsafeName as exc:
        raise _fail(f"{exc}; nothing written", EXIT_INVALID) from None


def _directory(path: Path, option: str) -> Path:
    """``path`` if it is a directory or can become one; else exit 2, nothing written."""
    try:
        ok = path.is_dir() or not path.exists()
    except OSError as exc:
        raise _fail(f"{option} {path}: {exc.strerror}", EXIT_INVALID) from None
    if not ok:
        raise _fail(f"{option} {path} is not a directory; nothing written", EXIT_INVALID)
    return path


def _credentials(directory: Path, *, required: bool) -> dict[str, Any]:
    """The broker directory's credentials.json (site -> password); exit 2 if unreadable."""
    path = directory / "credentials.json"
    try:
        if not path.exists() and not required:
            return {}
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not JSON ({exc})"
        hint = "; configure it with: poc-twin control-site broker DIR --site NAME"
        raise _fail(f"{path}: {why}{hint if required else ''}", EXIT_INVALID) from None
    if not isinstance(known, dict) or not all(isinstance(v, str) for v in known.values()):
        raise _fail(f"{path}: not a mapping of user names to passwords", EXIT_INVALID)
    return known


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
        Path | None, typer.Option(help="Users who may sign in and act (control-site add-user)")
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
        float,
        typer.Option(
            "--refresh-s", callback=_seconds, help="How often open dashboard pages update"
        ),
    ] = 2.0,
    debug: DebugOpt = False,
) -> None:
    """Ingest every site's telemetry into the store and serve the dashboard."""
    from twin.control_site.serve import NotStarted, serve
    from twin.telemetry.credentials import BROKER_ENV, password_in_url, resolve_broker
    from twin.telemetry.topics import TelemetryError

    host, port = _host_port(http, 8080)
    try:  # checked before the store is opened: a bad URL starts nothing, writes nothing
        resolve_broker(broker)
    except (TelemetryError, ValueError) as exc:
        raise _fail(f"--broker: {exc}; nothing started", EXIT_INVALID) from None
    if password_in_url(broker) and os.environ.get(BROKER_ENV) != broker:
        err.print(
            "warning: a password in --broker is visible to every user of this machine (ps); "
            f"give the URL in {BROKER_ENV}, or the password in POC_TWIN_BROKER_PASSWORD_FILE",
            markup=False,
        )

    def started() -> None:  # said once it is true: bound, store open, subscribed
        out.print(
            f"control site: dashboard on http://{host}:{port}/, store {db.split('@')[-1]}",
            markup=False,
        )

    try:
        asyncio.run(
            serve(
                broker,
                db,
                host,
                port,
                users,
                site_keys=site_keys or [],
                refresh_s=refresh_s,
                on_started=started,
            )
        )
    except KeyboardInterrupt:
        return
    except NotStarted as exc:  # its address, store or users file: nothing started
        raise _fail(f"{exc}; nothing started", EXIT_INVALID, debug) from None
    except (PocTwinError, OSError) as exc:
        raise _fail(str(exc), EXIT_FAIL, debug) from None
    except Exception as exc:  # a driver's own error (psycopg, aiomqtt): one sentence
        raise _fail(f"{type(exc).__name__}: {exc}", EXIT_FAIL, debug) from None


@control_app.command("add-user")
def control_add_user(
    users: Annotated[Path, typer.Argument(help="Users file (created if missing)")],
    name: Annotated[str, typer.Argument(help="User name (recorded with every request)")],
    password_file: Annotated[
        Path | None,
        typer.Option(
            help="File (mode 0600) holding the user's password; else asked at the terminal "
            "or read as one line of standard input (never on the command line)"
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Give an existing user a new password")
    ] = False,
) -> None:
    """Allow a control-site user to sign in to the dashboard, hold batches, suspend sites."""
    from twin.access.users import MIN_PASSWORD
    from twin.cli.esign import read_password
    from twin.control_site.web import Users
    from twin.telemetry.topics import TelemetryError

    (name,) = _names([name], "user name")  # one line of NAME:scrypt:SALT:HASH per user
    try:  # a regular file of its own (never a directory or a device: it is chmod-ed 0600)
        if users.exists() and not users.is_file():
            raise _fail(f"{users} is not a regular file; nothing written", EXIT_INVALID)
        known = Users(users if users.exists() else None)
    except TelemetryError as exc:
        raise _fail(f"{exc}; nothing written", EXIT_INVALID) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not text"
        raise _fail(f"cannot read {users}: {why}; nothing written", EXIT_INVALID) from None
    if name in known and not replace:
        raise _fail(
            f"{name} is already a user in {users}; to give them a new password: "
            f"poc-twin control-site add-user {users} {name} --replace; nothing written",
            EXIT_INVALID,
        )
    if name not in known and replace:
        raise _fail(f"{name} is not a user in {users}: nothing to replace", EXIT_INVALID)
    password = read_password(name, password_file)
    if len(password) < MIN_PASSWORD:
        raise _fail(
            f"a password has at least {MIN_PASSWORD} characters; nothing written", EXIT_INVALID
        )
    line = Users.line(name, password)
    try:
        kept = users.read_text().splitlines() if users.exists() else []
        if replace:  # every other line as it was; written whole, then renamed over the file
            kept = [k for k in kept if k.strip().split(":", 1)[0] != name]
        tmp = users.with_name(users.name + ".tmp")
        tmp.write_text("".join(f"{k}\n" for k in [*kept, line]))
        tmp.chmod(0o600)
        tmp.replace(users)
    except OSError as exc:
        raise _fail(f"cannot write {users}: {exc.strerror}", EXIT_INVALID) from None
    said = "has a new password in" if replace else "added to"
    out.print(f"{name} {said} {users}", markup=False)


@control_app.command("broker")
def control_broker(
    directory: Annotated[Path, typer.Argument(help="Where config, passwords, ACL and data live")],
    site: Annotated[list[str], typer.Option("--site", help="A site allowed to publish")],
    control_user: Annotated[list[str], typer.Option(help="A control-site MQTT user")] = [  # noqa: B006
        "control"
    ],
    bind: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Plain MQTT port")] = 1883,
    tls_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="MQTT over TLS port")
    ] = None,
    hostname: Annotated[str, typer.Option(help="Broker host name in its cert")] = "localhost",
) -> None:
    """Configure and run Mosquitto for a fleet: per-site users and ACLs, optional TLS."""
    from twin.telemetry.broker import BrokerConfig, Mosquitto, make_pki
    from twin.telemetry.topics import TelemetryError

    # Everything checked before anything is written: names and addresses go into
    # mosquitto's password file, ACL, config and certificate, one per line.
    _directory(directory, "DIRECTORY")
    site, control_user = _names(site, "--site"), _names(control_user, "--control-user")
    bind, hostname = _host(bind, "--bind"), _host(hostname, "--hostname")
    creds_path = directory / "credentials.json"
    known = _credentials(directory, required=False)
    config = BrokerConfig(directory, port=port, bind=bind, tls_port=tls_port)
    try:
        for name in site:
            known[name] = config.add_site(name, known.get(name))
        for name in control_user:
            known[name] = config.add_control(name, known.get(name))
    except TelemetryError as exc:
        raise _fail(f"{exc}; nothing written", EXIT_INVALID) from None
    try:
        if tls_port is not None:
            pki = directory / "pki"
            config.tls = (
                {k: pki / f"{k}.pem" for k in ("ca", "cert", "key")}
                if (pki / "ca.pem").exists()
                else make_pki(pki, hostname)
            )
        directory.mkdir(parents=True, exist_ok=True)
        creds_path.write_text(json.dumps(known, indent=1))
        creds_path.chmod(0o600)
    except OSError as exc:
        raise _fail(f"cannot write in {directory}: {exc.strerror}", EXIT_FAIL) from None
    host = bind if bind != "0.0.0.0" else hostname
    for name in [*site, *control_user]:
        out.print(
            f"{name:16} {config.url(name, tls=tls_port is not None, host=host)}", markup=False
        )
    broker = Mosquitto(config)
    try:
        broker.start()
        out.print(
            f"mosquitto running (config {directory / 'mosquitto.conf'}); Ctrl-C to stop",
            markup=False,
        )
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
    sites: Annotated[int, typer.Option(min=1, max=10000, help="How many simulated sites")] = 10,
    rate: Annotated[
        float, typer.Option(callback=_rate, help="Events per second per site (0: flat out)")
    ] = 50.0,
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes the sites are spread over (default: cores)"),
    ] = None,
    keys: Annotated[
        Path | None, typer.Option(help="Directory of <site>.key: the sites sign their journals")
    ] = None,
    host: Annotated[str, typer.Option(help="Broker host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Broker port")] = 1883,
    out_dir: Annotated[Path, typer.Option(help="Where journals go")] = Path("runs/fleet"),
) -> None:
    """Simulate N sites, each writing a journal and publishing it with its own credentials."""
    from twin.clock import wall_monotonic
    from twin.telemetry.fleet import FleetProcesses, FleetSite

    host = _host(host, "--host")
    try:
        journal_ok = journal.is_file()
    except OSError:
        journal_ok = False
    if not journal_ok:
        raise _fail(f"--journal {journal}: not a journal file", EXIT_INVALID)
    _directory(out_dir, "--out-dir")
    if keys is not None:
        _directory(keys, "--keys")
    known = _credentials(broker_dir, required=True)
    names = [n for n in known if n.startswith("sim-")][:sites]
    if len(names) < sites:
        raise _fail(
            f"{broker_dir} has {len(names)} sim-* sites; start it with "
            f"--site sim-001 ... --site sim-{sites:03d}",
            EXIT_INVALID,
        )
    stamp = wall_now().strftime("%Y%m%d-%H%M%S")
    run_dir = (out_dir / stamp).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot write in {run_dir}: {exc.strerror}", EXIT_INVALID) from None
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
        f"({run_dir}) in {wall_monotonic() - start:.1f} s",
        markup=False,
    )
