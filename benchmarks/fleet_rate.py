"""Fleet benchmark: site journal -> Mosquitto -> control-site ingest -> PostgreSQL.

    .venv/bin/python benchmarks/fleet_rate.py [--sites 10 100] [--live-rate 1000]

One run measures, on this machine, with real servers started for the run:
  * the bare broker rate: one aiomqtt publisher -> Mosquitto -> one aiomqtt subscriber,
    QoS 1, event-sized payloads (the ratio's baseline);
  * end to end, backlog: N sites each replay a recorded smoke batch into its own journal
    (written before timing), then N forwarders publish and the control site
    (`poc-twin control-site serve`, its own process) stores into PostgreSQL; messages per
    second = events stored / time until the last one is in PostgreSQL;
  * latency, live: N sites write their journals at a fixed fleet rate while forwarding;
    per event, PostgreSQL's received time minus the event's journal wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiomqtt
import psycopg

from twin.control_site.pgtest import TempPostgres
from twin.telemetry.broker import BrokerConfig, Mosquitto, free_port
from twin.telemetry.fleet import FleetSite, load_events, run_fleet, write_journal
from twin.telemetry.topics import BrokerURL

REPO = Path(__file__).resolve().parents[1]


async def bare_rate(config: BrokerConfig, payload: bytes, n: int) -> float:
    """Messages per second through the broker alone (QoS 1 both ways)."""
    sub = aiomqtt.Client(**BrokerURL.parse(config.url("control")).client_kwargs())
    pub = aiomqtt.Client(
        **BrokerURL.parse(config.url("sim-001")).client_kwargs(), max_inflight_messages=200
    )
    pub.pending_calls_threshold = n + 10
    async with sub, pub:
        await sub.subscribe("poc-twin/sim-001/bare/b/event", qos=1)

        async def receive() -> None:
            got = 0
            async for _ in sub.messages:
                got += 1
                if got == n:
                    return

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for i in range(0, n, 500):
            await asyncio.gather(
                *(
                    pub.publish("poc-twin/sim-001/bare/b/event", payload, qos=1)
                    for _ in range(min(500, n - i))
                )
            )
        await receiver
        return n / (time.perf_counter() - start)


def stored(pg: str, prefix: str) -> int:
    with psycopg.connect(pg) as conn:
        return conn.execute(
            "SELECT count(*) FROM events WHERE batch LIKE %s", (prefix + "%",)
        ).fetchone()[0]


def latencies(pg: str, prefix: str) -> list[float]:
    with psycopg.connect(pg) as conn:
        rows = conn.execute(
            "SELECT wall_time, received_at FROM events WHERE batch LIKE %s", (prefix + "%",)
        ).fetchall()
    return [received - datetime.fromisoformat(wall).timestamp() for wall, received in rows]


def fleet(config: BrokerConfig, names: list[str], tag: str, directory: Path) -> list[FleetSite]:
    return [
        FleetSite(f"{n}-{tag}", config.url(n, unit="sim"), directory / f"{n}-{tag}.sqlite")
        for n in names
    ]


async def wait_stored(pg: str, prefix: str, total: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while stored(pg, prefix) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {stored(pg, prefix)} of {total} stored")
        await asyncio.sleep(0.05)  # real time: polling PostgreSQL
    return time.monotonic()


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-"))
    source = tmp / "smoke.sqlite"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from twin.cli import main; main()",
            "run",
            "recipes/smoke.yaml",
            "--journal",
            str(source),
            "-q",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    events = load_events(source)
    config = BrokerConfig(tmp / "broker", port=free_port(), persistence=False)
    names = [f"sim-{i:03d}" for i in range(1, max(args.sites) + 1)]
    for name in names:
        config.add_site(name)
    config.add_control("control")
    with Mosquitto(config), TempPostgres() as pg:
        payload = b"x" * args.payload_bytes
        bare = await bare_rate(config, payload, args.bare_messages)
        http = free_port()
        control = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twin.cli import main; main()",
                "control-site",
                "serve",
                "--broker",
                config.url("control"),
                "--db",
                pg.url,
                "--http",
                f"127.0.0.1:{http}",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            env=os.environ,
        )
        time.sleep(3)  # real time: the control site connects and subscribes
        print(f"bare broker (aiomqtt -> mosquitto -> aiomqtt, QoS 1): {bare:,.0f} msg/s")
        try:
            for n in args.sites:
                # backlog: journals written first, then forward + ingest as fast as it goes
                sites = fleet(config, names[:n], f"b{n}", tmp)
                for s in sites:
                    await write_journal(s.journal, f"{s.site}-batch", events, 0)
                total = n * len(events)
                start = time.monotonic()
                await run_fleet(sites, events)
                end = await wait_stored(pg.url, f"sim-%-b{n}", total)
                rate = total / (end - start)
                # live: every site writes while it forwards, at a fixed fleet rate
                live = fleet(config, names[:n], f"l{n}", tmp)
                per_site = args.live_rate / n
                count = min(len(events), int(per_site * args.live_s))
                await run_fleet(live, events[: count - 1] + events[-1:], rate=per_site)
                await wait_stored(pg.url, f"sim-%-l{n}", n * count)
                lat = sorted(latencies(pg.url, f"sim-%-l{n}"))
                p50 = statistics.median(lat)
                p95 = lat[int(0.95 * (len(lat) - 1))]
                print(
                    f"{n:4d} sites: backlog {total:,} events in {end - start:.1f} s = "
                    f"{rate:,.0f} msg/s end to end ({rate / bare:.2f} of bare broker); live "
                    f"{args.live_rate:.0f} ev/s fleet-wide, event -> PostgreSQL latency "
                    f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
                )
        finally:
            control.terminate()
            control.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--live-rate", type=float, default=1000.0, help="fleet events/s")
    parser.add_argument("--live-s", type=float, default=10.0, help="seconds of live writing")
    parser.add_argument("--bare-messages", type=int, default=20000)
    parser.add_argument("--payload-bytes", type=int, default=600, help="~ one event message")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
