"""Electroporator: typical T-cell settings, and cells moving between bag and chamber."""

from __future__ import annotations

import pytest

from twin.sim import ElectroporatorParams, Plant, delivery_efficiency, pulse_survival

# Typical square-wave T-cell settings (assumed, TWIN_MODELS: E ~2-2.5 kV/cm, 20 µs):
# 500 V across a 2 mm gap cuvette = 2.5 kV/cm; 400 V / 2 mm = 2.0 kV/cm.
TYPICAL = [(500.0, 20.0, 1, 2.0), (400.0, 20.0, 1, 2.0)]


@pytest.mark.parametrize(("volts", "width_us", "count", "gap_mm"), TYPICAL)
def test_typical_settings_deliver_to_most_cells_and_keep_most_alive(
    volts: float, width_us: float, count: int, gap_mm: float
) -> None:
    """>80% delivery to primary T cells (Neon app note) with 60-90% viability (TWIN_MODELS)."""
    plant = Plant()
    ep = plant.electroporator
    ep.load(100.0)
    before = ep.chamber
    ep.program(volts, width_us, count, gap_mm)
    outcome = ep.pulse()
    after = ep.chamber
    assert outcome.field_v_per_cm == pytest.approx(volts / (gap_mm / 10.0))
    assert outcome.pulses_delivered == count
    assert after.transient_fraction > 0.80  # delivered: expressing now
    assert after.transduced_fraction == pytest.approx(0.3 * after.transient_fraction)  # integrates
    assert 0.60 <= after.viable_cells / before.viable_cells <= 0.90


def test_delivery_and_killing_rise_with_field_and_killing_needs_a_higher_field() -> None:
    """Sigmoids of E with E50_kill > E50 (Kotnik & Miklavcic 2000; TWIN_MODELS)."""
    p = ElectroporatorParams()
    fields = [500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0]
    delivery = [delivery_efficiency(e, 20.0, 1, p) for e in fields]
    survival = [pulse_survival(e, 20.0, 1, p) for e in fields]
    assert delivery == sorted(delivery) and survival == sorted(survival, reverse=True)
    assert delivery_efficiency(1500.0, 20.0, 1, p) > 1.0 - pulse_survival(1500.0, 20.0, 1, p)
    assert delivery_efficiency(1500.0, 200.0, 3, p) > delivery_efficiency(1500.0, 20.0, 1, p)


def test_peak_current_follows_buffer_conductivity_and_chamber_geometry() -> None:
    """I = V*sigma*A/d with A = volume/d; hardware trips above 250 A (TWIN_MODELS ranges)."""
    plant = Plant()
    ep = plant.electroporator
    ep.load(100.0)
    ep.program(500.0, 20.0, 1, 2.0)
    expected = 500.0 * 1.2 * 100e-9 / (2e-3) ** 2  # 15 A
    assert ep.pulse().peak_current_a == pytest.approx(expected, rel=0.05)
    ep.unload()
    ep.load(5000.0)
    ep.program(3000.0, 20.0, 1, 2.0)
    tripped = ep.pulse()
    assert tripped.fault == "overcurrent" and tripped.pulses_delivered == 0


def test_pulsed_portions_wait_in_the_recovery_bag_then_return_together() -> None:
    """Plant API: load draws suspension from the bag; unload empties the chamber into the
    recovery bag (so the next portion is fresh culture, never pulsed twice); recover
    returns them all to the culture."""
    plant = Plant()
    bag, ep = plant.bioreactor, plant.electroporator
    for _ in range(2):
        ep.load(1000.0)
        assert ep.loaded_ul == pytest.approx(1000.0)
        assert ep.chamber.transient_fraction == 0.0  # fresh, never pulsed
        ep.program(500.0, 20.0, 1, 2.0)
        ep.pulse()
        ep.unload()
        assert ep.loaded_ul == 0.0
    assert bag.state.volume_ml == pytest.approx(98.0)
    assert ep.recovery_ml == pytest.approx(2.0)
    survivors = ep.recovery.viable_cells
    delivered = ep.recovery.transient_fraction
    assert ep.recover() == pytest.approx(2.0) and ep.recovery_ml == 0.0
    assert bag.state.volume_ml == pytest.approx(100.0)
    assert bag.state.viable_cells == pytest.approx(98.0e6 + survivors)
    share = survivors / (98.0e6 + survivors)
    assert bag.state.transient_fraction == pytest.approx(delivered * share)


def test_transient_delivery_fades_and_leaves_the_integrated_share() -> None:
    """Non-viral transfer: delivery is transient (>80 %), a fraction integrates for good
    (TWIN_MODELS: stable integration is a fraction of transient delivery)."""
    plant = Plant()
    bag, ep = plant.bioreactor, plant.electroporator
    while bag.state.volume_ml > 2.0:
        ep.load(2000.0)
        ep.program(750.0, 20.0, 1, 3.0)
        ep.pulse()
        ep.unload()
    ep.recover()
    first = bag.sample()
    assert first.transduced_pct > 70.0  # expressing right after
    plant.advance_to(8 * 86400.0)
    assert bag.state.transient_fraction < 0.05
    stable = 100.0 * bag.state.transduced_fraction
    assert 15.0 <= stable <= 35.0 and bag.sample().transduced_pct < first.transduced_pct / 2


def test_pulse_with_an_empty_chamber_is_refused_by_the_instrument() -> None:
    """An open circuit fires nothing (instrument checks the load before pulsing; assumed)."""
    ep = Plant().electroporator
    ep.program(500.0, 20.0, 1, 2.0)
    outcome = ep.pulse()
    assert outcome.pulses_delivered == 0 and outcome.fault == "no sample"
