"""How many ten-day twin batches an ensemble runs per core-hour, and what a second worker adds.

    .venv/bin/python benchmarks/ensemble_rate.py [--batches N] [--cluster-batches M]

Prints, for the shipped lentiviral recipe with its dose target out of reach (every batch
runs its full 10 days, as the issue's "ten-day batches" asks), each batch with its own
donor and seed as ``poc-twin whatif`` draws them:
- seconds per batch in one process on ``benches/sim-in-process.yaml`` (null modems, the
  journal in memory) and the batches per core-hour that makes (target >= 1,000);
- the bare plant's CPU over the same 10 days in the same run (the baseline: the machine's
  speed at the time; this VM's speed has swung 1.5x within a day), and the batch's cost as
  a multiple of it;
- the same batches on ``benches/sim.yaml`` (loopback TCP, ptys), measured in the same run:
  the in-process speed-up is the ratio of the two;
- an ensemble of M batches through ``run_ensemble`` on a Dask LocalCluster with 1 worker
  and with 2 (one single-threaded process each): wall time and the speed-up (target >= 1.8x
  on 2 cores; cluster start-up is inside both times, as a user waits for it).
Each single-process measurement runs in a child process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "car_t_autologous.yaml")
FULL_TEN_DAYS = {"dose_margin": "100"}  # the dose target out of reach: harvest on day 10


def _plans(bench: str, n: int, base_seed: int = 11) -> list:
    import dataclasses

    from twin.ensemble.member import plan_members

    plans = plan_members(recipe=RECIPE, bench=bench, batches=n, base_seed=base_seed, variations=[])
    return [dataclasses.replace(p, parameters=dict(FULL_TEN_DAYS)) for p in plans]


def _serial(bench: str, n: int) -> dict[str, float]:
    from twin.ensemble.member import run_member

    times, days = [], []
    for plan in _plans(str(ROOT / "benches" / bench), n):
        start = time.process_time()
        result = run_member(plan)
        times.append(time.process_time() - start)
        days.append(result["outcome"]["end_day"])
    return {
        "cpu_s_per_batch": statistics.median(times),
        "days": statistics.median(days),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _plant(n: int) -> dict[str, float]:
    """CPU seconds of the bare plant over 10 simulated days, stepped once a simulated minute
    (twin.sim.reference, as batch_speed.py's baseline): no engine, drivers or journal. The
    machine's speed in the same run, so batches per core-hour compare across days."""
    from twin.sim.reference import run_reference_process

    times = []
    for seed in range(n):
        start = time.process_time()
        run_reference_process(seed=seed, days=10.0, control_interval_s=60.0)
        times.append(time.process_time() - start)
    return {"cpu_s": statistics.median(times)}


def _cluster(workers: int, n: int) -> dict[str, float]:
    from twin.ensemble.dispatch import run_ensemble

    plans = _plans(str(ROOT / "benches" / "sim-in-process.yaml"), n, base_seed=23)
    kept: list[dict] = []
    start = time.perf_counter()
    run_ensemble(plans, kept.append, workers=workers)
    return {"wall_s": time.perf_counter() - start, "batches": len(kept)}


def _child(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="batches per serial measurement")
    parser.add_argument("--cluster-batches", type=int, default=8, help="batches per cluster run")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "serial":
            result = _serial(rest[0], int(rest[1]))
        elif kind == "plant":
            result = _plant(int(rest[0]))
        else:
            result = _cluster(int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return
    plant = _child("plant", "3")
    memory = _child("serial", "sim-in-process.yaml", str(args.batches))
    wire = _child("serial", "sim.yaml", str(args.batches))
    one = _child("cluster", "1", str(args.cluster_batches))
    two = _child("cluster", "2", str(args.cluster_batches))
    per_hour = 3600.0 / memory["cpu_s_per_batch"]
    print(
        f"machine:    {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"batch:      car_t_autologous.yaml, {memory['days']:.2f} batch days, own donor each")
    print(
        f"in process: {memory['cpu_s_per_batch']:6.2f} s CPU per batch (median of "
        f"{args.batches}) = {per_hour:,.0f} ten-day batches per core-hour (target >= 1,000); "
        f"peak RSS {memory['max_rss_mb']:.0f} MB"
    )
    print(
        f"baseline:   {plant['cpu_s']:6.2f} s CPU for the bare plant over 10 days (no engine, "
        f"drivers or journal; this machine's speed now) -> a batch in process costs "
        f"{memory['cpu_s_per_batch'] / plant['cpu_s']:.1f}x its plant"
    )
    print(
        f"over wire:  {wire['cpu_s_per_batch']:6.2f} s CPU per batch (benches/sim.yaml, same "
        f"batches) -> in process is {wire['cpu_s_per_batch'] / memory['cpu_s_per_batch']:.2f}x "
        "faster"
    )
    print(
        f"cluster:    {args.cluster_batches} batches: 1 worker {one['wall_s']:.1f} s, 2 workers "
        f"{two['wall_s']:.1f} s wall -> {one['wall_s'] / two['wall_s']:.2f}x (target >= 1.8x)"
    )


if __name__ == "__main__":
    main()
