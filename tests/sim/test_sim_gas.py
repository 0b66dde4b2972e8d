"""Gas dispenser: mass-flow controllers and the inlet gas they make for the bag."""

from __future__ import annotations

import math

import pytest

from twin.equipment import Gas
from twin.sim import Plant
from twin.sim.chemistry import inlet_fractions
from twin.sim.params import BioreactorParams


def test_default_controllers_match_the_bench() -> None:
    """Plant API: A=AIR 500, B=O2 200, C=N2 500, D=CO2 50 sccm full scale."""
    mfcs = Plant().gas.mfcs
    assert {u: (m.gas, m.full_scale_sccm) for u, m in mfcs.items()} == {
        "A": (Gas.AIR, 500.0),
        "B": (Gas.O2, 200.0),
        "C": (Gas.N2, 500.0),
        "D": (Gas.CO2, 50.0),
    }


def test_flow_reaches_63_percent_of_a_step_in_7_ms() -> None:
    """Laminar-dP controllers: 63% of a step in ~7 ms (Alicat, TWIN_MODELS)."""
    plant = Plant()
    mfc = plant.gas.mfcs["A"]
    mfc.setpoint_sccm = 100.0
    plant.advance_to(0.007)
    assert mfc.flow_sccm == pytest.approx(100.0 * (1.0 - math.exp(-1.0)), rel=1e-6)
    plant.advance_to(0.1)
    assert mfc.flow_sccm == pytest.approx(100.0, rel=1e-5)


def test_measured_flow_clamps_at_131_percent_of_full_scale() -> None:
    """Readings clamp to 0..1.31 x full scale (TWIN_MODELS gas dispenser model)."""
    plant = Plant()
    mfc = plant.gas.mfcs["D"]
    mfc.setpoint_sccm = 1000.0  # a server would refuse this; the model still clamps
    plant.advance_to(1.0)
    readings = [mfc.observe().mass_flow for _ in range(50)]
    assert max(readings) <= 1.31 * 50.0
    assert min(readings) == pytest.approx(1.31 * 50.0, abs=0.3)


def test_closed_valve_reads_zero_and_reading_is_near_setpoint() -> None:
    """Zero band and noise of a few tenths of a percent of full scale (assumed, Alicat-like)."""
    plant = Plant()
    closed = plant.gas.mfcs["B"].observe()
    assert closed.mass_flow == 0.0 and closed.setpoint == 0.0
    air = plant.gas.mfcs["A"]
    air.setpoint_sccm = 200.0
    plant.advance_to(1.0)
    reading = air.observe()
    assert abs(reading.mass_flow - 200.0) < 2.5
    assert 14.5 < reading.pressure_psia < 15.2
    assert reading.volumetric_flow == pytest.approx(reading.mass_flow, rel=0.03)


def test_inlet_o2_fraction_follows_the_mixing_rule() -> None:
    """y_O2 = (0.20946*F_air + F_O2)/sum(F); no flow means headspace air (TWIN_MODELS)."""
    p = BioreactorParams()
    y_o2, y_co2 = inlet_fractions({Gas.AIR: 100.0, Gas.O2: 50.0, Gas.N2: 40.0, Gas.CO2: 10.0}, p)
    assert y_o2 == pytest.approx((0.20946 * 100.0 + 50.0) / 200.0)
    assert y_co2 == pytest.approx((0.0004 * 100.0 + 10.0) / 200.0)
    assert inlet_fractions({}, p) == (0.20946, 0.0004)


def test_gas_dispenser_outlet_feeds_the_bag() -> None:
    """The gas dispenser's outlet feeds the bioreactor's sparger (ARCHITECTURE decision 2)."""
    plant = Plant()
    plant.gas.mfcs["C"].setpoint_sccm = 200.0  # pure N2 strips O2
    plant.bioreactor.rocking_rpm = 20.0
    plant.advance_to(3 * 3600.0)
    assert plant.gas.outlet_sccm()[Gas.N2] == pytest.approx(200.0)
    assert plant.bioreactor.observe().do_pct < 5.0
