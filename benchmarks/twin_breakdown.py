"""Where the 10-day CAR-T batch spends its time on the twin: models, protocol I/O, engine, journal.

    .venv/bin/python benchmarks/twin_breakdown.py

Runs the shipped recipe on benches/sim.yaml twice, each in its own process:
once plain (wall time, peak RSS, batch-clock seconds each serial line was busy)
and once under cProfile, whose own time per function is summed by where the
function lives. The profiled run is slower than the plain one; its shares are
what to read. Buckets:

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

    recipe = load_recipe(ROOT / "recipes" / "car_t_autologous.yaml")
    bench = load_bench(ROOT / "benches" / "sim.yaml")
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        final = run_batch(recipe, bench, Path(tmp) / "b.sqlite", batch_id="b", operator="b")
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


def _child(kind: str) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", kind]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["plain", "profile"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_run(args.child == "profile")))
        return
    plain, prof = _child("plain"), _child("profile")
    buckets: dict[str, float] = prof["buckets"]  # type: ignore[assignment]
    total = sum(buckets.values())
    rss = plain["max_rss_mb"]
    print(f"batch: {plain['state']}, {plain['wall_s']:.2f} s wall, peak RSS {rss:.0f} MB")
    print(f"profiled run: {prof['wall_s']:.2f} s wall; own time by part:")
    for name, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
        print(f"  {name:13} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")


if __name__ == "__main__":
    main()
