"""Process faults inside the plant, judged on what the bag's true state and sensors do."""

from __future__ import annotations

import pytest

from twin.sim import Plant
from twin.sim.faults import SensorFault
from twin.sim.reference import DAY, HOUR, run_reference_process


def _warm_plant() -> Plant:
    plant = Plant(seed=4)
    plant.advance_to(2 * HOUR)  # at 37 °C
    return plant


def test_failed_heater_lets_the_bag_cool_towards_ambient_and_flags_load_failure() -> None:
    """Losses only: C dT/dt = -UA (T - T_amb) (TWIN_MODELS temperature model)."""
    plant = _warm_plant()
    bag = plant.bioreactor
    assert bag.state.temperature_c == pytest.approx(37.0, abs=0.1)
    assert not bag.observe().heater_fault
    bag.heater_failed = True
    plant.advance_to(plant.t + 1 * HOUR)
    cooled = bag.state.temperature_c
    assert 22.0 < cooled < 35.0
    assert bag.observe().heater_fault  # the controller drives the heater, sees no current
    plant.advance_to(plant.t + 12 * HOUR)
    assert bag.state.temperature_c == pytest.approx(22.0, abs=0.5)
    bag.heater_failed = False
    plant.advance_to(plant.t + 2 * HOUR)
    assert bag.state.temperature_c == pytest.approx(37.0, abs=0.1)


def test_stuck_sensor_freezes_the_reading_not_the_bag() -> None:
    plant = _warm_plant()
    bag = plant.bioreactor
    bag.set_sensor_fault("temperature", SensorFault("stuck", t0=bag.t))
    frozen = bag.observe().temperature_c
    bag.temperature_sp_c = 30.0
    plant.advance_to(plant.t + 2 * HOUR)
    assert bag.state.temperature_c < 31.0  # the truth moved
    assert [bag.observe().temperature_c for _ in range(5)] == [frozen] * 5  # no noise either
    bag.set_sensor_fault("temperature", None)
    assert bag.observe().temperature_c == pytest.approx(bag.state.temperature_c, abs=0.1)


def test_drifting_ph_probe_reads_away_from_the_truth_at_its_rate() -> None:
    plant = _warm_plant()
    bag = plant.bioreactor
    bag.set_sensor_fault("ph", SensorFault("drift", t0=bag.t, rate_per_h=-0.02))
    plant.advance_to(plant.t + 10 * HOUR)
    assert bag.observe().ph - bag.state.ph == pytest.approx(-0.2, abs=0.02)


def test_contamination_collapses_the_culture_with_the_known_signatures() -> None:
    """DO crashes, pH falls, glucose is used up, T cells die (signatures; rates assumed)."""
    run = run_reference_process(seed=5, days=4.0, harvest=False)
    plant, bag = run.plant, run.plant.bioreactor
    healthy = bag.observe()
    viability0, glucose0, cells0 = (
        bag.state.viability_pct,
        bag.state.glucose_mm,
        bag.state.viable_cells,
    )
    bag.contaminate(1.0e3)
    plant.advance_to(plant.t + 1 * DAY)
    sick = bag.observe()
    assert sick.do_pct < 5.0 < healthy.do_pct
    assert sick.ph < healthy.ph - 0.1
    assert bag.state.glucose_mm < 0.5 * glucose0
    assert bag.state.viability_pct < viability0 - 20.0
    assert bag.state.viable_cells < 0.7 * cells0
    assert sick.viable_cells_per_ml < healthy.viable_cells_per_ml


def test_uncontaminated_plant_is_unchanged_by_the_fault_machinery() -> None:
    """No fault set: the 10-day reference run still gives its 20-40-fold (Zhu 2018)."""
    run = run_reference_process(seed=0)
    assert 20.0 <= run.fold_expansion <= 40.0
    assert run.plant.bioreactor.state.contaminant_cells == 0.0
