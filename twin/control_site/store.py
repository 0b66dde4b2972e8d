"""The control site's store: every site's events, batch states and anchored chain heads.

PostgreSQL for a fleet (``postgresql://...``), a SQLite file for one machine
(``sqlite:///path`` or a bare path): one schema, one set of queries, written
with ``?`` and translated for psycopg. Ingest is idempotent by (site, batch,
seq): a duplicate event is dropped, an event that *differs* from the one stored
under its key, or that does not link to the event before it, flags the chain.
Calls are synchronous and serialised by a lock; the ingest runs them in a thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twin.clock import wall_seconds
from twin.journal import event_hash

__all__ = ["Store", "open_store"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS events (
        site TEXT NOT NULL, unit TEXT NOT NULL, batch TEXT NOT NULL, seq BIGINT NOT NULL,
        batch_time DOUBLE PRECISION NOT NULL, wall_time TEXT NOT NULL, kind TEXT NOT NULL,
        source TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (site, batch, seq))""",
    """CREATE TABLE IF NOT EXISTS batches (
        site TEXT NOT NULL, batch TEXT NOT NULL, unit TEXT NOT NULL, state TEXT NOT NULL,
        online INTEGER NOT NULL DEFAULT 1, updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (site, batch))""",
    """CREATE TABLE IF NOT EXISTS heads (
        site TEXT NOT NULL, batch TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL,
        signature TEXT, received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (site, batch))""",
    """CREATE TABLE IF NOT EXISTS chain_flags (
        site TEXT NOT NULL, batch TEXT NOT NULL, seq BIGINT NOT NULL, reason TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL, PRIMARY KEY (site, batch, seq))""",
    """CREATE TABLE IF NOT EXISTS sites (
        site TEXT PRIMARY KEY, suspended INTEGER NOT NULL, operator TEXT NOT NULL,
        reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS requests (
        id TEXT PRIMARY KEY, site TEXT NOT NULL, batch TEXT NOT NULL, action TEXT NOT NULL,
        operator TEXT NOT NULL, reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_kind ON events (site, batch, kind, seq)",
]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Flag:
    """A chain problem the dashboard shows until someone looks."""

    site: str
    batch: str
    seq: int
    reason: str


class Store:
    """One DB-API connection (sqlite3 or psycopg) behind the control site's queries."""

    def __init__(self, conn: Any, *, postgres: bool) -> None:
        self._conn = conn
        self.postgres = postgres
        self._lock = threading.Lock()
        self._contiguous: dict[tuple[str, str], int] = {}
        with self._lock:
            for statement in _SCHEMA:
                self._x(statement)
            self._commit()

    # -- plumbing -----------------------------------------------------------------

    def _x(self, sql: str, params: Iterable[Any] = ()) -> Any:
        if self.postgres:
            sql = sql.replace("?", "%s")
        cur = self._conn.cursor()
        cur.execute(sql, tuple(params))
        return cur

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.postgres:
            sql = sql.replace("?", "%s")
        self._conn.cursor().executemany(sql, rows)

    def _commit(self) -> None:
        self._conn.commit()

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only query for the dashboard."""
        with self._lock:
            rows = self._x(sql, params).fetchall()
            self._commit()
            return list(rows)

    def close(self) -> None:
        self._conn.close()

    # -- ingest -------------------------------------------------------------------

    def ingest(self, messages: list[tuple[str, str, str, str, dict[str, Any]]]) -> set[tuple]:
        """Store (site, unit, batch, kind, body) messages; return the batches touched."""
        now = wall_seconds()
        touched: set[tuple[str, str, str]] = set()
        events: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        with self._lock:
            for site, unit, batch, kind, body in messages:
                if kind == "event":
                    events.setdefault((site, batch), []).append((unit, body))
                    touched.add((site, unit, batch))
                elif kind == "state":
                    self._upsert_state(site, unit, batch, body, now)
                elif kind == "head":
                    self._anchor(site, batch, body, now)
                elif kind == "status" and "probe" not in body and batch != "-":
                    self._x(
                        "UPDATE batches SET online=?, updated_at=? WHERE site=? AND batch=?",
                        (1 if body.get("online") else 0, now, site, batch),
                    )
            for (site, batch), items in events.items():
                self._insert_events(site, batch, items, now)
            self._commit()
        return touched

    def _insert_events(
        self, site: str, batch: str, items: list[tuple[str, dict[str, Any]]], now: float
    ) -> None:
        items.sort(key=lambda item: int(item[1]["seq"]))
        lo, hi = int(items[0][1]["seq"]) - 1, int(items[-1][1]["seq"])
        known = dict(
            self._x(
                "SELECT seq, hash FROM events WHERE site=? AND batch=? AND seq BETWEEN ? AND ?",
                (site, batch, lo, hi),
            ).fetchall()
        )
        rows = []
        for unit, e in items:
            seq = int(e["seq"])
            data = _canonical(e["data"])
            digest = event_hash(
                e["prev_hash"], seq, e["batch_time"], e["wall_time"], e["kind"], e["source"], data
            )
            if digest != e["hash"]:
                self._flag(site, batch, seq, "event content does not match its hash", now)
                continue
            if seq in known:
                if known[seq] != e["hash"]:
                    self._flag(
                        site,
                        batch,
                        seq,
                        "the site's journal no longer extends its anchored head: event rewritten",
                        now,
                    )
                continue
            before = known.get(seq - 1)
            if before is not None and before != e["prev_hash"]:
                self._flag(site, batch, seq, "does not link to the event before it", now)
            known[seq] = e["hash"]
            rows.append(
                (
                    site,
                    unit,
                    batch,
                    seq,
                    e["batch_time"],
                    e["wall_time"],
                    e["kind"],
                    e["source"],
                    data,
                    e["prev_hash"],
                    e["hash"],
                    now,
                )
            )
        if rows:
            self._many(
                "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows
            )

    def _flag(self, site: str, batch: str, seq: int, reason: str, now: float) -> None:
        self._x(
            "INSERT INTO chain_flags VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            (site, batch, seq, reason, now),
        )

    def _upsert_state(self, site: str, unit: str, batch: str, body: dict, now: float) -> None:
        self._x(
            "INSERT INTO batches (site, batch, unit, state, online, updated_at) "
            "VALUES (?,?,?,?,1,?) ON CONFLICT (site, batch) DO UPDATE SET "
            "unit=excluded.unit, state=excluded.state, updated_at=excluded.updated_at",
            (site, batch, unit, json.dumps(body), now),
        )

    def _anchor(self, site: str, batch: str, body: dict[str, Any], now: float) -> None:
        """Keep the newest head that extends the anchored one; flag one that does not."""
        seq, digest = int(body.get("seq", 0)), str(body.get("hash", ""))
        old = self._x("SELECT seq, hash FROM heads WHERE site=? AND batch=?", (site, batch))
        anchored = old.fetchone()
        if anchored is not None:
            a_seq, a_hash = int(anchored[0]), anchored[1]
            at_anchor = self._event_hash(site, batch, a_seq)
            if seq < a_seq or (seq == a_seq and digest != a_hash):
                self._flag(
                    site,
                    batch,
                    a_seq,
                    "the site's journal no longer extends its "
                    f"anchored head (new head at event {seq})",
                    now,
                )
                return
            if at_anchor is not None and at_anchor != a_hash:
                self._flag(site, batch, a_seq, "anchored head no longer matches event", now)
                return
        at_head = self._event_hash(site, batch, seq)
        if at_head is not None and at_head != digest:
            self._flag(site, batch, seq, "head does not match the event it names", now)
            return
        self._x(
            "INSERT INTO heads VALUES (?,?,?,?,?,?) ON CONFLICT (site, batch) DO UPDATE SET "
            "seq=excluded.seq, hash=excluded.hash, signature=excluded.signature, "
            "received_at=excluded.received_at",
            (site, batch, seq, digest, body.get("signature"), now),
        )

    def _event_hash(self, site: str, batch: str, seq: int) -> str | None:
        row = self._x(
            "SELECT hash FROM events WHERE site=? AND batch=? AND seq=?", (site, batch, seq)
        ).fetchone()
        return None if row is None else str(row[0])

    def contiguous(self, site: str, batch: str) -> int:
        """Highest seq up to which every event of the batch is stored: the control ack."""
        with self._lock:
            c = self._contiguous.get((site, batch), 0)
            rows = self._x(
                "SELECT seq FROM events WHERE site=? AND batch=? AND seq > ? ORDER BY seq LIMIT ?",
                (site, batch, c, 100000),
            ).fetchall()
            self._commit()
        for (seq,) in rows:
            if seq != c + 1:
                break
            c = seq
        self._contiguous[(site, batch)] = c
        return c

    # -- supervision ----------------------------------------------------------------

    def record_request(self, rid: str, site: str, batch: str, action: str, who: str, why: str):
        """The control site's own audit of what its users asked of sites."""
        with self._lock:
            now = wall_seconds()
            self._x(
                "INSERT INTO requests VALUES (?,?,?,?,?,?,?)",
                (rid, site, batch, action, who, why, now),
            )
            if action in ("suspend", "reinstate"):
                self._x(
                    "INSERT INTO sites VALUES (?,?,?,?,?) ON CONFLICT (site) DO UPDATE SET "
                    "suspended=excluded.suspended, operator=excluded.operator, "
                    "reason=excluded.reason, at=excluded.at",
                    (site, 1 if action == "suspend" else 0, who, why, now),
                )
            self._commit()


def open_store(url: str) -> Store:
    """``postgresql://user:pass@host:port/db``, ``sqlite:///path.sqlite`` or a bare path."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        return Store(psycopg.connect(url), postgres=True)
    path = url.removeprefix("sqlite:///")  # sqlite:///rel.sqlite, sqlite:////abs.sqlite
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return Store(conn, postgres=False)
