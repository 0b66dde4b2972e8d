"""Export a batch journal for other tools: JSON (every event, re-verifiable) or CSV.

JSON keeps each event exactly as chained (``data`` re-canonicalises to the
hashed text), so a receiving system can recompute the chain itself. CSV
``events`` is one row per event with ``data`` as JSON; CSV ``trends`` is one row
per reading time with a column per process value, for spreadsheets and SPC tools.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from twin.journal import Event, read_events, verify
from twin.report.record import flatten_values

__all__ = ["FORMATS", "export_journal"]

FORMAT_VERSION = "poc-twin-journal-export/1"
FORMATS = ("json", "csv", "trends-csv")
EVENT_FIELDS = ("seq", "batch_time", "wall_time", "kind", "source", "data", "prev_hash", "hash")


def _event_dict(e: Event) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "batch_time": e.batch_time,
        "wall_time": e.wall_time,
        "kind": e.kind,
        "source": e.source,
        "data": e.data,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def _write_json(events: list[Event], out: TextIO, verified: dict[str, Any]) -> None:
    started = next((e.data for e in events if e.kind == "batch_started"), {})
    doc = {
        "format": FORMAT_VERSION,
        "batch_id": started.get("batch_id"),
        "recipe": {k: v for k, v in (started.get("recipe") or {}).items() if k != "text"},
        "verification": verified,
        "events": [_event_dict(e) for e in events],
    }
    json.dump(doc, out, ensure_ascii=False, allow_nan=False)
    out.write("\n")


def _write_events_csv(events: Iterable[Event], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(EVENT_FIELDS)
    for e in events:
        data = json.dumps(e.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        writer.writerow(
            (e.seq, e.batch_time, e.wall_time, e.kind, e.source, data, e.prev_hash, e.hash)
        )


def _write_trends_csv(events: Iterable[Event], out: TextIO) -> None:
    """Wide table: one row per (batch time) reading instant, one column per process value."""
    rows: dict[float, dict[str, float]] = {}
    columns: dict[str, None] = {}
    for e in events:
        if e.kind != "reading" or not isinstance(e.data.get("values"), dict):
            continue
        row = rows.setdefault(e.batch_time, {})
        for key, value in flatten_values(e.data["values"]).items():
            col = f"{e.source}.{key}"
            columns.setdefault(col, None)
            row[col] = value
    writer = csv.writer(out)
    writer.writerow(("batch_time_s", *columns))
    for t in sorted(rows):
        writer.writerow((t, *(rows[t].get(c, "") for c in columns)))


def export_journal(journal: Path | str, fmt: str, out: Path | str | TextIO) -> bool:
    """Write the export; returns whether the journal verified (the export is written either way)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    result = verify(journal)
    events = list(read_events(journal))
    verified = {
        "ok": result.ok,
        "events_verified": result.events,
        "head": result.head,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
    }
    if isinstance(out, str | Path):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8", newline="") as fh:
            _dispatch(fmt, events, fh, verified)
    else:
        _dispatch(fmt, events, out, verified)
    return result.ok


def _dispatch(fmt: str, events: list[Event], out: TextIO, verified: dict[str, Any]) -> None:
    if fmt == "json":
        _write_json(events, out, verified)
    elif fmt == "csv":
        _write_events_csv(events, out)
    else:
        _write_trends_csv(events, out)
