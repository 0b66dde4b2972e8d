"""Forecast during a batch: the twin batches that looked like this one so far, and how they ended.

A forecast compares the batch's own samples (viable cells/mL, viability, CAR+) with
the samples of a *library*: twin batches of the same recipe and parameters, each
with its own donor drawn from the donor distributions (a ``whatif`` results file).
Each library batch is weighted by the likelihood of this batch's counts given its
own, which is importance sampling of the donor traits from the donor prior: the
weighted library is the posterior, and its harvest days and outcomes are the
forecast. Counting noise is on both sides (the sd of a difference of two counts is
√2 that of one): 5 % relative on the density, 1.5 points of viability, 2 points of
CAR+, the figures of the twin's cell counter and flow cytometer (twin/sim/params.py);
a site whose lab differs gives its own (:class:`CountingNoise`).

A library batch that sampled differently (another sample at that place in the
sequence), or would already have sampled again or harvested by now, is not this
batch and gets no weight. A few hundred batches hold few close matches to several
precise counts, so the likelihood is tempered (raised to β ≤ 1, the largest that
leaves ``min_ess`` effective batches, Kish's n_eff = 1 / Σw²): intervals then come
from enough batches to be honest, wider rather than falsely narrow. P(release)
carries a 90 % Wilson interval on the effective number of batches.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twin.ensemble.spec import OUTCOMES, ReleaseSpec
from twin.errors import PocTwinError
from twin.journal import Event

__all__ = [
    "BatchSoFar",
    "Calibration",
    "CountingNoise",
    "Forecast",
    "ForecastError",
    "Interval",
    "as_if_running",
    "batch_so_far",
    "brief",
    "calibrate",
    "forecast",
    "log_likelihood",
    "read_saved",
    "save",
    "sidecar_path",
]

DAY = 86400.0
Z90 = 1.6448536269514722
#: Effective library batches a forecast keeps at least (tempering widens to reach it).
MIN_ESS = 30.0
#: Outcomes a forecast gives intervals for (in their OUTCOMES units).
FORECAST_OUTCOMES = (
    "duration",
    "viable_cells",
    "viability",
    "car_positive",
    "car_viable_cells",
    "dose_per_kg",
    "vector_copies",
)


class ForecastError(PocTwinError):
    """No forecast can be made (no library batch is consistent with this batch, say)."""


@dataclass(frozen=True)
class CountingNoise:
    """One count's noise: the lab's cell counter and flow cytometer."""

    count_rel_sd: float = 0.05
    viability_sd_pct: float = 1.5
    car_sd_pct: float = 2.0


@dataclass(frozen=True)
class Sample:
    """One sample the batch journalled, as a forecast compares it."""

    day: float
    name: str
    viable_cells_per_ml: float | None
    viability_pct: float | None
    car_pct: float | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Sample:
        day, name, vcd, via, car = row
        return cls(float(day), str(name or ""), vcd, via, car)


@dataclass(frozen=True)
class BatchSoFar:
    """What a journal says of a batch up to the forecast's moment."""

    batch_id: str
    now_day: float
    samples: list[Sample]
    recipe: dict[str, Any]  # the batch_started record's recipe: id, sha256, text, parameters
    seeded_viable_cells: float | None
    state: str
    ended: bool
    harvest_day: float | None


def batch_so_far(events: Iterable[Event], at_day: float | None = None) -> BatchSoFar:
    """The batch as its journal shows it up to ``at_day`` (its last event if None)."""
    started: dict[str, Any] | None = None
    samples: list[Sample] = []
    state, ended, harvest_day, last = "Idle", False, None, 0.0
    limit = math.inf if at_day is None else at_day * DAY
    for e in events:
        if e.batch_time > limit:
            break
        last = e.batch_time
        if e.kind == "batch_started":
            started = e.data
        elif e.kind == "sample":
            d = e.data
            samples.append(
                Sample(
                    e.batch_time / DAY,
                    str(d.get("name", "")),
                    d.get("viable_cells_per_ml"),
                    d.get("viability_pct"),
                    d.get("transduced_pct"),
                )
            )
        elif e.kind == "transition" and e.source.startswith("procedure:"):
            state = str(e.data.get("to", state))
        elif e.kind == "harvest":
            harvest_day = e.batch_time / DAY
        elif e.kind == "batch_ended":
            ended, state = True, str(e.data.get("state", state))
    if started is None:
        raise ForecastError("the journal has no batch_started event: not a batch's journal")
    return BatchSoFar(
        batch_id=str(started.get("batch_id", "?")),
        now_day=(at_day if at_day is not None else last / DAY),
        samples=samples,
        recipe=dict(started.get("recipe") or {}),
        seeded_viable_cells=started.get("seeded_viable_cells"),
        state=state,
        ended=ended,
        harvest_day=harvest_day,
    )


def log_likelihood(batch: BatchSoFar, member: dict[str, Any], noise: CountingNoise) -> float | None:
    """log p(this batch's samples | a library batch's), up to a constant; None where the
    library batch cannot be this batch (it sampled differently, or would have sampled
    again, harvested or ended by now)."""
    rows = [Sample.from_row(r) for r in member.get("samples") or []]
    seen = batch.samples
    if len(rows) < len(seen):
        return None
    ll = 0.0
    sd_log = math.sqrt(2.0) * noise.count_rel_sd
    sd_via = math.sqrt(2.0) * noise.viability_sd_pct
    sd_car = math.sqrt(2.0) * noise.car_sd_pct
    for obs, lib in zip(seen, rows, strict=False):
        if obs.name != lib.name:
            return None
        a, b = obs.viable_cells_per_ml, lib.viable_cells_per_ml
        if a is not None and b is not None:
            if a > 0.0 and b > 0.0:
                ll -= 0.5 * (math.log(a / b) / sd_log) ** 2
            elif (a > 0.0) != (b > 0.0):
                return None  # one bag empty, the other not
        for x, y, sd in (
            (obs.viability_pct, lib.viability_pct, sd_via),
            (obs.car_pct, lib.car_pct, sd_car),
        ):
            if x is not None and y is not None:
                ll -= 0.5 * ((x - y) / sd) ** 2
    # The library batch's timeline, aligned on the last sample both took (holds, scans
    # and pauses shift a batch's days; the culture's own schedule does not).
    shift = seen[-1].day - rows[len(seen) - 1].day if seen else 0.0
    if len(rows) > len(seen) and rows[len(seen)].day + shift <= batch.now_day:
        return None  # it would have taken another sample by now
    end = member.get("duration")
    if batch.harvest_day is None and end is not None and end + shift <= batch.now_day:
        return None  # it would have harvested by now
    return ll


@dataclass(frozen=True)
class Interval:
    """A forecast figure: median and 90 % interval (5th and 95th weighted percentiles)."""

    p5: float
    p50: float
    p95: float

    def covers(self, value: float) -> bool:
        return self.p5 <= value <= self.p95


def weighted_quantile(pairs: list[tuple[float, float]], q: float) -> float:
    """The smallest value whose cumulative weight reaches ``q`` of the total (pairs sorted)."""
    total = sum(w for _, w in pairs)
    running = 0.0
    for value, w in pairs:
        running += w
        if running >= q * total * (1.0 - 1e-12):
            return value
    return pairs[-1][0]


def _interval(values: list[tuple[float, float]]) -> Interval | None:
    pairs = sorted((v, w) for v, w in values if w > 0.0)
    if not pairs:
        return None
    return Interval(*(weighted_quantile(pairs, q) for q in (0.05, 0.5, 0.95)))


def _smoothed_interval(values: list[tuple[float, float]], log: bool) -> Interval | None:
    """Percentiles of the weighted batches smoothed by a Gaussian kernel (Silverman's
    bandwidth on the effective number of batches; in log space for counts): a few dozen
    effective batches put their own 5th and 95th percentiles too far in."""
    pairs = [(math.log(v) if log else v, w) for v, w in values if w > 0.0 and (v > 0 or not log)]
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    pairs = [(v, w / total) for v, w in pairs]
    ess = 1.0 / sum(w * w for _, w in pairs)
    mean = sum(v * w for v, w in pairs)
    sd = math.sqrt(max(0.0, sum(w * (v - mean) ** 2 for v, w in pairs)))
    ordered = sorted(pairs)
    iqr = weighted_quantile(ordered, 0.75) - weighted_quantile(ordered, 0.25)
    spread = min(sd, iqr / 1.349) if iqr > 0.0 else sd
    h = 0.9 * spread * ess ** (-0.2)
    if h <= 0.0:
        centre = ordered[0][0]
        return Interval(*([math.exp(centre) if log else centre] * 3))

    def cdf(x: float) -> float:
        return sum(w * 0.5 * math.erfc((v - x) / (h * math.sqrt(2.0))) for v, w in pairs)

    def quantile(q: float) -> float:
        lo, hi = ordered[0][0] - 8.0 * h, ordered[-1][0] + 8.0 * h
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
        return math.exp(lo) if log else lo

    return Interval(quantile(0.05), quantile(0.5), quantile(0.95))


def _smoothed_interval_of(key: str) -> Any:
    """Harvest days fall on sample days (no smoothing); counts are smoothed in log space."""
    log = OUTCOMES[key].dimension in ("cells", "dose", "copies")
    return lambda values: _smoothed_interval(values, log)


def _wilson(p: float, n: float, z: float = Z90) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` over ``n`` (effective) trials."""
    if n <= 0.0:
        return 0.0, 1.0
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _normalised(logs: list[float], beta: float) -> tuple[list[float], float]:
    top = max(beta * v for v in logs)
    w = [math.exp(beta * v - top) for v in logs]
    total = sum(w)
    w = [x / total for x in w]
    return w, 1.0 / sum(x * x for x in w)


def temper(logs: list[float], min_ess: float) -> tuple[list[float], float, float]:
    """Weights ∝ likelihood^β with the largest β ≤ 1 that keeps ``min_ess`` effective
    batches (all of them when fewer); returns weights, β and the effective number."""
    want = min(min_ess, float(len(logs)))
    weights, ess = _normalised(logs, 1.0)
    if ess >= want - 1e-9:
        return weights, 1.0, ess
    lo, hi = 0.0, 1.0  # ESS falls as β rises: the largest β with ESS >= want
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _normalised(logs, mid)[1] >= want:
            lo = mid
        else:
            hi = mid
    weights, ess = _normalised(logs, lo)
    return weights, lo, ess


@dataclass
class Forecast:
    """What a forecast says of one batch at one moment."""

    batch_id: str
    made_at_day: float
    samples_used: int
    spec: str
    library_batches: int
    consistent_batches: int
    effective_batches: float
    tempering: float
    p_harvest: float
    harvest_day: Interval | None
    p_release: float
    p_release_interval: tuple[float, float]
    ready_by: float | None
    p_ready: float | None
    outcomes: dict[str, Interval] = field(default_factory=dict)
    donor: dict[str, Interval] = field(default_factory=dict)
    prior_harvest_day: Interval | None = None
    prior_p_release: float | None = None
    state: str = ""
    ended: bool = False

    def as_dict(self) -> dict[str, Any]:
        """As JSON keeps it (the sidecar file, ``--json``, the station and the control site)."""
        return asdict(self)


def forecast(
    batch: BatchSoFar,
    library: list[dict[str, Any]],
    spec: ReleaseSpec,
    *,
    noise: CountingNoise | None = None,
    min_ess: float = MIN_ESS,
) -> Forecast:
    """Weigh the library's batches by this batch's samples; read the forecast off them."""
    noise = noise or CountingNoise()
    usable = [r for r in library if r["outcome"].get("state") != "error"]
    if not usable:
        raise ForecastError("the library holds no finished twin batch")
    if not any("samples" in r["outcome"] for r in usable):
        raise ForecastError(
            "the library's batches kept no samples (made by an older poc-twin): build a new one"
        )
    scored = [(r, log_likelihood(batch, r["outcome"], noise)) for r in usable]
    kept = [(r, ll) for r, ll in scored if ll is not None]
    if not kept:
        raise ForecastError(
            f"none of the library's {len(usable)} twin batches sampled as this batch did up to "
            f"day {batch.now_day:.2f}: is it the same recipe and parameters?"
        )
    weights, beta, ess = temper([ll for _, ll in kept], min_ess)
    members = [r["outcome"] for r, _ in kept]
    ready = spec.ready_by_days

    def share(test: Any, ws: Sequence[float], outs: Sequence[dict[str, Any]]) -> float:
        return sum(w for w, o in zip(ws, outs, strict=True) if test(o))

    def released(o: dict[str, Any]) -> bool:
        return not spec.failures(o)

    def ready_in_time(o: dict[str, Any]) -> bool:
        return released(o) and ready is not None and (o.get("duration") or math.inf) <= ready

    p_release = share(released, weights, members)
    outcomes = {}
    for key in FORECAST_OUTCOMES:
        smooth = _interval if key == "duration" else _smoothed_interval_of(key)
        iv = smooth(
            [
                (float(o[key]), w)
                for o, w in zip(members, weights, strict=True)
                if o.get(key) is not None
            ]
        )
        if iv is not None:
            outcomes[key] = iv
    traits: dict[str, list[tuple[float, float]]] = {}
    for o, w in zip(members, weights, strict=True):
        for name, value in (o.get("donor") or {}).items():
            if isinstance(value, int | float):
                traits.setdefault(name, []).append((float(value), w))
    donor = {k: iv for k, v in traits.items() if (iv := _interval(v)) is not None}
    flat = [1.0 / len(usable)] * len(usable)
    all_outcomes = [r["outcome"] for r in usable]
    return Forecast(
        batch_id=batch.batch_id,
        made_at_day=batch.now_day,
        samples_used=len(batch.samples),
        spec=spec.spec,
        library_batches=len(usable),
        consistent_batches=len(kept),
        effective_batches=ess,
        tempering=beta,
        p_harvest=share(lambda o: o.get("duration") is not None, weights, members),
        harvest_day=outcomes.get("duration"),
        p_release=p_release,
        p_release_interval=_wilson(p_release, ess),
        ready_by=ready,
        p_ready=share(ready_in_time, weights, members) if ready is not None else None,
        outcomes=outcomes,
        donor=donor,
        prior_harvest_day=_interval(
            [(float(o["duration"]), 1.0) for o in all_outcomes if o.get("duration") is not None]
        ),
        prior_p_release=share(released, flat, all_outcomes),
        state=batch.state,
        ended=batch.ended,
    )


def as_if_running(result: dict[str, Any], at_day: float) -> BatchSoFar:
    """A library batch as its journal stood on ``at_day``: its samples up to then (its
    donor is not looked at), for checking forecasts against batches whose end is known."""
    o = result["outcome"]
    samples = [Sample.from_row(r) for r in o.get("samples") or [] if float(r[0]) <= at_day]
    harvested = o.get("duration")
    return BatchSoFar(
        batch_id=f"library batch {result['plan']['index']}",
        now_day=at_day,
        samples=samples,
        recipe={},
        seeded_viable_cells=None,
        state="Running",
        ended=False,
        harvest_day=harvested if harvested is not None and harvested <= at_day else None,
    )


@dataclass(frozen=True)
class Calibration:
    """How often the forecast's 90 % intervals held the true outcome (leave one out)."""

    at_day: float
    batches: int  # checked
    covered: dict[str, tuple[int, int]]  # outcome -> (inside its interval, checked)
    release_brier: float  # mean squared error of P(release) against released or not
    prior_brier: float  # the same for the library's P(release) before any sample
    skipped: int  # batches already ended by at_day, or with no consistent library batch

    def rate(self, key: str) -> float | None:
        inside, n = self.covered.get(key, (0, 0))
        return inside / n if n else None


def calibrate(
    library: list[dict[str, Any]],
    spec: ReleaseSpec,
    at_day: float,
    batches: int,
    *,
    noise: CountingNoise | None = None,
    min_ess: float = MIN_ESS,
) -> Calibration:
    """Forecast library batches still running on ``at_day`` (the first ``batches`` of them)
    from their samples up to then with the rest of the library (donor hidden, itself left
    out), and count how often the 90 % intervals held what each really did."""
    usable = [r for r in library if r["outcome"].get("state") != "error"]
    covered: dict[str, list[int]] = {k: [0, 0] for k in FORECAST_OUTCOMES}
    squared, checked, skipped = 0.0, 0, 0
    prior_squared = 0.0
    prior = sum(0.0 if spec.failures(r["outcome"]) else 1.0 for r in usable) / len(usable)
    for i, truth in enumerate(usable):
        if checked == batches:
            break
        o = truth["outcome"]
        if o.get("duration") is not None and o["duration"] <= at_day:
            skipped += 1
            continue
        others = usable[:i] + usable[i + 1 :]
        try:
            f = forecast(as_if_running(truth, at_day), others, spec, noise=noise, min_ess=min_ess)
        except ForecastError:
            skipped += 1
            continue
        checked += 1
        for key, iv in f.outcomes.items():
            value = o.get(key)
            if value is not None:
                covered[key][1] += 1
                covered[key][0] += iv.covers(float(value))
        released = 0.0 if spec.failures(o) else 1.0
        squared += (f.p_release - released) ** 2
        prior_squared += (prior - released) ** 2
    return Calibration(
        at_day=at_day,
        batches=checked,
        covered={k: (v[0], v[1]) for k, v in covered.items() if v[1]},
        release_brier=squared / checked if checked else math.nan,
        prior_brier=prior_squared / checked if checked else math.nan,
        skipped=skipped,
    )


def outcome_label(key: str) -> tuple[str, str]:
    """An outcome's label and unit, for a reader."""
    kind = OUTCOMES[key]
    return kind.label, kind.unit


#: A batch's latest forecast is kept beside its journal (``poc-twin forecast`` writes it);
#: the operator station shows it and the site's forwarder sends it to the control site.
SIDECAR = ".forecast.json"
#: What of a forecast travels with the batch's state to the control site.
BRIEF_KEYS = (
    "made_at_day",
    "samples_used",
    "spec",
    "harvest_day",
    "p_harvest",
    "p_release",
    "p_release_interval",
    "ready_by",
    "p_ready",
    "effective_batches",
    "library_batches",
)


def sidecar_path(journal: Path) -> Path:
    """Where a batch's latest forecast is kept."""
    return journal.with_name(journal.name + SIDECAR)


def save(journal: Path, record: dict[str, Any]) -> Path:
    """Keep ``record`` as the batch's latest forecast (a reader never sees half of one)."""
    target = sidecar_path(journal)
    scratch = target.with_name(target.name + ".tmp")
    scratch.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(scratch, target)
    return target


def read_saved(journal: Path) -> dict[str, Any] | None:
    """The batch's latest saved forecast, or None (none made, or unreadable for now)."""
    try:
        record = json.loads(sidecar_path(journal).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def brief(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a forecast the control site shows."""
    return {k: record.get(k) for k in BRIEF_KEYS}
