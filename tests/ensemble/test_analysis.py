"""The ensemble's statistics against values worked by hand or published."""

from __future__ import annotations

import pytest

from twin.ensemble.analysis import analyse, rank_biserial, wilson
from twin.ensemble.spec import Limit, ReleaseSpec


def test_wilson_interval_matches_published_values() -> None:
    # Newcombe 1998 (Stat Med 17:857), Table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(10, 10)[0] == pytest.approx(
        0.7225, abs=1e-4
    )


def test_rank_biserial_sign_and_size() -> None:
    failed = [True, True, False, False, False]
    assert rank_biserial([9, 8, 1, 2, 3], failed) == 1.0  # failures have the high values
    assert rank_biserial([1, 2, 7, 8, 9], failed) == -1.0
    assert rank_biserial([1, 9, 5, 2, 8], failed) == pytest.approx(0.0, abs=0.35)
    assert rank_biserial([1, 2, 3], [False] * 3) is None


def _result(i: int, growth: float, state: str = "Complete", **outcome: float) -> dict:
    return {
        "plan": {"index": i, "parameters": {"moi": f"{i % 5 + 2}"}, "inoculum": {}},
        "outcome": {"state": state, "donor": {"growth_potential": growth}, **outcome},
    }


def test_probabilities_limits_and_the_driver_of_failure() -> None:
    spec = ReleaseSpec(spec="t", limits=[Limit(outcome="dose_per_kg", min="2e6 cells/kg")])
    results = [
        # slow donors miss the dose; fast ones make it, the faster the earlier
        _result(i, growth=0.6 + 0.05 * i, dose_per_kg=1e6 + 2e5 * i, duration=12.0 - 0.3 * i)
        for i in range(20)
    ] + [_result(20, growth=1.0, state="Aborted")]
    a = analyse(results, spec, ready_by=8.0)
    passing = [i for i in range(20) if 1e6 + 2e5 * i >= 2e6]  # i >= 5
    assert a.batches == 21 and a.released == len(passing) == 15
    assert a.p_release == pytest.approx(15 / 21)
    assert a.p_release_ci == pytest.approx(wilson(15, 21))
    assert a.limit_failures == {"dose_per_kg": 5}
    assert a.states == {"Complete": 20, "Aborted": 1}
    ready = [i for i in passing if 12.0 - 0.3 * i <= 8.0]  # i >= 13.33
    assert a.ready == len(ready) == 6
    assert a.ready_curve[-1][1] == pytest.approx(15 / 21)
    top = a.drivers[0]
    assert top.name == "donor.growth_potential" and top.effect < -0.9
    assert top.mean_failed < top.mean_passed
    assert a.spreads["dose_per_kg"].n == 20
    assert a.spreads["dose_per_kg"].p50 == pytest.approx(1e6 + 2e5 * 9.5)
