"""Bioreactor behaviours a process engineer would notice on the trend screen."""

from __future__ import annotations

from dataclasses import replace

from twin.equipment import Gas, Material
from twin.sim import Inoculum, Plant
from twin.sim.chemistry import alkalinity_at
from twin.sim.reference import DAY, HOUR, gas_mix, run_reference_process


def _minutes_to_reach(plant: Plant, celsius: float) -> float:
    for second in range(1, 4 * 3600):
        plant.advance_to(float(second))
        if plant.bioreactor.state.temperature_c >= celsius:
            return second / 60.0
    return float("inf")


def test_bag_warms_from_22_to_37_c_in_tens_of_minutes() -> None:
    """A 0.1-1 L bag warms from 22 °C in tens of minutes (TWIN_MODELS: UA assumed, calibrated)."""
    small = _minutes_to_reach(Plant(inoculum=Inoculum(volume_ml=100.0)), 36.9)
    large = _minutes_to_reach(Plant(inoculum=Inoculum(volume_ml=1000.0)), 36.9)
    assert 5.0 <= small < large <= 60.0


def test_heater_loop_settles_without_overshoot() -> None:
    """The controller's own loop holds 37 °C (TWIN_MODELS reference process: 37 °C)."""
    plant = Plant()
    plant.advance_to(2 * HOUR)
    temps = []
    for minute in range(121, 240):
        plant.advance_to(minute * 60.0)
        temps.append(plant.bioreactor.state.temperature_c)
    assert max(temps) < 37.05
    assert min(temps) > 36.95


def test_do_falls_as_density_rises_and_recovers_with_more_o2() -> None:
    """Uptake qO2*Xv against kLa ~3.5 1/h at <=20 rpm (Bai 2019; Blood 1966 qO2)."""
    run = run_reference_process(seed=1, days=8.0, do_control=False, harvest=False)
    early = [do for t, do in run.do_trace if 0.9 * DAY <= t <= DAY]
    late = [do for t, do in run.do_trace if 7.9 * DAY <= t <= 8 * DAY]
    assert sum(late) / len(late) < sum(early) / len(early) - 8.0
    plant = run.plant
    before = plant.bioreactor.observe().do_pct
    for gas, sccm in gas_mix(0.45).items():
        plant.gas.mfc_for(gas).setpoint_sccm = sccm
    plant.advance_to(plant.t + 2 * HOUR)
    assert plant.bioreactor.observe().do_pct > before + 30.0


def test_faster_rocking_raises_do() -> None:
    """kLa rises from ~3.5 1/h at 20 rpm to 65 1/h at 40 rpm (Bai 2019)."""
    run = run_reference_process(seed=2, days=6.0, do_control=False, harvest=False)
    plant = run.plant
    bag = plant.bioreactor
    saturation = bag.params.do_sat_air_um * bag.inlet_o2_fraction / bag.params.air_o2_fraction
    deficit_15_rpm = saturation - bag.state.do_um
    bag.rocking_rpm = 35.0
    plant.advance_to(plant.t + HOUR)
    deficit_35_rpm = saturation - bag.state.do_um
    assert deficit_35_rpm < deficit_15_rpm / 5.0


def test_ph_near_7_4_at_5_percent_co2_falls_with_more_co2_and_recovers_with_base() -> None:
    """Media with 1.5-2.2 g/L NaHCO3 run at 5% CO2; HH pH = 6.1 + log10(HCO3/(0.0301 pCO2))."""
    plant = Plant()
    plant.gas.mfc_for(Gas.AIR).setpoint_sccm = 190.0
    plant.gas.mfc_for(Gas.CO2).setpoint_sccm = 10.0
    plant.bioreactor.rocking_rpm = 15.0
    plant.advance_to(6 * HOUR)
    at_5 = plant.bioreactor.state.ph
    assert 7.2 <= at_5 <= 7.5
    plant.gas.mfc_for(Gas.CO2).setpoint_sccm = 30.0
    plant.advance_to(18 * HOUR)
    at_high_co2 = plant.bioreactor.state.ph
    assert at_high_co2 < at_5 - 0.2
    plant.bioreactor.add(Material.BASE, 2.0)
    assert plant.bioreactor.state.ph > at_high_co2 + 0.05


def test_cells_barely_grow_until_activator_is_added() -> None:
    """Resting T cells need CD3/CD28 activation to proliferate (Zhu 2018 day-0 activation)."""
    resting = Plant()
    active = Plant()
    active.bioreactor.add(Material.ACTIVATOR, 1.0)
    for plant in (resting, active):
        for gas, sccm in gas_mix(0.199).items():  # 5% CO2 in air
            plant.gas.mfc_for(gas).setpoint_sccm = sccm
        plant.bioreactor.rocking_rpm = 15.0
        plant.bioreactor.add(Material.IL2, 1.0)
        plant.advance_to(3 * DAY)
    start = 1.0e8
    assert resting.bioreactor.state.viable_cells < 1.1 * start
    assert active.bioreactor.state.viable_cells > 1.5 * start


def test_perfusion_washes_out_lactate_and_restores_glucose() -> None:
    """Perfusion from ~2e6/mL at 0.5-1 working volumes/day (Kale 2016; Xuri notes)."""
    held = run_reference_process(seed=4, days=8.0, perfusion=False, harvest=False)
    fed = run_reference_process(seed=4, days=8.0, harvest=False)
    assert fed.plant.bioreactor.state.lactate_mm < held.plant.bioreactor.state.lactate_mm - 5.0
    assert fed.plant.bioreactor.state.glucose_mm > held.plant.bioreactor.state.glucose_mm + 2.0


def test_harvest_hold_at_high_density_loses_viable_cells_as_reported() -> None:
    """250e6/mL at 37 °C, glucose 0.5 mM, pH 6, lactate 55 mM: 58%/41% viable after 3 h/6 h."""
    plant = Plant(inoculum=Inoculum(volume_ml=50.0, viable_cells_per_ml=250e6, viability_pct=95.0))
    s = plant.bioreactor.state
    s.temperature_c, s.glucose_mm, s.lactate_mm, s.activated = 37.0, 0.5, 55.0, 0.3
    s.alkalinity_mm = alkalinity_at(6.0, s.pco2_mmhg, plant.bioreactor.params)
    s.ph = 6.0
    start = s.viable_cells
    plant.advance_to(3 * HOUR)
    after_3h = s.viable_cells / start
    plant.advance_to(6 * HOUR)
    after_6h = s.viable_cells / start
    assert 0.45 <= after_3h <= 0.70
    assert 0.30 <= after_6h <= 0.52


def test_holding_a_dense_culture_without_perfusion_degrades_viability() -> None:
    """Hold at high density degrades (harvest-hold abstract); perfusion prevents it. Four
    days unfed at ~5e6/mL: glucose runs out on the fourth, and the culture dies with it."""
    held = run_reference_process(seed=5, days=7.0, harvest=False)
    fed = run_reference_process(seed=5, days=7.0, harvest=False)
    held.plant.bioreactor.perfusion_ml_per_day = 0.0
    for run in (held, fed):
        run.plant.advance_to(11 * DAY)
    assert (
        held.plant.bioreactor.state.viability_pct < fed.plant.bioreactor.state.viability_pct - 10.0
    )
    assert held.plant.bioreactor.state.ph < fed.plant.bioreactor.state.ph - 0.2


def test_sample_draws_one_ml_and_reports_counted_figures() -> None:
    """Plant API: sample() draws 1 mL and counts it with counting noise."""
    plant = Plant()
    sample = plant.bioreactor.sample()
    assert plant.bioreactor.state.volume_ml == 99.0
    assert abs(sample.viable_cells_per_ml - 1.0e6) < 0.25e6
    assert 90.0 <= sample.viability_pct <= 100.0


def test_harvest_drains_the_bag_and_keeps_the_product_figures() -> None:
    """Plant API: harvest() drains the bag and keeps the harvested product figures."""
    plant = Plant()
    volume = plant.bioreactor.harvest()
    assert volume == 100.0
    assert plant.bioreactor.state.volume_ml == 0.0
    record = plant.bioreactor.harvested
    assert record is not None and record.viable_cells == 1.0e8
    plant.advance_to(DAY)  # an empty bag must not break the integrator
    assert replace(record).viability_pct == record.viability_pct


def _activated_plant(il2_ml: float) -> Plant:
    plant = Plant()
    for gas, sccm in gas_mix(0.199).items():  # 5% CO2 in air
        plant.gas.mfc_for(gas).setpoint_sccm = sccm
    plant.bioreactor.rocking_rpm = 15.0
    plant.bioreactor.add(Material.ACTIVATOR, 1.0)
    plant.bioreactor.add(Material.IL2, il2_ml)
    return plant


def test_il2_supports_growth() -> None:
    """IL-2 ~100 U/mL at activation (Zhu 2018; PLoS One 10.1371/journal.pone.0077106)."""
    with_il2, without = _activated_plant(1.0), _activated_plant(0.0)
    for plant in (with_il2, without):
        plant.advance_to(4 * DAY)
    assert with_il2.bioreactor.state.viable_cells > 1.2 * without.bioreactor.state.viable_cells


def test_vector_at_moi_5_to_10_transduces_30_to_50_percent_within_two_days() -> None:
    """Lentiviral MOI 5-10 gave ~37% transduction, read on day 1-2 (Zhu 2018)."""
    for moi in (5.0, 10.0):
        plant = _activated_plant(1.0)
        plant.advance_to(DAY)
        bag = plant.bioreactor
        bag.add(Material.VECTOR, moi * bag.state.viable_cells / bag.params.vector_titer_tu_per_ml)
        plant.advance_to(DAY + 6 * HOUR)
        assert bag.state.transduced_fraction < 0.25  # expression still developing
        plant.advance_to(3 * DAY)
        assert 0.30 <= bag.state.transduced_fraction <= 0.50
