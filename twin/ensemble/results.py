"""An ensemble's results file: what was asked, and each batch's outcome as it arrives.

SQLite, one row per finished batch, committed at once: a killed ``whatif`` loses
at most the batches that were running, and the same command continues with the
batches not yet in the file. The file remembers its ensemble's definition (recipe
text, parameters, bench, variations, seed); a different ensemble is refused
rather than mixed in. More batches may be asked of the same ensemble later: batch
*i* is the same batch whatever N is.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twin.errors import PocTwinError

__all__ = ["EnsembleMismatch", "ResultsFile"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ensemble (id INTEGER PRIMARY KEY CHECK (id = 1), definition TEXT);
CREATE TABLE IF NOT EXISTS members (
    idx INTEGER PRIMARY KEY, plan TEXT NOT NULL, outcome TEXT NOT NULL
);
"""


class EnsembleMismatch(PocTwinError):
    """The results file holds another ensemble."""


class ResultsFile:
    """The results of one ensemble, kept as they come."""

    def __init__(self, path: Path | str, definition: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        wanted = json.dumps(definition, sort_keys=True)
        row = self._db.execute("SELECT definition FROM ensemble").fetchone()
        if row is None:
            self._db.execute("INSERT INTO ensemble VALUES (1, ?)", (wanted,))
        elif row[0] != wanted:
            held = json.loads(row[0])
            differs = sorted(
                k
                for k in set(held) | set(definition)
                if json.dumps(held.get(k), sort_keys=True)
                != json.dumps(definition.get(k), sort_keys=True)
            )
            self._db.close()
            raise EnsembleMismatch(
                f"{self.path} holds the results of another ensemble (differs in: "
                f"{', '.join(differs)}); give a new --results file to start this one"
            )

    def done(self) -> set[int]:
        """Indices of the batches already in the file."""
        return {i for (i,) in self._db.execute("SELECT idx FROM members")}

    def add(self, result: dict[str, Any]) -> None:
        """Keep one batch's result (committed before returning)."""
        self._db.execute(
            "INSERT OR REPLACE INTO members VALUES (?, ?, ?)",
            (
                int(result["plan"]["index"]),
                json.dumps(result["plan"], sort_keys=True),
                json.dumps(result["outcome"], sort_keys=True),
            ),
        )

    def results(self, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every kept result in batch order (the first ``limit`` batches if given)."""
        query = "SELECT plan, outcome FROM members"
        args: tuple[int, ...] = ()
        if limit is not None:
            query += " WHERE idx < ?"
            args = (limit,)
        for plan, outcome in self._db.execute(query + " ORDER BY idx", args):
            yield {"plan": json.loads(plan), "outcome": json.loads(outcome)}

    def close(self) -> None:
        self._db.close()
