"""Site journals for the control-site tests: real batches, and rewrites of them.

A running batch (:func:`running_batch`) is ``poc-twin run --broker`` in a child
process, as a site runs it: its forwarder publishes its journal and carries the
control site's requests back to it.

A rewrite is what an insider with write access to the site's disk could do:
change history, recompute every hash after it, and re-sign every checkpoint
(with the site's own key if they hold it, or with another one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bedside import UNATTENDED

from twin.clock import wall_monotonic
from twin.journal import CHECKPOINT, GENESIS, event_hash
from twin.signing import SiteKey

REPO = Path(__file__).resolve().parents[2]
#: No forwarder outlives a test: it gives up offline after 45 s and waits at most 20 s for a
#: control site to acknowledge an ended batch (there is none in some tests).
QUICK = {"POC_TWIN_TELEMETRY_GIVE_UP_S": "45", "POC_TWIN_TELEMETRY_CONFIRM_S": "20"}


@dataclass(frozen=True)
class SignedBatch:
    """A smoke batch run at site-a with its site key, and that key's files."""

    journal: Path
    keys: Path
    key: SiteKey


def poc_twin(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process (no forwarder outlives a test)."""
    env = {**os.environ, **QUICK}
    code = "from twin.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


@contextlib.asynccontextmanager
async def running_batch(
    recipe: str | Path, journal: Path, batch_id: str, broker_url: str, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``poc-twin run RECIPE --broker URL`` in a child process (``env`` added to its
    environment); killed on the way out if the test has not ended it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from twin.cli import main; main()",
        "run",
        str(recipe),
        *("--journal", str(journal), "--batch-id", batch_id, "-q", "--broker", broker_url),
        *UNATTENDED,  # a product recipe's identity, scanned by the twin's person at the bag
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **QUICK, **env},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_until(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    """Until ``predicate()`` is true (another process must act first), or fail."""
    deadline = wall_monotonic() + timeout
    while not predicate():
        assert wall_monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)  # real time: waiting for another process


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def rewrite(
    source: Path,
    dest: Path,
    *,
    key: SiteKey | None = None,
    edit_seq: int | None = None,
    batch_id: str | None = None,
) -> None:
    """A copy of ``source`` with event ``edit_seq`` changed (and/or a new batch id), the
    chain recomputed from there on and every checkpoint re-signed with ``key``."""
    shutil.copy(source, dest)
    db = sqlite3.connect(dest)
    prev = GENESIS
    rows = db.execute(
        "SELECT seq, batch_time, wall_time, kind, source, data FROM events ORDER BY seq"
    ).fetchall()
    for seq, bt, wt, kind, src, data in rows:
        body = json.loads(data)
        if seq == edit_seq:
            body["edited"] = True
        if kind == "batch_started" and batch_id is not None:
            body["batch_id"] = batch_id
        if kind == CHECKPOINT and key is not None:
            body = key.checkpoint(seq - 1, prev)
        data = _canonical(body)
        digest = event_hash(prev, seq, bt, wt, kind, src, data)
        db.execute(
            "UPDATE events SET data=?, prev_hash=?, hash=? WHERE seq=?", (data, prev, digest, seq)
        )
        prev = digest
    db.commit()
    db.close()
