"""What an ensemble says: outcome distributions, P(release), P(ready by day D), and which
inputs drive failures.

Probabilities carry a 95 % Wilson score interval (Wilson 1927, JASA 22:209), which
stays inside [0, 1] and honest for small ensembles and for P near 0 or 1. The
sensitivity of failure to each input is the rank-biserial correlation between the
input and failing (Cureton 1956; = 2 AUC - 1 of the Mann-Whitney U): +1 means every
failing batch had a higher value than every passing one, -1 lower, 0 no relation.
Pure Python: an ensemble of 10,000 batches is small data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from twin.ensemble.spec import OUTCOMES, ReleaseSpec

__all__ = ["Analysis", "Spread", "analyse", "wilson"]

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (0, 1 for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (type 7, as numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Spread:
    """One outcome over the batches that reached it."""

    outcome: str
    n: int
    mean: float
    sd: float
    p5: float
    p50: float
    p95: float
    low: float
    high: float
    values: list[float] = field(repr=False)


def _spread(name: str, values: list[float]) -> Spread | None:
    if not values:
        return None
    s = sorted(values)
    n = len(s)
    mean = sum(s) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in s) / (n - 1)) if n > 1 else 0.0
    q = _quantile
    return Spread(name, n, mean, sd, q(s, 0.05), q(s, 0.5), q(s, 0.95), s[0], s[-1], s)


def _ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share their mean rank)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def rank_biserial(values: list[float], failed: list[bool]) -> float | None:
    """Rank-biserial correlation of ``values`` with failing; None without both groups."""
    n1 = sum(failed)
    n0 = len(failed) - n1
    if n1 == 0 or n0 == 0:
        return None
    ranks = _ranks(values)
    r1 = sum(r for r, f in zip(ranks, failed, strict=True) if f)
    u1 = r1 - n1 * (n1 + 1) / 2.0
    return 2.0 * u1 / (n1 * n0) - 1.0


@dataclass(frozen=True)
class Driver:
    """One input's relation to failing the spec."""

    name: str
    effect: float  # rank-biserial correlation with failing
    mean_failed: float
    mean_passed: float


@dataclass
class Analysis:
    """Everything the report shows."""

    batches: int
    states: dict[str, int]
    released: int
    p_release: float
    p_release_ci: tuple[float, float]
    limit_failures: dict[str, int]
    ready_by: float | None
    ready: int
    p_ready: float | None
    p_ready_ci: tuple[float, float] | None
    ready_curve: list[tuple[float, float]]  # (day, P(released and harvested by then))
    spreads: dict[str, Spread]
    drivers: list[Driver]
    errors: list[str]


def _inputs(result: dict[str, Any]) -> dict[str, float]:
    """Every input of one batch as a number: its drawn variations and its donor's traits."""
    plan, outcome = result["plan"], result["outcome"]
    found: dict[str, float] = {}
    for k, v in (outcome.get("donor") or {}).items():
        found[f"donor.{k}"] = float(v)
    for k, v in (plan.get("inoculum") or {}).items():
        found[f"inoculum.{k}"] = float(v)
    for k, v in (plan.get("parameters") or {}).items():
        try:
            found[k] = float(str(v).split()[0])
        except ValueError:
            continue
    return found


def analyse(results: list[dict[str, Any]], spec: ReleaseSpec, ready_by: float | None) -> Analysis:
    """The ensemble's figures against ``spec``; ``ready_by`` in days (or the spec's)."""
    ready_by = ready_by if ready_by is not None else spec.ready_by_days
    n = len(results)
    states: dict[str, int] = {}
    failed: list[bool] = []
    limit_failures = {lim.outcome: 0 for lim in spec.limits}
    release_days: list[float] = []
    errors = []
    for r in results:
        o = r["outcome"]
        states[o["state"]] = states.get(o["state"], 0) + 1
        if o.get("error"):
            errors.append(f"batch {r['plan']['index']}: {o['error']}")
        misses = spec.failures(o)
        failed.append(bool(misses))
        for m in misses:
            if m in limit_failures:
                limit_failures[m] += 1
        if not misses and o.get("duration") is not None:
            release_days.append(float(o["duration"]))
    released = n - sum(failed)
    ready = sum(1 for d in release_days if ready_by is not None and d <= ready_by)
    curve = []
    if release_days and n:
        first, last = math.floor(min(release_days)), math.ceil(max(release_days))
        for day in range(first, last + 1):
            curve.append((float(day), sum(1 for d in release_days if d <= day) / n))
    spreads = {}
    for name in OUTCOMES:
        values = [float(r["outcome"][name]) for r in results if r["outcome"].get(name) is not None]
        spread = _spread(name, values)
        if spread is not None:
            spreads[name] = spread
    return Analysis(
        batches=n,
        states=states,
        released=released,
        p_release=released / n if n else 0.0,
        p_release_ci=wilson(released, n),
        limit_failures=limit_failures,
        ready_by=ready_by,
        ready=ready,
        p_ready=ready / n if n and ready_by is not None else None,
        p_ready_ci=wilson(ready, n) if ready_by is not None else None,
        ready_curve=curve,
        spreads=spreads,
        drivers=_drivers(results, failed),
        errors=errors,
    )


def _drivers(results: list[dict[str, Any]], failed: list[bool]) -> list[Driver]:
    """Inputs ordered by how strongly they separate failing from passing batches."""
    inputs = [_inputs(r) for r in results]
    names = sorted({k for i in inputs for k in i})
    drivers = []
    for name in names:
        pairs = [(i[name], f) for i, f in zip(inputs, failed, strict=True) if name in i]
        values, flags = [v for v, _ in pairs], [f for _, f in pairs]
        if len(set(values)) < 2:
            continue
        effect = rank_biserial(values, flags)
        if effect is None:
            continue
        fail_vals = [v for v, f in pairs if f]
        pass_vals = [v for v, f in pairs if not f]
        drivers.append(
            Driver(
                name,
                effect,
                sum(fail_vals) / len(fail_vals),
                sum(pass_vals) / len(pass_vals),
            )
        )
    return sorted(drivers, key=lambda d: -abs(d.effect))
