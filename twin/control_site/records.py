"""The batch record of a batch, built by the control site from the events it stored.

The record is :mod:`twin.report`'s, the one QA releases from, built from a journal.
The control site holds each event exactly as the site's journal wrote it (hash and
link included), so it writes them into a journal file of its own, in sequence order,
and builds the record from that: the same checks run (the chain verifies, or the
record says in red where it breaks: a gap the site has not resent yet shows as a
missing event), the site's registered key checks its signed checkpoints, and the
control site's anchored head is checked to be in the chain. Nothing is recomputed
or re-signed on the way.
"""

from __future__ import annotations

import sqlite3
import tempfile
from html import escape
from pathlib import Path

from twin.control_site.store import Store
from twin.report import build_record, render_html
from twin.signing import Anchor

__all__ = ["record_page"]

_SCHEMA = (
    "CREATE TABLE events (seq INTEGER PRIMARY KEY, batch_time REAL NOT NULL, "
    "wall_time TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, data TEXT NOT NULL, "
    "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
)
#: Rows copied per query (a ten-day batch holds about 25,000 events).
_CHUNK = 10_000


def _copy_events(store: Store, site: str, batch: str, path: Path) -> int:
    """The stored events of the batch, as its journal holds them, into a journal file."""
    db = sqlite3.connect(path)
    copied, after = 0, 0
    try:
        db.execute(_SCHEMA)
        while True:
            rows = store.query(
                "SELECT seq, batch_time, wall_time, kind, source, data, prev_hash, hash "
                "FROM events WHERE site=? AND batch=? AND seq>? ORDER BY seq LIMIT ?",
                (site, batch, after, _CHUNK),
            )
            if not rows:
                break
            db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", rows)
            copied += len(rows)
            after = int(rows[-1][0])
        db.commit()
    finally:
        db.close()
    return copied


def _anchors(store: Store, site: str, batch: str) -> list[Anchor]:
    rows = store.query(
        "SELECT seq, hash, signature FROM heads WHERE site=? AND batch=? AND verified=1",
        (site, batch),
    )
    return [Anchor(int(seq), str(digest), signature) for seq, digest, signature in rows]


def record_page(store: Store, site: str, batch: str) -> str | None:
    """The batch record as one HTML page, or None if the control site holds no event of it."""
    keys = store.anchoring.keys
    public = keys.public_key(site) if keys is not None else None
    with tempfile.TemporaryDirectory(prefix="poc-twin-record-") as tmp:
        journal = Path(tmp) / f"{batch}.sqlite"
        count = _copy_events(store, site, batch, journal)
        if count == 0:
            return None
        record = build_record(journal, public, _anchors(store, site, batch))
        page = render_html(record)
    key = "checked with the site's registered key" if public is not None else "no registered key"
    note = (
        f"<p id='record-source' style='font-size:12px;color:#555'>Built by the control site "
        f"from the {count} events of batch {escape(batch)} it holds from site {escape(site)} "
        f"({key}). <a href='/batch/{escape(site)}/{escape(batch)}'>Back to the batch</a></p>"
    )
    return page.replace("<body>", f"<body>{note}", 1)
