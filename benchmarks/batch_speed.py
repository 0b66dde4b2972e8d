"""How fast the 10-day CAR-T batch runs on the twin, against the bare plant, in one run.

    .venv/bin/python benchmarks/batch_speed.py [--repeat N]

Prints, for the shipped reference recipe on benches/sim.yaml:
- wall time of the full batch (engine + drivers + Modbus TCP / pty protocol I/O + journal),
- wall time of the same plant stepped once per simulated minute with no protocol I/O and
  no journal (twin.sim.reference, the baseline), and the ratio of the two,
- the speed-up over real time, events and journal size per batch day, and peak RSS.
Each measurement runs in its own process so peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAYS = 10.0


def _full() -> dict[str, float]:
    from twin.bench import load_bench
    from twin.recipe import load_recipe
    from twin.runner import run_batch, summarize

    recipe = load_recipe(ROOT / "recipes" / "car_t_autologous.yaml")
    bench = load_bench(ROOT / "benches" / "sim.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "bench.sqlite"
        start = time.perf_counter()
        final = run_batch(recipe, bench, journal, batch_id="bench", operator="bench")
        wall = time.perf_counter() - start
        summary = summarize(journal)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    assert final.label == "Complete"
    return {"wall_s": wall, "days": summary.days, "events": summary.events, "bytes": size}


def _baseline() -> dict[str, float]:
    from twin.sim.reference import run_reference_process

    start = time.perf_counter()
    run_reference_process(seed=42, days=DAYS, control_interval_s=60.0)
    return {"wall_s": time.perf_counter() - start, "days": DAYS}


def _child(kind: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", choices=["full", "baseline"])
    args = parser.parse_args()
    if args.child:
        result = _full() if args.child == "full" else _baseline()
        result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    fulls = [_child("full") for _ in range(args.repeat)]
    bases = [_child("baseline") for _ in range(args.repeat)]
    full = min(fulls, key=lambda r: r["wall_s"])
    base = min(bases, key=lambda r: r["wall_s"])
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"batch:    car_t_autologous.yaml on benches/sim.yaml, {full['days']:.2f} batch days")
    speedup = full["days"] * 86400 / full["wall_s"]
    print(f"full:     {full['wall_s']:7.2f} s wall  ({speedup:,.0f}x real time)")
    print(f"baseline: {base['wall_s']:7.2f} s wall  (plant only, stepped every simulated minute)")
    print(f"ratio:    {full['wall_s'] / base['wall_s']:7.1f}x  full / baseline")
    print(
        f"journal:  {full['events']:.0f} events, {full['events'] / full['days']:,.0f} events and "
        f"{full['bytes'] / full['days'] / 1e6:.2f} MB per batch day"
    )
    print(f"peak RSS: {full['max_rss_mb']:.0f} MB full, {base['max_rss_mb']:.0f} MB baseline")


if __name__ == "__main__":
    main()
