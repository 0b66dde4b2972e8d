"""Where the 10-day CAR-T batch spends its time on the twin: models, protocol I/O, engine, journal.

    .venv/bin/python benchmarks/twin_breakdown.py [--rounds N]

First in wall seconds, by taking parts away (each run in its own process, the
kinds alternating for ``--rounds`` rounds, medians printed, so a shared machine's
swings hit all alike):

- full: the shipped recipe on benches/sim.yaml, as ``poc-twin run`` runs it;
- no journal file: the same batch with its journal kept in memory as an ensemble's is
  (no SQLite, no hash chain; each event still encoded and heard by its subscribers; an
  ablation for this measurement only: nothing is recorded). Until 2026-12-06 this made
  ``Journal.append`` do nothing, which left the engine waiting on events never made;
- polls only: no engine and no journal: the drivers read the bioreactor (one
  Modbus TCP read) and the gas dispenser (four Alicat polls over the pty) once a
  simulated minute for the batch's 10 days, against the same twin servers and plant;
- bare plant: the plant alone, stepped every simulated minute (the baseline).

So journal = full - no journal; engine (recipe, control loops and the setpoint
writes they make) = no journal - polls only; protocol I/O and device service =
polls only - bare plant. Then once under cProfile, whose own time per function is
summed by where the function lives: slower than the plain run, but its shares say
which code inside each part costs. Buckets:

- models: twin/sim (the plant's ODEs and sensors)
- protocol I/O: twin/serve, drivers/, pymodbus, pyserial, sockets and ptys
- engine: twin/engine, twin/runner, twin/recipe, twin/equipment, display
- journal: twin/journal, sqlite3, json, hashlib
- event loop: asyncio and the virtual-time selector (twin/clock)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = (
    ("models", ("twin/sim/",)),
    ("protocol I/O", ("twin/serve/", "drivers/", "pymodbus", "serial", "socket", "select")),
    ("engine", ("twin/engine/", "twin/runner", "twin/recipe/", "twin/equipment", "twin/display")),
    ("journal", ("twin/journal", "sqlite3", "json", "hashlib", "twin/signing")),
    ("event loop", ("asyncio", "twin/clock", "selectors", "contextvars")),
)
BUILTIN_IO = ("posix.write", "posix.read", "'poll' of", "'send' of", "'recv' of", "'select'")


def _bucket(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    if filename == "~":  # a builtin: classify by what it is
        if "sqlite3" in name:
            return "journal"
        if any(io in name for io in BUILTIN_IO):
            return "protocol I/O"
    for bucket, keys in BUCKETS:
        if any(k in where for k in keys):
            return bucket
    return "other"


def _run(profile: bool) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from twin.bench import load_bench
    from twin.recipe import load_recipe
    from twin.runner import run_batch

    # the dose target out of reach: the batch runs its full 10 days, as measured before
    recipe = load_recipe(ROOT / "recipes" / "car_t_autologous.yaml", {"dose_margin": "100"})
    bench = load_bench(ROOT / "benches" / "sim.yaml")
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        final = run_batch(
            recipe,
            bench,
            Path(tmp) / "b.sqlite",
            batch_id="b",
            operator="b",
            patient_id="P-BENCH",  # the day-1 identity scan, by the twin's person at the bag
            bag_id="BAG-BENCH",
            bedside_after_s=0.0,
        )
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - start
    out: dict[str, object] = {"wall_s": wall, "state": final.label}
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if profiler:
        stats = pstats.Stats(profiler)
        shares: dict[str, float] = {}
        for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
            shares[_bucket(filename, name)] = shares.get(_bucket(filename, name), 0.0) + row[2]
        out["buckets"] = shares
    return out


async def _polls_only(days: float) -> float:
    """Wall seconds of the bare polling: each device read once a simulated minute."""
    from twin.bench import load_bench, open_bench
    from twin.clock import Clock

    bench = load_bench(ROOT / "benches" / "sim.yaml")
    clock = Clock()
    async with open_bench(bench, clock) as opened:
        bioreactor, gas = opened.equipment["bioreactor"], opened.equipment["gas"]
        start = time.perf_counter()
        for minute in range(int(days * 1440)):
            await bioreactor.read()
            await gas.read()
            await clock.sleep_until((minute + 1) * 60.0)
        return time.perf_counter() - start


def _ablation(kind: str) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    if kind == "polls":
        from twin.clock import run_batch_loop

        return {"wall_s": run_batch_loop(lambda: _polls_only(10.0), virtual=True)}
    if kind == "plant":
        from twin.sim.reference import run_reference_process

        start = time.perf_counter()
        run_reference_process(seed=42, days=10.0, control_interval_s=60.0)
        return {"wall_s": time.perf_counter() - start}
    import twin.journal

    def in_memory(journal: twin.journal.Journal, path: Path, batch_time, signer, every) -> None:  # type: ignore[no-untyped-def]
        journal._start(None, None, batch_time, None, every)  # as Journal.in_memory keeps one

    twin.journal.Journal._open = in_memory  # type: ignore[method-assign]
    return _run(profile=False)


ABLATIONS = {
    "nojournal": "no journal",
    "polls": "polls only",
    "plant": "bare plant",
}


def _child(kind: str) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", kind]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["plain", "profile", *ABLATIONS])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.child in ABLATIONS:
        print(json.dumps(_ablation(args.child)))
        return
    if args.child:
        print(json.dumps(_run(args.child == "profile")))
        return
    walls: dict[str, list[float]] = {"plain": [], **{k: [] for k in ABLATIONS}}
    plain: dict[str, object] = {}
    for _ in range(args.rounds):
        for kind in walls:
            result = _child(kind)
            walls[kind].append(float(result["wall_s"]))  # type: ignore[arg-type]
            plain = result if kind == "plain" else plain
    med = {kind: statistics.median(w) for kind, w in walls.items()}
    parts = (
        ("journal", med["plain"] - med["nojournal"]),
        ("engine + setpoint writes", med["nojournal"] - med["polls"]),
        ("protocol I/O + device service", med["polls"] - med["plant"]),
        ("plant models", med["plant"]),
    )
    print(f"wall seconds, medians of {args.rounds} rounds, kinds alternating:")
    print(f"  full batch {med['plain']:6.2f} s")
    for kind, label in ABLATIONS.items():
        print(f"  {label:10} {med[kind]:6.2f} s")
    print("  so:")
    for name, seconds in parts:
        print(f"    {name:30} {seconds:6.2f} s  {100 * seconds / med['plain']:5.1f} %")
    prof = _child("profile")
    buckets: dict[str, float] = prof["buckets"]  # type: ignore[assignment]
    total = sum(buckets.values())
    rss = plain["max_rss_mb"]
    print(f"batch: {plain['state']}, peak RSS {rss:.0f} MB")
    print(f"profiled run: {prof['wall_s']:.2f} s wall; own time by part:")
    for name, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
        print(f"  {name:13} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")


if __name__ == "__main__":
    main()
