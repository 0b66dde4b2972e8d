"""Journal throughput against raw SQLite in the same mode, and journal size per batch day.

    .venv/bin/python benchmarks/journal_rate.py [--events N] [--recipe RECIPE]

Both sides write the same rows to the same schema with WAL and synchronous=FULL and
commit at the same points; the journal also serialises JSON, hashes the chain and
tells subscribers. Two commit patterns: the one a real batch has (readings commit
with the next acted-on event, replayed from a smoke batch's journal) and the worst
case, every event committed on its own (one fsync each). The size figure runs a
recipe on the twin and divides the journal file by its batch days.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.journal import _SCHEMA, Journal, read_events  # noqa: E402
from twin.signing import generate_site_key, load_site_key  # noqa: E402

POC_TWIN = str(Path(sys.executable).with_name("poc-twin"))
Pattern = list[tuple[str, str, dict[str, Any], bool]]


def batch_pattern(directory: Path) -> Pattern:
    """The event sequence of a real smoke batch: kind, source, data, durable."""
    path = directory / "pattern.sqlite"
    subprocess.run(
        [POC_TWIN, "run", "recipes/smoke.yaml", "-q", "--journal", str(path), "--batch-id", "p"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "POC_TWIN_SITE_KEY"},
    )
    return [(e.kind, e.source, e.data, e.kind != "reading") for e in read_events(path)]


def workload(pattern: Pattern, n: int, all_durable: bool) -> Pattern:
    body = [p for p in pattern if p[0] != "batch_started"]
    out = [body[i % len(body)] for i in range(n)]
    return [(k, s, d, True) for k, s, d, _ in out] if all_durable else out


def run_journal(path: Path, events: Pattern, signer: Any = None) -> float:
    t = iter(range(10**9))
    journal = Journal(path, lambda: float(next(t)), signer=signer)
    start = time.perf_counter()
    for kind, source, data, durable in events:
        journal.append(kind, source, data, durable=durable)
    journal.close()
    return time.perf_counter() - start


def run_raw(path: Path, events: Pattern) -> float:
    """Plain INSERTs of the same rows (JSON text prepared beforehand, fixed hash strings)."""
    rows = [
        (
            i + 1,
            float(i),
            "2026-11-25T12:00:00.000000+00:00",
            k,
            s,
            json.dumps(d),
            "0" * 64,
            "f" * 64,
        )
        for i, (k, s, d, _) in enumerate(events)
    ]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(_SCHEMA)
    start = time.perf_counter()
    in_tx = False
    for row, (_, _, _, durable) in zip(rows, events, strict=True):
        if not in_tx:
            db.execute("BEGIN")
            in_tx = True
        db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", row)
        if durable:
            db.execute("COMMIT")
            in_tx = False
    if in_tx:
        db.execute("COMMIT")
    db.close()
    return time.perf_counter() - start


def compare(directory: Path, name: str, events: Pattern, signer: Any, rounds: int) -> list[str]:
    """Best of ``rounds`` for each side, alternating so both see the same disk conditions."""
    best_j = best_r = best_s = float("inf")
    for r in range(rounds):
        best_r = min(best_r, run_raw(directory / f"{name}-raw-{r}.sqlite", events))
        best_j = min(best_j, run_journal(directory / f"{name}-j-{r}.sqlite", events))
        best_s = min(best_s, run_journal(directory / f"{name}-s-{r}.sqlite", events, signer))
    n = len(events)
    commits = sum(1 for e in events if e[3])
    return [
        f"| {name} ({n:,} events, {commits:,} commits) | {n / best_r:,.0f} | {n / best_j:,.0f} "
        f"| {best_r / best_j:.0%} | {n / best_s:,.0f} ({best_r / best_s:.0%}) |"
    ]


def size_per_day(directory: Path, recipe: str) -> str:
    path = directory / "size.sqlite"
    start = time.perf_counter()
    unattended = ["--patient-id", "P-BENCH", "--bag-id", "BAG-BENCH", "--simulated-operator", "0"]
    subprocess.run(
        [
            POC_TWIN,
            "run",
            recipe,
            "--quiet",
            "--journal",
            str(path),
            "--batch-id",
            "size",
            *unattended,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    events = list(read_events(path))
    days = events[-1].batch_time / 86400
    size = path.stat().st_size + sum(
        p.stat().st_size for p in path.parent.glob(path.name + "-*") if p.exists()
    )
    return (
        f"| {recipe} | {days:.2f} | {len(events):,} | {size / 1e6:.2f} MB "
        f"| {size / days / 1e6:.2f} MB, {len(events) / days:,.0f} events | {wall:.1f} s |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--durable-events", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--recipe", default="recipes/car_t_autologous.yaml")
    ap.add_argument("--dir", default=str(ROOT / "runs"), help="on the disk journals live on")
    args = ap.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="journal-bench-") as tmp:
        directory = Path(tmp)
        signer = load_site_key(generate_site_key("bench", directory / "keys")[0])
        pattern = batch_pattern(directory)
        print("| workload | raw SQLite inserts/s | journal events/s | ratio | signed journal /s |")
        print("|---|---|---|---|---|")
        for line in compare(
            directory, "batch pattern", workload(pattern, args.events, False), signer, args.rounds
        ):
            print(line)
        for line in compare(
            directory,
            "every event committed",
            workload(pattern, args.durable_events, True),
            signer,
            args.rounds,
        ):
            print(line)
        print()
        print("| recipe | batch days | events | journal file | per batch day | wall |")
        print("|---|---|---|---|---|---|")
        print(size_per_day(directory, args.recipe))


if __name__ == "__main__":
    main()
