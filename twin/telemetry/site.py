"""The site's own record of what the control site asked of it, and the suspension check.

A batch journal belongs to one batch, so a request that is about the whole
site (suspend, reinstate) is recorded here, in ``site-control.sqlite`` next to
the journals: who asked, why, when, and the request id (idempotent). Holds on a
batch are recorded by the batch itself, as operator commands, through its inbox.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.clock import wall_now
from twin.words import escaped

__all__ = ["SiteRecord", "Suspension"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS control_requests (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT UNIQUE,
    received_at TEXT NOT NULL,
    site        TEXT NOT NULL,
    action      TEXT NOT NULL,
    operator    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    outcome     TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Suspension:
    """Whether a site may start batches, and who decided it and why."""

    suspended: bool
    operator: str = ""
    reason: str = ""
    at: str = ""

    @classmethod
    def from_payload(cls, body: dict[str, Any]) -> Suspension:
        # Shown in run's refusal on the site's terminal: control characters escaped.
        return cls(
            bool(body.get("suspended")),
            escaped(body.get("operator", ""), 100),
            escaped(body.get("reason", ""), 1000),
            escaped(body.get("at", ""), 100),
        )


class SiteRecord:
    """Append-only table of control-site requests received by this site."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def beside(cls, journal_path: Path | str) -> SiteRecord:
        """The site record in the directory of a batch journal."""
        return cls(Path(journal_path).resolve().parent / "site-control.sqlite")

    def record(
        self, site: str, action: str, operator: str, reason: str, *, request_id: str, outcome: str
    ) -> bool:
        """Record one request; False if this request id was recorded before (a duplicate).
        A request recorded "not delivered" that comes again and is delivered is recorded so."""
        cur = self._db.execute(
            "INSERT INTO control_requests "
            "(request_id, received_at, site, action, operator, reason, outcome) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (request_id) DO UPDATE SET "
            "received_at=excluded.received_at, outcome=excluded.outcome "
            "WHERE control_requests.outcome LIKE 'not delivered%' "
            "AND excluded.outcome NOT LIKE 'not delivered%'",
            (request_id, wall_now().isoformat(), site, action, operator, reason, outcome),
        )
        return cur.rowcount == 1

    def outcome_of(self, request_id: str) -> str | None:
        """What became of a request recorded before (its outcome), None if it is new: MQTT
        may deliver a request twice, and a repeat is never acted on again."""
        row = self._db.execute(
            "SELECT outcome FROM control_requests WHERE request_id=?", (request_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def suspension(self, site: str) -> Suspension:
        """The last suspend/reinstate this site heard of (not suspended if none)."""
        row = self._db.execute(
            "SELECT action, operator, reason, received_at FROM control_requests "
            "WHERE site=? AND action IN ('suspend','reinstate') ORDER BY id DESC LIMIT 1",
            (site,),
        ).fetchone()
        if row is None:
            return Suspension(False)
        return Suspension(row[0] == "suspend", row[1], row[2], row[3])

    def requests(self) -> list[tuple[str, str, str, str, str]]:
        """(action, operator, reason, outcome, received_at), oldest first: for tests and audits."""
        return self._db.execute(
            "SELECT action, operator, reason, outcome, received_at FROM control_requests "
            "ORDER BY id"
        ).fetchall()

    def close(self) -> None:
        self._db.close()
