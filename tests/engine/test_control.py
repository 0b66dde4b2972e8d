"""Control modules: PID anti-windup and bumpless transfer, the DO split, pH by CO2."""

from __future__ import annotations

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
