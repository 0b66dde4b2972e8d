"""The control site's store: every site's events, batch states and anchored chain heads.

PostgreSQL for a fleet (``postgresql://...``), a SQLite file for one machine
(``sqlite:///path`` or a bare path): one schema, one set of queries, written
with ``?`` and translated for psycopg. Ingest is idempotent by (site, batch,
seq): a duplicate event is dropped, an event that *differs* from the one stored
under its key, or that does not link to the event before it, flags the chain.
Chain heads are anchored by :mod:`twin.control_site.anchoring` (signatures
checked against the sites' registered keys). Messages refused on the way in
(:mod:`twin.control_site.messages`) go to ``quarantine``, one row per site, topic
and reason with a count, so the dashboard shows them and nothing else waits on
them. Calls are synchronous and serialised by a lock; the ingest runs them in a
thread.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from twin.clock import wall_seconds
from twin.control_site.anchoring import Anchoring
from twin.control_site.keys import SiteKeys
from twin.control_site.messages import Poison
from twin.journal import event_hash
from twin.telemetry.topics import TelemetryError

__all__ = ["BATCH_ENDED", "PROCESS_ENDED", "SENDING", "SENT", "Store", "open_store"]

#: A request's outcome while it is published, and once the broker took it (no answer yet).
SENDING, SENT = "sending", "sent"
#: A forwarder's last status for an ended batch: it takes no more requests for it.
BATCH_ENDED = "batch ended"
#: A forwarder's last status when the batch's process died under it (docs/telemetry.md).
PROCESS_ENDED = "batch process ended"

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
        signature TEXT, received_at DOUBLE PRECISION NOT NULL, key_id TEXT,
        verified INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (site, batch))""",
    """CREATE TABLE IF NOT EXISTS chain_flags (
        site TEXT NOT NULL, batch TEXT NOT NULL, seq BIGINT NOT NULL, reason TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL, PRIMARY KEY (site, batch, seq, reason))""",
    """CREATE TABLE IF NOT EXISTS sites (
        site TEXT PRIMARY KEY, suspended INTEGER NOT NULL, operator TEXT NOT NULL,
        reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS requests (
        id TEXT PRIMARY KEY, site TEXT NOT NULL, batch TEXT NOT NULL, action TEXT NOT NULL,
        operator TEXT NOT NULL, reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        site TEXT NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL, kind TEXT NOT NULL,
        excerpt TEXT NOT NULL, size BIGINT NOT NULL, count BIGINT NOT NULL,
        first_at DOUBLE PRECISION NOT NULL, last_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (site, topic, reason))""",
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

    def __init__(
        self,
        conn: Any,
        *,
        postgres: bool,
        keys: SiteKeys | None = None,
        reconnect: Callable[[], Any] | None = None,
    ) -> None:
        self._conn = conn
        self._reconnect = reconnect
        self.postgres = postgres
        self._lock = threading.Lock()
        self._contiguous: dict[tuple[str, str], int] = {}
        self._state_seq: dict[tuple[str, str], int] = {}  # seq of each batch's stored state
        self._above: dict[tuple[str, str], set[int]] = {}  # stored seqs past the contiguous
        self.anchoring = Anchoring(self._x, self._flag, keys)
        with self._lock:
            for statement in _SCHEMA:
                self._x(statement)
            self._migrate()
            self._commit()

    def _migrate(self) -> None:
        """Add the columns a store made by an older version lacks (signed heads, outcomes,
        why a batch went offline)."""
        have = self._columns("heads")
        if "key_id" not in have:
            self._x("ALTER TABLE heads ADD COLUMN key_id TEXT")
        if "verified" not in have:
            self._x("ALTER TABLE heads ADD COLUMN verified INTEGER NOT NULL DEFAULT 0")
        if "outcome" not in self._columns("requests"):
            self._x("ALTER TABLE requests ADD COLUMN outcome TEXT NOT NULL DEFAULT 'sent'")
        if "offline_why" not in self._columns("batches"):
            self._x("ALTER TABLE batches ADD COLUMN offline_why TEXT NOT NULL DEFAULT ''")

    def _columns(self, table: str) -> set[str]:
        if self.postgres:
            sql = "SELECT column_name FROM information_schema.columns WHERE table_name=?"
            return {r[0] for r in self._x(sql, (table,)).fetchall()}
        return {r[1] for r in self._x(f"PRAGMA table_info({table})").fetchall()}

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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Under the lock; committed, or rolled back so the connection stays usable."""
        with self._lock:
            try:
                yield
                self._commit()
            except Exception:
                self._recover()
                raise

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only query for the dashboard."""
        with self._transaction():
            return list(self._x(sql, params).fetchall())

    def close(self) -> None:
        """Close the connection once no query or ingest holds it: closing under a
        transaction another thread runs (a control site stopped mid-ingest) crashed the
        process in SQLite's C code (a segfault in a CI run)."""
        with self._lock:
            self._conn.close()

    def writable(self) -> bool:
        """Whether the database takes a write now: tells an outage from a row it refuses.

        A zero-row UPDATE needs the write lock (SQLite) and a live connection
        (PostgreSQL) but changes nothing. A PostgreSQL connection that is gone
        (server restarted) is replaced, so the next retry can succeed.
        """
        with self._lock:
            try:
                self._x("UPDATE quarantine SET count=count WHERE 1=0")
                self._conn.rollback()
                return True
            except Exception:  # the driver's own error types (sqlite3, psycopg)
                self._recover()
                return False

    def _recover(self) -> None:
        with contextlib.suppress(Exception):  # a closed connection cannot roll back either
            self._conn.rollback()
        lost = getattr(self._conn, "closed", False) or getattr(self._conn, "broken", False)
        if self._reconnect is not None and lost:
            with contextlib.suppress(Exception):  # still down: the next writable() tries again
                self._conn = self._reconnect()

    # -- quarantine -----------------------------------------------------------------

    def quarantine(self, items: list[Poison]) -> None:
        """Record refused messages: one row per (site, topic, reason), counted, last excerpt."""
        now = wall_seconds()
        rows = [(p.site, p.topic, p.reason, p.kind, p.excerpt, p.size, now, now) for p in items]
        with self._transaction():
            self._many(
                "INSERT INTO quarantine VALUES (?,?,?,?,?,?,1,?,?) "
                "ON CONFLICT (site, topic, reason) DO UPDATE SET "
                "count=quarantine.count+1, excerpt=excluded.excerpt, size=excluded.size, "
                "last_at=excluded.last_at",
                rows,
            )

    # -- ingest -------------------------------------------------------------------

    def ingest(self, messages: list[tuple[str, str, str, str, dict[str, Any]]]) -> set[tuple]:
        """Store (site, unit, batch, kind, body) messages; return the batches touched."""
        now = wall_seconds()
        touched: set[tuple[str, str, str]] = set()
        events: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        heads: list[tuple[str, str, dict[str, Any]]] = []
        with self._lock:
            try:
                self._ingest(messages, now, touched, events, heads)
            except Exception:
                self._conn.rollback()  # nothing of a failed flush stays; it is retried whole
                raise
        return touched

    def _ingest(
        self,
        messages: list[tuple[str, str, str, str, dict[str, Any]]],
        now: float,
        touched: set[tuple[str, str, str]],
        events: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]],
        heads: list[tuple[str, str, dict[str, Any]]],
    ) -> None:
        """One flush in one transaction (under the lock), in few round trips.

        Per flush, not per batch: one query for the stored hashes the new events
        touch, one insert of every new event, one upsert per batch's latest state.
        (Per batch, a flush at 100 live sites made 300 round trips to PostgreSQL.)
        """
        states: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        statuses = []
        answers = []
        for site, unit, batch, kind, body in messages:
            if kind == "event":
                events.setdefault((site, batch), []).append((unit, body))
                touched.add((site, unit, batch))
            elif kind == "state":
                held = states.get((site, batch))
                if held is None or body["seq"] >= held[1]["seq"]:  # only the latest counts
                    states[(site, batch)] = (unit, body)
            elif kind == "head":
                heads.append((site, batch, body))
            elif kind == "status" and "probe" not in body and batch != "-":
                online = bool(body.get("online"))
                why = "" if online else str(body.get("why", ""))
                if why == BATCH_ENDED and body.get("answered") is not True:
                    # A site that does not answer (older code, or a broker refusing its
                    # answers): its requests stay "sent", never inferred unreached.
                    why = f"{BATCH_ENDED} (no answers)"
                statuses.append((1 if online else 0, why, now, site, batch))
            elif kind == "answer":
                answers.append((_answered(body), str(body["id"]), site, batch))
        if states:
            self._upsert_states(
                [
                    (site, batch, unit, json.dumps(body), now)
                    for (site, batch), (unit, body) in states.items()
                ]
            )
        # A site's answer is what became of the request: it replaces "sent" (or "sending",
        # or a guess), before a "batch ended" status of the same flush is read.
        for answer in answers:
            self._x("UPDATE requests SET outcome=? WHERE id=? AND site=? AND batch=?", answer)
        for status in statuses:
            self._x(
                "UPDATE batches SET online=?, offline_why=?, updated_at=? WHERE site=? AND batch=?",
                status,
            )
            if status[1] == BATCH_ENDED:
                self._unreached(status[3], status[4])
        known = self._known(events)
        rows = []
        for (site, batch), items in events.items():
            rows += self._check_events(site, batch, items, known.get((site, batch), {}), now)
        if rows:
            self._many(
                "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows
            )
        # Heads after the events they name (they came after them on the site's connection).
        for site, batch, body in heads:
            self.anchoring.head(site, batch, body, now)
        for site, batch in events.keys() & self.anchoring.pending.keys():
            self.anchoring.settle(site, batch, now)
        self._commit()
        for row in rows:  # only once committed: the ack must never claim more than is stored
            self._above.setdefault((row[0], row[2]), set()).add(row[3])

    def _known(
        self, events: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]]
    ) -> dict[tuple[str, str], dict[int, str]]:
        """Stored hashes of the seqs a flush's events name (and the one before each run)."""
        known: dict[tuple[str, str], dict[int, str]] = {}
        ranges = []
        for (site, batch), items in events.items():
            seqs = [int(body["seq"]) for _, body in items]
            ranges.append((site, batch, min(seqs) - 1, max(seqs)))
        for i in range(0, len(ranges), 200):
            part = ranges[i : i + 200]
            where = " OR ".join(["(site=? AND batch=? AND seq BETWEEN ? AND ?)"] * len(part))
            params = [value for r in part for value in r]
            for site, batch, seq, digest in self._x(
                f"SELECT site, batch, seq, hash FROM events WHERE {where}", params
            ).fetchall():
                known.setdefault((site, batch), {})[int(seq)] = digest
        return known

    def _check_events(
        self,
        site: str,
        batch: str,
        items: list[tuple[str, dict[str, Any]]],
        known: dict[int, str],
        now: float,
    ) -> list[tuple[Any, ...]]:
        """The rows to insert: new events whose hash checks; flags for the others."""
        items.sort(key=lambda item: int(item[1]["seq"]))
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
                        "arrived again with different content: the site's journal was rewritten",
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
        return rows

    def _flag(self, site: str, batch: str, seq: int, reason: str, now: float) -> None:
        self._x(
            "INSERT INTO chain_flags VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            (site, batch, seq, reason, now),
        )

    def _upsert_states(self, rows: list[tuple[Any, ...]]) -> None:
        """Each batch's latest retained state (site, batch, unit, state JSON, now); a state
        older than the one stored (a lower ``seq``: a broker that restarted from its
        persistence file hands out stale retained messages, anyone may publish one) is not
        taken. Before, the last received won: an ended batch showed Held or Running again."""
        rows = [row for row in rows if self._newer_state(row[0], row[1], row[3])]
        if not rows:
            return
        self._many(
            "INSERT INTO batches (site, batch, unit, state, online, updated_at) "
            "VALUES (?,?,?,?,1,?) ON CONFLICT (site, batch) DO UPDATE SET "
            "unit=excluded.unit, state=excluded.state, updated_at=excluded.updated_at",
            rows,
        )

    def _newer_state(self, site: str, batch: str, text: str) -> bool:
        """Whether a state message (JSON) is at least as new as the batch's stored one;
        the stored seq is read once per batch, then kept (under the lock)."""
        key, seq = (site, batch), int(json.loads(text)["seq"])
        stored = self._state_seq.get(key)
        if stored is None:
            row = self._x("SELECT state FROM batches WHERE site=? AND batch=?", key).fetchone()
            stored = int(json.loads(row[0]).get("seq", 0)) if row is not None else 0
        if seq < stored:
            self._state_seq[key] = stored
            return False
        self._state_seq[key] = seq
        return True

    def contiguous(self, site: str, batch: str) -> int:
        """Highest seq up to which every event of the batch is stored: the control ack.

        Asked after every flush for every batch it touched: kept in memory and
        advanced by what was inserted; the store is read once per batch (after a
        restart), not once per flush.
        """
        key = (site, batch)
        if key not in self._contiguous:
            with self._lock:
                rows = self._x(
                    "SELECT seq FROM events WHERE site=? AND batch=? ORDER BY seq", key
                ).fetchall()
                self._commit()
            c = 0
            for (seq,) in rows:
                if seq != c + 1:
                    break
                c = seq
            self._contiguous[key] = c
            self._above[key] = {int(seq) for (seq,) in rows if seq > c}
        c, above = self._contiguous[key], self._above.get(key, set())
        while c + 1 in above:
            c += 1
            above.discard(c)
        self._contiguous[key] = c
        return c

    # -- supervision ----------------------------------------------------------------

    def site_known(self, site: str) -> bool:
        """A site that sent a batch, was ever suspended, or has a registered key."""
        keys = self.anchoring.keys
        if keys is not None and keys.key_id(site) is not None:
            return True
        return bool(
            self.query(
                "SELECT 1 FROM batches WHERE site=? UNION SELECT 1 FROM sites WHERE site=?",
                (site, site),
            )
        )

    def batch_status(self, site: str, batch: str) -> tuple[str, bool] | None:
        """(unit, ended) of a batch the control site has heard of, else None."""
        rows = self.query("SELECT unit, state FROM batches WHERE site=? AND batch=?", (site, batch))
        if not rows:
            return None
        state = json.loads(rows[0][1])
        return str(rows[0][0]), bool(state.get("ended"))

    def batch_state(self, site: str, batch: str) -> str | None:
        """The procedural state of the batch's latest retained state message."""
        rows = self.query("SELECT state FROM batches WHERE site=? AND batch=?", (site, batch))
        return str(json.loads(rows[0][0]).get("state")) if rows else None

    def batch_states(self, site: str, batch: str) -> tuple[str, str]:
        """(procedural state, state as the batch words it: "Running (unit:x Held)") of the
        batch's latest retained state message; ("", "") for a batch not held."""
        rows = self.query("SELECT state FROM batches WHERE site=? AND batch=?", (site, batch))
        if not rows:
            return "", ""
        message = json.loads(rows[0][0])
        state = str(message.get("state", ""))
        return state, str(message.get("status") or state)

    def alarm_acknowledged_by(self, site: str, batch: str, seq: int) -> str | None:
        """Who acknowledged the batch's alarm event ``seq`` ("" nobody yet); None if that
        event is not an alarm of the batch the control site holds."""
        if not self.query(
            "SELECT 1 FROM events WHERE site=? AND batch=? AND seq=? AND kind='alarm'",
            (site, batch, seq),
        ):
            return None
        acks = self.query(
            "SELECT data FROM events WHERE site=? AND batch=? AND kind='alarm_ack' ORDER BY seq",
            (site, batch),
        )
        for (data,) in acks:
            ack = json.loads(data)
            if ack.get("alarm_seq") == seq:
                return str(ack.get("user") or "?")
        return ""

    def site_suspended(self, site: str) -> bool:
        """Whether the site's last suspension request that was sent suspended it."""
        rows = self.query("SELECT suspended FROM sites WHERE site=?", (site,))
        return bool(rows and rows[0][0])

    def record_request(
        self, rid: str, site: str, batch: str, action: str, who: str, why: str, outcome: str
    ) -> None:
        """The control site's own audit of what its users asked of sites, refused ones too."""
        with self._transaction():
            self._x(
                "INSERT INTO requests (id, site, batch, action, operator, reason, at, outcome) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (rid, site, batch, action, who, why, wall_seconds(), outcome),
            )

    def settle_request(self, rid: str, outcome: str) -> None:
        """A request's outcome once it was sent (or not); a sent suspension updates the site.

        Only a request still "sending" is settled: the site's answer may have come first.
        A request sent to a batch whose forwarder already said "batch ended" reached
        nobody: it is recorded so (``_unreached``), not "sent"."""
        with self._transaction():
            sql = "UPDATE requests SET outcome=? WHERE id=? AND outcome=?"
            self._x(sql, (outcome, rid, SENDING))
            row = self._x(
                "SELECT site, action, operator, reason, batch FROM requests WHERE id=?", (rid,)
            ).fetchone()
            if row is not None and row[4] != "-":
                gone = self._x(
                    "SELECT 1 FROM batches WHERE site=? AND batch=? AND online=0 AND offline_why=?",
                    (row[0], row[4], BATCH_ENDED),
                ).fetchone()
                if gone is not None:
                    self._unreached(row[0], row[4])
            if outcome == "sent" and row is not None and row[1] in ("suspend", "reinstate"):
                site, action, who, why, _ = row
                self._x(
                    "INSERT INTO sites VALUES (?,?,?,?,?) ON CONFLICT (site) DO UPDATE SET "
                    "suspended=excluded.suspended, operator=excluded.operator, "
                    "reason=excluded.reason, at=excluded.at",
                    (site, 1 if action == "suspend" else 0, who, why, wall_seconds()),
                )

    def _unreached(self, site: str, batch: str) -> None:
        """Requests to a batch its site's forwarder left unanswered as it said "batch ended":
        they came after it stopped taking requests (it answers every one it took first)."""
        rows = self._x("SELECT state FROM batches WHERE site=? AND batch=?", (site, batch))
        row = rows.fetchone()
        state = str(json.loads(row[0]).get("state", "?")) if row is not None else "?"
        self._x(
            "UPDATE requests SET outcome=? WHERE site=? AND batch=? AND outcome IN (?,?)",
            (
                f"not delivered: batch {batch} had ended {state} and its site took no more "
                "requests for it: nothing was journalled",
                site,
                batch,
                SENDING,
                SENT,
            ),
        )


def _answered(body: dict[str, Any]) -> str:
    """A site's ``answer`` as the audit's outcome: "refused at the site: <why>"."""
    status, why, state = body["status"], body.get("outcome", ""), body.get("state", "")
    if status == "accepted":
        return f"accepted at the site ({state})" if state else "accepted at the site"
    return f"{status} at the site: {why}" if why else f"{status} at the site"


def open_store(url: str, keys: SiteKeys | None = None) -> Store:
    """``postgresql://user:pass@host:port/db``, ``sqlite:///path.sqlite`` or a bare path; one
    that cannot be opened is a TelemetryError naming it (without its password)."""
    shown = url.split("@")[-1]
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        try:
            conn = psycopg.connect(url)
        except psycopg.Error as exc:
            raise TelemetryError(f"--db {shown}: cannot connect: {exc}".strip()) from None
        return Store(conn, postgres=True, keys=keys, reconnect=lambda: psycopg.connect(url))
    path = url.removeprefix("sqlite:///")  # sqlite:///rel.sqlite, sqlite:////abs.sqlite
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return Store(conn, postgres=False, keys=keys)
    except sqlite3.Error as exc:
        raise TelemetryError(f"--db {shown}: cannot open the store: {exc}") from None
