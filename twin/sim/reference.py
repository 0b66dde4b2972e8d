"""The reference CAR-T expansion, driven straight through the Plant API (no servers).

Day 0: 100 mL at 1e6 viable/mL, 37 °C, 5% CO2 in air, ACTIVATOR and IL-2 added;
day 1: lentiviral VECTOR at MOI 5 (dose from a counted sample); days 2-3: MEDIUM
up to ~500 mL; perfusion from ~2e6/mL at 0.5, then 1 working volume/day; DO held
at ~40% by trading N2 against O2; harvest on day 10 (TWIN_MODELS.md reference
process, Zhu 2018). Tests and the twin's calibration use it as the yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twin.equipment import CellSample, Gas, Material
from twin.sim.params import PlantParams
from twin.sim.plant import Plant
from twin.sim.population import HarvestRecord, Inoculum

__all__ = ["ReferenceRun", "gas_mix", "run_reference_process"]

DAY = 86_400.0
HOUR = 3_600.0


def gas_mix(
    y_o2: float,
    total_sccm: float = 200.0,
    co2_fraction: float = 0.05,
    o2_cap_sccm: float = 100.0,
) -> dict[Gas, float]:
    """Flows giving an inlet O2 fraction ``y_o2`` with 5% CO2: air+N2 below air, air+O2 above."""
    air_o2 = 0.20946
    co2 = co2_fraction * total_sccm
    rest = total_sccm - co2
    y_air = air_o2 * rest / total_sccm  # inlet O2 fraction with air as the balance
    if y_o2 <= y_air:
        air = max(0.0, y_o2 * total_sccm / air_o2)
        return {Gas.AIR: air, Gas.N2: rest - air, Gas.O2: 0.0, Gas.CO2: co2}
    o2 = min(o2_cap_sccm, (y_o2 * total_sccm - air_o2 * rest) / (1.0 - air_o2))
    return {Gas.AIR: rest - o2, Gas.N2: 0.0, Gas.O2: o2, Gas.CO2: co2}


@dataclass
class ReferenceRun:
    """What the driver saw: daily counted samples, DO trace, and the harvested product."""

    plant: Plant
    samples: list[tuple[float, CellSample]] = field(default_factory=list)
    do_trace: list[tuple[float, float]] = field(default_factory=list)
    harvest: HarvestRecord | None = None
    inoculum_viable_cells: float = 0.0

    @property
    def fold_expansion(self) -> float:
        """Harvested viable cells over inoculated viable cells."""
        if self.harvest is None or self.inoculum_viable_cells <= 0.0:
            return 0.0
        return self.harvest.viable_cells / self.inoculum_viable_cells


def _set_gas(plant: Plant, flows: dict[Gas, float]) -> None:
    for gas, sccm in flows.items():
        mfc = plant.gas.mfc_for(gas)
        mfc.setpoint_sccm = min(mfc.full_scale_sccm, max(0.0, sccm))


def run_reference_process(
    seed: int = 0,
    *,
    days: float = 10.0,
    params: PlantParams | None = None,
    do_control: bool = True,
    do_setpoint_pct: float = 40.0,
    moi: float = 5.0,
    perfusion: bool = True,
    harvest: bool = True,
    control_interval_s: float = 300.0,
    plant: Plant | None = None,
) -> ReferenceRun:
    """Run the reference process on a fresh (or given, unstarted) Plant."""
    inoc = Inoculum()
    plant = plant or Plant(params, seed=seed, inoculum=inoc)
    bag = plant.bioreactor
    run = ReferenceRun(plant=plant, inoculum_viable_cells=bag.state.viable_cells)
    bag.temperature_sp_c = 37.0
    bag.rocking_rpm = 15.0  # TWIN_MODELS: rocking bag 10-15 rpm
    y_o2 = 0.199  # start on 5% CO2 in air
    _set_gas(plant, gas_mix(y_o2))
    bag.add(Material.ACTIVATOR, 1.0)  # 10 µL/mL
    bag.add(Material.IL2, 1.0)  # ~100 U/mL

    # DO loop (velocity PI on the inlet O2 fraction); gains from the bag's O2 dynamics
    kc, ti = 0.0010, 1800.0  # O2 fraction per % DO, integral time s (assumed tuning)
    last_error = 0.0
    t, end = 0.0, days * DAY
    next_day = DAY
    while t < end:
        t = min(end, t + control_interval_s)
        plant.advance_to(t)
        reading = bag.observe()
        run.do_trace.append((t, reading.do_pct))
        if do_control:
            error = do_setpoint_pct - reading.do_pct
            y_o2 += kc * (error - last_error) + kc * control_interval_s / ti * error
            y_o2 = min(0.6, max(0.0, y_o2))
            last_error = error
            _set_gas(plant, gas_mix(y_o2))
        if t >= next_day - 1e-6 and t < end:
            day = round(t / DAY)
            next_day += DAY
            sample = bag.sample()
            run.samples.append((t, sample))
            volume = bag.observe().volume_ml  # load cell, as the engine would read it
            if day == 1:
                cells = sample.viable_cells_per_ml * volume
                bag.add(
                    Material.VECTOR, moi * cells / plant.params.bioreactor.vector_titer_tu_per_ml
                )
            elif day == 2:
                bag.add(Material.MEDIUM, max(0.0, 300.0 - volume))
            elif day == 3:
                bag.add(Material.MEDIUM, max(0.0, 500.0 - volume))
            if perfusion and day >= 3:
                density = sample.viable_cells_per_ml
                if density >= 4.0e6:
                    bag.perfusion_ml_per_day = round(1.0 * volume)
                elif density >= 2.0e6:
                    bag.perfusion_ml_per_day = round(0.5 * volume)
    if harvest:
        bag.harvest()
        run.harvest = bag.harvested
    return run
