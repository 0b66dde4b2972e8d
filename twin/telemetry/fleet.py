"""A simulated fleet: N sites, each writing a real hash-chained journal and forwarding it.

Each site replays a recorded batch journal (e.g. a smoke run on the twin) into
its own new journal through ``twin.journal.Journal`` (new chain, new wall
times, signed with the site's own key when it has one), at a given event rate,
while a ``Forwarder`` per site tails that journal and publishes it with the
site's own credentials: the same code path as a real site.

Many sites on one event loop starve it: with 100 forwarders in one process
the loop could not answer MQTT keep-alives and the broker dropped them. So a
fleet is spread over worker processes (``python -m twin.telemetry
fleet-worker``, one per core by default), each running its share of sites on
its own real-time loop. The parent hands each worker its sites on stdin (the
URLs carry passwords: never on a command line), waits until every worker has
written its journals, then says "go" to all at once, so a benchmark times only
the delivery. Used by ``poc-twin control-site simulate-fleet`` and
benchmarks/fleet_rate.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from twin.clock import wall_monotonic
from twin.journal import CHECKPOINT, Journal
from twin.signing import load_site_key
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL, TelemetryError

__all__ = ["FleetProcesses", "FleetSite", "load_events", "run_fleet", "worker", "write_journal"]

Events = list[tuple[float, str, str, dict[str, Any]]]


@dataclass(frozen=True)
class FleetSite:
    """One simulated site's batch: ``site`` names it (batch id ``<site>-batch``); the broker
    URL's user is the site on the wire; the journal path; an optional signing key."""

    site: str
    url: str
    journal: Path
    key: Path | None = None


def load_events(source: Path) -> Events:
    """(batch_time, kind, source, data) of a recorded journal, to be replayed.

    Checkpoints are left out: they sign the recorded chain, not the new one; a
    site with a key signs its own.
    """
    db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT batch_time, kind, source, data FROM events ORDER BY seq")
        return [(bt, k, src, json.loads(data)) for bt, k, src, data in rows if k != CHECKPOINT]
    finally:
        db.close()


async def write_journal(
    path: Path,
    batch_id: str,
    events: Events,
    rate: float,
    *,
    key: Path | None = None,
    offset_s: float = 0.0,
) -> None:
    """Replay ``events`` into a new journal at ``rate`` events/s (0: as fast as possible).

    At a rate, each event is committed as it is written (as a transition or an
    alarm is at a real site), starting ``offset_s`` late so that a fleet's sites
    do not all write in the same instant.
    """
    clock = {"t": 0.0}
    journal = Journal(path, lambda: clock["t"], signer=load_site_key(key) if key else None)
    start = wall_monotonic() + offset_s
    try:
        for i, (bt, kind, src, data) in enumerate(events):
            if rate:
                await asyncio.sleep(max(0.0, start + i / rate - wall_monotonic()))  # real time
            clock["t"] = bt
            if kind == "batch_started":
                data = {**data, "batch_id": batch_id}
            journal.append(kind, src, data, durable=bool(rate))
        journal.commit()
    finally:
        journal.close()


async def run_fleet(
    sites: list[FleetSite],
    events: Events,
    *,
    rate: float = 0.0,
    poll_s: float = 0.2,
    keepalive_s: int = 30,
) -> float:
    """Write (unless written) and forward every site's journal; seconds until all delivered."""
    start = wall_monotonic()
    forwarders = [
        Forwarder(s.journal, BrokerURL.parse(s.url), poll_s=poll_s, keepalive_s=keepalive_s)
        for s in sites
    ]
    writers = [
        write_journal(
            s.journal, f"{s.site}-batch", events, rate, key=s.key, offset_s=i / len(sites) / rate
        )
        if rate
        else write_journal(s.journal, f"{s.site}-batch", events, 0, key=s.key)
        for i, s in enumerate(sites)
        if not s.journal.exists()
    ]
    await asyncio.gather(*writers, *(f.run(until_ended=True) for f in forwarders))
    return wall_monotonic() - start


def _line(stream: IO[str]) -> str:
    line = stream.readline()
    if not line:
        raise TelemetryError("fleet worker: its parent went away")
    return line.strip()


def worker(stdin: IO[str], stdout: IO[str]) -> int:
    """One fleet worker: spec on stdin, "ready" when journals are written, "go", then "done"."""
    spec = json.loads(_line(stdin))
    sites = [
        FleetSite(s["site"], s["url"], Path(s["journal"]), Path(s["key"]) if s["key"] else None)
        for s in spec["sites"]
    ]
    events = load_events(Path(spec["source"]))
    limit = spec.get("limit")
    if limit and limit < len(events):
        events = events[: limit - 1] + events[-1:]  # a shorter batch, still ended
    rate = float(spec.get("rate", 0.0))
    if not rate:  # backlog: every journal is complete before the clock starts

        async def write_all() -> None:
            for s in sites:
                await write_journal(s.journal, f"{s.site}-batch", events, 0, key=s.key)

        asyncio.run(write_all())
    print("ready", file=stdout, flush=True)
    if _line(stdin) != "go":
        return 2
    seconds = asyncio.run(
        run_fleet(
            sites,
            events,
            rate=rate,
            poll_s=float(spec.get("poll_s", 0.2)),
            keepalive_s=int(spec.get("keepalive_s", 30)),
        )
    )
    print("done " + json.dumps({"sites": len(sites), "seconds": seconds}), file=stdout, flush=True)
    return 0


class FleetProcesses:
    """A fleet spread over worker processes: ``start`` (journals written), ``go``, ``wait``."""

    def __init__(
        self,
        sites: list[FleetSite],
        source: Path,
        *,
        processes: int | None = None,
        rate: float = 0.0,
        limit: int | None = None,
        poll_s: float = 0.2,
        keepalive_s: int = 30,
    ) -> None:
        count = max(1, min(processes or os.cpu_count() or 1, len(sites)))
        self.shares = [sites[i::count] for i in range(count)]
        self.common = {
            "source": str(source),
            "rate": rate,
            "limit": limit,
            "poll_s": poll_s,
            "keepalive_s": keepalive_s,
        }
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> None:
        """Start the workers and return once every one has written its journals."""
        for share in self.shares:
            proc = subprocess.Popen(
                [sys.executable, "-m", "twin.telemetry", "fleet-worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None
            sites = [
                {**asdict(s), "journal": str(s.journal), "key": str(s.key) if s.key else None}
                for s in share
            ]
            proc.stdin.write(json.dumps({**self.common, "sites": sites}) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            if _line(proc.stdout) != "ready":
                raise TelemetryError("a fleet worker failed before it was ready")

    def go(self) -> None:
        """Every worker starts writing (at a rate) and forwarding now."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def wait(self) -> list[dict[str, Any]]:
        """Each worker's report once it delivered all its sites' events (blocks)."""
        reports = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = _line(proc.stdout)
            if proc.wait() != 0 or not line.startswith("done "):
                raise TelemetryError(f"a fleet worker failed: {line}")
            reports.append(json.loads(line.removeprefix("done ")))
        return reports

    def stop(self) -> None:
        """End workers still running (an interrupted benchmark)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
