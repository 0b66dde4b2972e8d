"""Control modules: PID anti-windup and bumpless transfer, the DO split, pH by CO2."""

from __future__ import annotations

import math
import random

import pytest

from twin.engine.control import PID, DOCascade, GasSplit, PHControl


def test_proportional_and_integral_action() -> None:
    pid = PID(kp=0.5, ti_s=100.0, out_min=-10, out_max=10)
    first = pid.update(setpoint=1.0, pv=0.0, dt_s=10.0)
    assert first == pytest.approx(0.5 + 0.05)  # P plus one step of I
    second = pid.update(setpoint=1.0, pv=0.0, dt_s=10.0)
    assert second == pytest.approx(0.5 + 0.10)  # the integral keeps growing on a steady error


def test_anti_windup_recovers_at_once_when_the_error_reverses() -> None:
    pid = PID(kp=0.1, ti_s=10.0, out_min=0.0, out_max=1.0)
    for _ in range(1000):  # a long saturation, e.g. an O2 line at its cap
        assert pid.update(setpoint=100.0, pv=0.0, dt_s=60.0) == 1.0
    assert pid.integral <= 1.0  # clamped, not wound up to ~60,000
    # The error reverses: without anti-windup the output would stay saturated for hours.
    assert pid.update(setpoint=0.0, pv=5.0, dt_s=60.0) < 1.0


def test_bumpless_transfer_starts_from_the_current_output() -> None:
    pid = PID(kp=2.0, ti_s=600.0, out_min=0.0, out_max=50.0)
    pid.track(10.0)  # the line already carries 10 sccm
    assert pid.update(setpoint=7.0, pv=7.0, dt_s=60.0) == pytest.approx(10.0)


def test_do_cascade_adds_o2_below_and_n2_above_the_setpoint() -> None:
    cascade = DOCascade.default(o2_max_sccm=100.0, n2_max_sccm=500.0)
    low = cascade.update(setpoint_pct=40.0, do_pct=20.0, dt_s=60.0)
    assert low.o2_sccm > 0.0 and low.n2_sccm == 0.0
    cascade = DOCascade.default(o2_max_sccm=100.0, n2_max_sccm=500.0)
    high = cascade.update(setpoint_pct=40.0, do_pct=80.0, dt_s=60.0)
    assert high.n2_sccm > 0.0 and high.o2_sccm == 0.0


def test_gas_split_deadband() -> None:
    a = GasSplit(o2_sccm=0.0, n2_sccm=40.0)
    assert not GasSplit(o2_sccm=0.0, n2_sccm=40.6).differs(a, 1.0)
    assert GasSplit(o2_sccm=0.0, n2_sccm=41.2).differs(a, 1.0)
    assert GasSplit(o2_sccm=0.3, n2_sccm=0.0).differs(GasSplit(0.0, 0.3), 1.0)  # O2 <-> N2


def test_ph_control_is_reverse_acting() -> None:
    loop = PHControl.default(co2_now_sccm=10.0, co2_max_sccm=50.0)
    assert loop.update(setpoint=7.2, ph=7.4, dt_s=60.0) > 10.0  # too alkaline: more CO2
    loop = PHControl.default(co2_now_sccm=10.0, co2_max_sccm=50.0)
    assert loop.update(setpoint=7.2, ph=7.0, dt_s=60.0) < 10.0  # too acid: less CO2


def _n2_writes(cascade: DOCascade, readings: list[float], deadband_sccm: float = 1.0) -> int:
    """How often the engine would rewrite the N2 line (its per-line write deadband)."""
    written: float | None = None
    writes = 0
    for do_pct in readings:
        n2 = cascade.update(setpoint_pct=40.0, do_pct=do_pct, dt_s=60.0).n2_sccm
        if written is None or abs(n2 - written) >= deadband_sccm:
            written, writes = n2, writes + 1
    return writes


def test_do_pv_filter_keeps_probe_noise_off_the_gas_lines() -> None:
    # Ten hours at setpoint with an optical probe's noise (0.3 % air sat., TWIN_MODELS.md)
    # while the bag needs N2 stripping (~143 sccm of 500, as in the reference expansion).
    rng = random.Random(7)
    readings = [40.0 + rng.gauss(0.0, 0.3) for _ in range(600)]

    def at_steady_state(filter_s: float) -> DOCascade:
        cascade = DOCascade.default(o2_max_sccm=100.0, n2_max_sccm=500.0)
        cascade.pv_filter_s = filter_s
        cascade.pid.track(-143.0 / 500.0)
        return cascade

    raw = _n2_writes(at_steady_state(0.0), readings)
    filtered = _n2_writes(at_steady_state(300.0), readings)
    assert raw > 150  # unfiltered: a write every few minutes, each inside the MFC's accuracy
    assert filtered < 30


def test_do_pv_filter_is_a_first_order_lag_that_still_follows_a_real_change() -> None:
    cascade = DOCascade.default(o2_max_sccm=100.0, n2_max_sccm=500.0)
    assert cascade.filter(40.0, 60.0) == 40.0  # starts at the first reading: no bump
    for _ in range(5):  # DO drops to 30 % and stays: 5 min = one filter time constant
        cascade.filter(30.0, 60.0)
    assert cascade.filtered_pct == pytest.approx(40.0 - 10.0 * (1 - math.exp(-1)))
    assert cascade.update(setpoint_pct=40.0, do_pct=30.0, dt_s=60.0).o2_sccm > 0.0
