"""A simulated fleet: N sites, each writing a real hash-chained journal and forwarding it.

Each site replays a recorded batch journal (e.g. a smoke run on the twin) into
its own new journal through ``twin.journal.Journal`` (new chain, new wall
times), at a given event rate, while a ``Forwarder`` per site tails that
journal and publishes it with the site's own credentials: the same code path as
a real site, many sites on one real-time loop. Used by ``poc-twin control-site
simulate-fleet`` and benchmarks/fleet_rate.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.clock import wall_monotonic
from twin.journal import Journal
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL

__all__ = ["FleetSite", "load_events", "run_fleet", "write_journal"]


@dataclass(frozen=True)
class FleetSite:
    """One simulated site: its name, broker URL and journal path."""

    site: str
    url: str
    journal: Path


def load_events(source: Path) -> list[tuple[float, str, str, dict[str, Any]]]:
    """(batch_time, kind, source, data) of a recorded journal, to be replayed."""
    db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT batch_time, kind, source, data FROM events ORDER BY seq")
        return [(bt, kind, src, json.loads(data)) for bt, kind, src, data in rows]
    finally:
        db.close()


async def write_journal(
    path: Path, batch_id: str, events: list[tuple[float, str, str, dict[str, Any]]], rate: float
) -> None:
    """Replay ``events`` into a new journal at ``rate`` events/s (0: as fast as possible)."""
    clock = {"t": 0.0}
    journal = Journal(path, lambda: clock["t"])
    start = wall_monotonic()
    try:
        for i, (bt, kind, src, data) in enumerate(events):
            clock["t"] = bt
            if kind == "batch_started":
                data = {**data, "batch_id": batch_id}
            journal.append(kind, src, data, durable=False)
            if rate and i % 20 == 19:
                journal.commit()
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - wall_monotonic()))
        journal.commit()
    finally:
        journal.close()


async def run_fleet(
    sites: list[FleetSite],
    events: list[tuple[float, str, str, dict[str, Any]]],
    *,
    rate: float = 0.0,
    poll_s: float = 0.05,
) -> float:
    """Write and forward every site's journal; seconds until every forwarder delivered all."""
    start = wall_monotonic()
    forwarders = [Forwarder(s.journal, BrokerURL.parse(s.url), poll_s=poll_s) for s in sites]
    writers = [
        write_journal(s.journal, f"{s.site}-batch", events, rate)
        for s in sites
        if not s.journal.exists()
    ]
    await asyncio.gather(*writers, *(f.run(until_ended=True) for f in forwarders))
    return wall_monotonic() - start
