"""Fleet benchmark: site journal -> Mosquitto -> control-site ingest -> PostgreSQL -> dashboard.

    .venv/bin/python benchmarks/fleet_rate.py [--sites 10 100] [--live-rate 200]

One run, on this machine, with real servers started for the run (Mosquitto,
PostgreSQL via initdb/pg_ctl, ``poc-twin control-site serve`` in its own process)
and simulated sites spread over worker processes (one per core), measures:

* the bare broker rate, the ratios' baseline, twice: with the C clients
  (mosquitto_pub -l -> Mosquitto -> mosquitto_sub) and with the bare aiomqtt
  client (what sites and control site use), QoS 1, real event payloads;
* end to end, backlog: N sites each replay a recorded smoke batch into their own
  signed journal (written before timing); then N forwarders publish and the
  control site verifies, stores and anchors; messages/s = events stored in
  PostgreSQL / time until the last one is there;
* latency, live: N sites write at a fixed fleet-wide rate while forwarding
  (each event committed as written); per event, the time from its journal wall
  time until the dashboard's JSON endpoint (``/api/batches``, what the page's
  script reads) shows it, and until it is in PostgreSQL. Every /api route needs a
  control-site user: the benchmark signs in once (``POST /login``) and polls with
  the session's cookie, as a machine client that polls does (HTTP Basic on every
  request would meet the sign-in rate limit, 30 a minute).

Every wait is real time (this measures real time), through twin.clock.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from datetime import datetime
from pathlib import Path

import aiohttp
import aiomqtt
import psycopg

from twin.clock import wall_monotonic, wall_now, wall_seconds, wall_sleep
from twin.control_site.logins import Users
from twin.control_site.pgtest import TempPostgres
from twin.journal import read_events
from twin.signing import generate_site_key
from twin.telemetry.broker import BrokerConfig, Mosquitto, free_port
from twin.telemetry.fleet import FleetProcesses, FleetSite, load_events
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL

REPO = Path(__file__).resolve().parents[1]
print = functools.partial(print, flush=True)  # progress shows as it happens
POC = [sys.executable, "-c", "from twin.cli import main; main()"]
BARE_TOPIC = "poc-twin/sim-001/bare/{}/event"
#: The control-site user the benchmark reads the dashboard's JSON as (a machine client).
WATCHER = ("fleet-bench", "fleet-bench-password")


def event_payloads(source: Path, url: str) -> list[bytes]:
    """The smoke batch's events as the forwarder puts them on the wire."""
    forwarder = Forwarder(source, BrokerURL.parse(url))
    forwarder._prime()
    return [forwarder._event_payload(row) for row in forwarder._rows(0, 100_000)]


def c_clients_rate(config: BrokerConfig, payloads: list[bytes], n: int) -> float:
    """mosquitto_pub -l -> Mosquitto -> mosquitto_sub, QoS 1: messages per second."""
    port = str(config.port)
    control, site = config.control["control"], config.sites["sim-001"]
    sub = subprocess.Popen(
        [
            *("mosquitto_sub", "-p", port, "-u", "control", "-P", control, "-q", "1"),
            *("-t", BARE_TOPIC.format("+"), "-F", "%t", "-k", "60"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    ready, done, got = threading.Event(), threading.Event(), {"n": 0, "end": 0.0}

    def read() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            if "/probe/" in line:
                ready.set()
            elif ready.is_set():
                got["n"] += 1
                if got["n"] == n:
                    got["end"] = wall_monotonic()
                    done.set()
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    pub = ["mosquitto_pub", "-p", port, "-u", "sim-001", "-P", site, "-q", "1", "-k", "60"]
    while not ready.is_set():  # the subscription is in place once a probe comes back
        subprocess.run([*pub, "-t", BARE_TOPIC.format("probe"), "-m", "p"], check=True)
        ready.wait(0.2)
    with tempfile.TemporaryFile() as lines:
        lines.write(b"".join(payloads[i % len(payloads)] + b"\n" for i in range(n)))
        lines.seek(0)
        start = wall_monotonic()
        subprocess.run([*pub, "-M", "200", "-t", BARE_TOPIC.format("c"), "-l"], stdin=lines)
    finished = done.wait(120)
    sub.terminate()
    sub.wait(10)
    if not finished:
        raise TimeoutError(f"mosquitto_sub got {got['n']} of {n}")
    return n / (got["end"] - start)


async def aiomqtt_rate(config: BrokerConfig, payloads: list[bytes], n: int) -> float:
    """One aiomqtt publisher -> Mosquitto -> one aiomqtt subscriber, QoS 1: messages/s."""
    sub = aiomqtt.Client(**BrokerURL.parse(config.url("control")).client_kwargs())
    pub = aiomqtt.Client(
        **BrokerURL.parse(config.url("sim-001")).client_kwargs(), max_inflight_messages=200
    )
    pub.pending_calls_threshold = n + 10
    topic = BARE_TOPIC.format("a")
    async with sub, pub:
        await sub.subscribe(topic, qos=1)

        async def receive() -> None:
            got = 0
            async for _ in sub.messages:
                got += 1
                if got == n:
                    return

        receiver = asyncio.create_task(receive())
        start = wall_monotonic()
        for i in range(0, n, 500):
            await asyncio.gather(
                *(
                    pub.publish(topic, payloads[j % len(payloads)], qos=1)
                    for j in range(i, min(i + 500, n))
                )
            )
        await receiver
        return n / (wall_monotonic() - start)


def stored(pg: str, like: str) -> int:
    with psycopg.connect(pg) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE batch LIKE %s", (like,)).fetchone()
        return int(row[0]) if row else 0


def wait_stored(pg: str, like: str, total: int, timeout: float = 900) -> float:
    deadline = wall_monotonic() + timeout
    while (count := stored(pg, like)) < total:
        if wall_monotonic() > deadline:
            raise TimeoutError(f"only {count} of {total} stored")
        wall_sleep(0.05)  # real time: polling PostgreSQL
    return wall_monotonic()


class DashboardWatch:
    """Polls the dashboard's JSON every ``every_s``: when each batch showed which event."""

    def __init__(self, base: str, every_s: float = 0.1) -> None:
        self.base, self.every_s = base, every_s
        self.seen: dict[str, list[tuple[float, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        # unsafe: the jar keeps cookies of an IP address host (the dashboard on 127.0.0.1)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            user, password = WATCHER
            form = {"user": user, "password": password}
            async with http.post(f"{self.base}/login", data=form) as response:
                response.raise_for_status()
            while not self._stop.is_set():
                async with http.get(f"{self.base}/api/batches") as response:
                    response.raise_for_status()
                    rows = await response.json()
                now = wall_seconds()
                for row in rows:
                    if isinstance(row.get("seq"), int):
                        self.seen.setdefault(row["batch"], []).append((now, row["seq"]))
                await asyncio.sleep(self.every_s)  # real time: the dashboard's own poll

    def __enter__(self) -> DashboardWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def latencies(self, batch: str, journal: Path) -> list[float]:
        """Per event: first time the dashboard showed it minus its journal wall time."""
        seen = self.seen.get(batch, [])
        out, i = [], 0
        for event in read_events(journal):
            while i < len(seen) and seen[i][1] < event.seq:
                i += 1
            if i == len(seen):
                break
            out.append(seen[i][0] - datetime.fromisoformat(event.wall_time).timestamp())
        return out


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until the control site answers (it subscribes to the broker before it serves)."""
    deadline = wall_monotonic() + timeout
    request = urllib.request.Request(url)
    basic = base64.b64encode(":".join(WATCHER).encode()).decode()
    request.add_header("Authorization", f"Basic {basic}")
    while True:
        try:
            urllib.request.urlopen(request, timeout=2).close()
            return
        except OSError:
            assert proc.poll() is None and wall_monotonic() < deadline, "no control site"
            wall_sleep(0.1)  # real time: waiting for another process


def journal_events(sites: list[FleetSite]) -> int:
    """Events in the sites' journals (the batch's events plus the signed checkpoints)."""
    total = 0
    for site in sites:
        db = sqlite3.connect(f"file:{site.journal}?mode=ro", uri=True)
        total += int(db.execute("SELECT max(seq) FROM events").fetchone()[0])
        db.close()
    return total


def pg_latencies(pg: str, like: str) -> list[float]:
    with psycopg.connect(pg) as conn:
        rows = conn.execute(
            "SELECT wall_time, received_at FROM events WHERE batch LIKE %s", (like,)
        ).fetchall()
    return [received - datetime.fromisoformat(wall).timestamp() for wall, received in rows]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def record_smoke(tmp: Path) -> Path:
    source = tmp / "smoke.sqlite"
    args = ["run", "recipes/smoke.yaml", "--journal", str(source), "-q"]
    subprocess.run([*POC, *args], cwd=REPO, check=True, capture_output=True)
    return source


def fleet(config: BrokerConfig, names: list[str], tag: str, tmp: Path) -> list[FleetSite]:
    return [
        FleetSite(
            f"{n}-{tag}", config.url(n, unit="sim"), tmp / f"{n}-{tag}.sqlite", tmp / f"{n}.key"
        )
        for n in names
    ]


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-"))
    try:
        measure(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)  # ~90 MB of journals per run


def measure(args: argparse.Namespace, tmp: Path) -> None:
    source = record_smoke(tmp)
    per_batch = len(load_events(source))
    names = [f"sim-{i:03d}" for i in range(1, max(args.sites) + 1)]
    keys = tmp / "public-keys"
    keys.mkdir()
    for name in names:
        _, public = generate_site_key(name, tmp)
        public.rename(keys / public.name)
    config = BrokerConfig(tmp / "broker", port=free_port(), persistence=False)
    for name in names:
        config.add_site(name)
    config.add_control("control")
    load = os.getloadavg()
    print(
        f"{wall_now():%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"load {load[0]:.1f}; smoke batch {per_batch} events; "
        f"{args.processes} site processes; keepalive {args.keepalive_s} s"
    )
    with Mosquitto(config), TempPostgres() as pg:
        payloads = event_payloads(source, config.url("sim-001"))
        c_rate = c_clients_rate(config, payloads, args.bare_messages)
        a_rate = asyncio.run(aiomqtt_rate(config, payloads, args.bare_messages))
        size = statistics.median(len(p) for p in payloads)
        print(f"bare broker, QoS 1, {args.bare_messages} event payloads (median {size:.0f} B):")
        print(f"  C clients (mosquitto_pub -l -> mosquitto -> mosquitto_sub): {c_rate:8,.0f} msg/s")
        print(
            f"  aiomqtt -> mosquitto -> aiomqtt:                             {a_rate:8,.0f} msg/s"
        )
        http = free_port()
        users = tmp / "control-users"
        users.write_text(Users.line(*WATCHER) + "\n")
        cli = POC
        if args.profile:
            cli = [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "twin.cli"]
        control = subprocess.Popen(
            [
                *(*cli, "control-site", "serve"),
                *("--broker", config.url("control")),
                *("--db", pg.url, "--http", f"127.0.0.1:{http}", "--site-keys", str(keys)),
                *("--users", str(users)),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{http}"
        try:
            wait_http(f"{base}/api/batches", control)
            for n in args.sites:
                backlog(args, config, pg.url, names[:n], tmp, c_rate, a_rate)
                live(args, config, pg.url, names[:n], tmp, base)
            with psycopg.connect(pg.url) as conn:
                unverified = conn.execute("SELECT count(*) FROM heads WHERE verified=0").fetchone()
                flagged = conn.execute("SELECT count(*) FROM chain_flags").fetchone()
            print(
                f"heads not verified: {unverified[0] if unverified else '?'}; "
                f"chain flags: {flagged[0] if flagged else '?'} (both should be 0)"
            )
        finally:
            # SIGINT lets a profiled control site write its profile (run in the foreground:
            # a background job ignores SIGINT); otherwise there is nothing to save.
            control.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            try:
                control.wait(30)
            except subprocess.TimeoutExpired:
                control.kill()
                control.wait()


def backlog(
    args: argparse.Namespace,
    config: BrokerConfig,
    pg: str,
    names: list[str],
    tmp: Path,
    c_rate: float,
    a_rate: float,
) -> None:
    n = len(names)
    sites = fleet(config, names, f"b{n}", tmp)
    procs = FleetProcesses(
        sites,
        tmp / "smoke.sqlite",
        processes=args.processes,
        limit=args.backlog_events,
        keepalive_s=args.keepalive_s,
    )
    try:
        procs.start()  # journals written, not timed
        total = journal_events(sites)
        start = wall_monotonic()
        procs.go()
        end = wait_stored(pg, f"sim-%-b{n}-batch", total)
        procs.wait()
    finally:
        procs.stop()
    rate = total / (end - start)
    print(
        f"{n:4d} sites, backlog {total:,} events -> PostgreSQL in {end - start:5.1f} s: "
        f"{rate:6,.0f} msg/s = {rate / c_rate:.2f} of C-client bare, {rate / a_rate:.2f} of "
        f"aiomqtt bare"
    )


def live(
    args: argparse.Namespace, config: BrokerConfig, pg: str, names: list[str], tmp: Path, base: str
) -> None:
    n = len(names)
    per_site = args.live_rate / n
    count = max(3, int(per_site * args.live_s))
    sites = fleet(config, names, f"l{n}", tmp)
    procs = FleetProcesses(
        sites,
        tmp / "smoke.sqlite",
        processes=args.processes,
        rate=per_site,
        limit=count,
        keepalive_s=args.keepalive_s,
    )
    with DashboardWatch(base, args.watch_s) as watch:
        try:
            procs.start()
            procs.go()
            procs.wait()
            wait_stored(pg, f"sim-%-l{n}-batch", journal_events(sites))
            wall_sleep(2 * args.watch_s)  # real time: the last poll of the dashboard
        finally:
            procs.stop()
    dash = [x for s in sites for x in watch.latencies(f"{s.site}-batch", s.journal)]
    pgl = pg_latencies(pg, f"sim-%-l{n}-batch")
    print(
        f"{n:4d} sites, live {args.live_rate:.0f} events/s fleet-wide ({per_site:.1f}/site, "
        f"{len(dash)} events): event -> dashboard p50 {pct(dash, 0.5) * 1000:.0f} ms, "
        f"p95 {pct(dash, 0.95) * 1000:.0f} ms; event -> PostgreSQL p50 "
        f"{pct(pgl, 0.5) * 1000:.0f} ms, p95 {pct(pgl, 0.95) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keepalive-s", type=int, default=30)
    parser.add_argument(
        "--backlog-events", type=int, default=None, help="events per site (default: the batch)"
    )
    parser.add_argument("--live-rate", type=float, default=200.0, help="fleet events/s")
    parser.add_argument("--live-s", type=float, default=10.0, help="seconds of live writing")
    parser.add_argument("--watch-s", type=float, default=0.1, help="dashboard poll period")
    parser.add_argument("--bare-messages", type=int, default=20000)
    parser.add_argument("--keep", action="store_true", help="keep the journals and logs")
    parser.add_argument("--profile", help="run the control site under cProfile, stats to FILE")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
