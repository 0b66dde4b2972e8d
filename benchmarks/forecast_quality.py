"""How good and how fast the forecast is: a library of twin batches built by ``whatif``, then
``forecast-check`` (leave-one-out, donors hidden) on the given day.

    .venv/bin/python benchmarks/forecast_quality.py [--members 160] [--day 5] [--poll-s 600]

The library's culture phases scan every ``--poll-s`` seconds (600 by default, as the
test; 60 is the shipped recipe's and takes ten times longer). Prints the library's build
time, the time of one forecast, coverage of the 90 % intervals and the Brier scores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STRICT = """\
spec: strict-example
ready_by: 8 d
limits:
  - {outcome: viability, min: 70 %}
  - {outcome: car_positive, min: 40 %}
"""


def _recipe(target: Path, poll_s: float) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / "car_t_autologous.yaml").read_text("utf-8"))
    for unit in data["procedure"]:
        for op in unit["operations"]:
            for phase in op["phases"]:
                if phase.get("phase") == "culture":
                    phase["poll_s"] = poll_s
    target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    return target


def _poc_twin(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [str(BIN / "poc-twin"), *args], capture_output=True, text=True, cwd=cwd, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"poc-twin {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=160)
    parser.add_argument("--day", type=float, default=5.0)
    parser.add_argument("--poll-s", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        recipe = _recipe(here / "recipe.yaml", args.poll_s)
        spec = here / "strict.yaml"
        spec.write_text(STRICT, "utf-8")
        library = here / "library.sqlite"
        started = time.perf_counter()
        _poc_twin(
            "whatif", str(recipe), "--batches", str(args.members), "--spec", str(spec),
            "--seed", str(args.seed), "--results", str(library), "--workers", str(args.workers),
            cwd=here,
        )  # fmt: skip
        built = time.perf_counter() - started
        started = time.perf_counter()
        report = _poc_twin(
            "forecast-check", str(library), "--spec", str(spec), "--at-day", f"{args.day:g}",
            "--batches", "50", cwd=here,
        )  # fmt: skip
        checked = time.perf_counter() - started
    print(f"machine:  {os.uname().machine} {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"library:  {args.members} twin batches (control scan every {args.poll_s:g} s) in "
        f"{built:.1f} s wall on {args.workers} worker(s)"
    )
    print(f"check:    50 leave-one-out forecasts in {checked:.1f} s wall (with start-up)")
    print(report.rstrip())


if __name__ == "__main__":
    main()
