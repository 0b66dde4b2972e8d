"""Rocking-bag bioreactor: heater loop, O2/CO2 transfer, pH, T-cell growth, feeds and sensors.

The true state (:class:`BioreactorState`) evolves only through :meth:`advance`
(called by the Plant in fixed steps) and the instantaneous operations a device
server performs (``add``, ``sample``, ``harvest``); what sensors report comes from
:meth:`observe`, which adds seeded noise and resolution and never touches the state.
Slow biology is stepped with semi-implicit Euler (positive by construction); the
fast parts (temperature loop, dissolved O2 and CO2) are integrated analytically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twin.equipment import CellSample, Gas, Material
from twin.sim.chemistry import (
    inlet_fractions,
    kla_per_h,
    medium_alkalinity,
    pco2_mmhg,
    solve_ph,
)
from twin.sim.donor import REFERENCE_DONOR, DonorProfile
from twin.sim.faults import SensorFault, contamination_rates
from twin.sim.kinetics import death_rate, growth_rate, metabolism_factor, temperature_factor
from twin.sim.noise import Sensor, quantize, sensor_rng
from twin.sim.params import BioreactorParams
from twin.sim.population import BioreactorState, CellSuspension, HarvestRecord, Inoculum
from twin.sim.thermal import heat_capacity_j_per_k, heater_output, step_temperature

__all__ = ["BioreactorModel", "BioreactorReading"]

_LN2 = math.log(2.0)


def _expressing(stable: float, transient: float) -> float:
    """Share of cells a flow cytometer sees CAR+: integrated, or still expressing transient
    cargo (independent: a cell may carry both)."""
    return stable + transient * (1.0 - stable)


@dataclass(frozen=True)
class BioreactorReading:
    """What the bag's sensors report at one poll."""

    temperature_c: float
    do_pct: float  # % air saturation
    ph: float
    volume_ml: float
    viable_cells_per_ml: float  # in-line capacitance estimate
    rocking_rpm: float
    perfusion_ml_per_day: float
    temperature_sp_c: float
    heater_fault: bool = False  # the controller drives the heater and measures no current


class BioreactorModel:
    """One rocking bag; setpoints are plain attributes the device server writes."""

    #: The controller has power (a scenario's ``power_loss`` takes it away: no heat).
    #: A class default, so a plant kept before it existed unpickles with it.
    powered: bool = True

    def __init__(
        self,
        params: BioreactorParams | None = None,
        *,
        seed: int = 0,
        inoculum: Inoculum | None = None,
        donor: DonorProfile | None = None,
    ) -> None:
        p = params or BioreactorParams()
        inoc = inoculum or Inoculum()
        self.params = p
        self.donor = donor or REFERENCE_DONOR
        #: Rocking angle (degrees): a bench setting of the rocker, not a process value.
        self.rocking_angle_deg: float = p.reference_angle_deg
        self.inlet_sccm: float = 0.0  # total gas flow into the headspace
        self.temperature_sp_c: float = p.initial_setpoint_c
        self.rocking_rpm: float = 0.0
        self.perfusion_ml_per_day: float = 0.0
        self.t: float = 0.0
        self.harvested: HarvestRecord | None = None
        self.inlet_o2_fraction, self.inlet_co2_fraction = p.air_o2_fraction, p.air_co2_fraction
        self._medium_alk = medium_alkalinity(p)
        self._medium_pco2 = pco2_mmhg(p.medium_reference_co2_fraction, p)
        viable = inoc.volume_ml * inoc.viable_cells_per_ml
        start = inoc.viability_pct if donor is None else donor.starting_viability_pct
        viability = min(max(start, 1e-6), 100.0) / 100.0
        self.state = BioreactorState(
            temperature_c=p.initial_temperature_c,
            do_um=p.do_sat_air_um,
            ph=solve_ph(self._medium_alk, self._medium_pco2, 7.4, p),
            volume_ml=inoc.volume_ml,
            viable_cells=viable,
            dead_cells=viable * (1.0 - viability) / viability,
            glucose_mm=p.medium_glucose_mm,
            lactate_mm=0.0,
            alkalinity_mm=self._medium_alk,
            pco2_mmhg=self._medium_pco2,
            il2_u_per_ml=0.0,
            stimulus=0.0,
            activated=0.0,
            transduced_fraction=0.0,
            transduction_target=0.0,
            glutamine_mm=p.medium_glutamine_mm,
            cd4_fraction=self.donor.cd4_fraction,
            headspace_o2=p.air_o2_fraction,
            headspace_co2=p.air_co2_fraction,
        )
        self._temp_sensor = Sensor(seed, "bioreactor/temperature", p.temperature_sensor)
        self._do_sensor = Sensor(seed, "bioreactor/do", p.do_sensor)
        self._ph_sensor = Sensor(seed, "bioreactor/ph", p.ph_sensor)
        self._volume_sensor = Sensor(seed, "bioreactor/volume", p.volume_sensor)
        self._capacitance_rng = sensor_rng(seed, "bioreactor/capacitance")
        self._counter_rng = sensor_rng(seed, "bioreactor/cell-counter")
        self.heater_failed = False  # fault: the heater gives no heat, whatever the duty
        self.sensor_faults: dict[str, SensorFault] = {}  # fault: sensor name -> stuck/drift
        self._decay_dt = -1.0
        self._decay: tuple[float, float, float] = (1.0, 1.0, 1.0)

    # ------------------------------------------------------------------ plant coupling
    def set_inlet(self, flows: dict[Gas, float]) -> None:
        """Take the gas dispenser's outlet as the gas flowing through the headspace."""
        self.inlet_o2_fraction, self.inlet_co2_fraction = inlet_fractions(flows, self.params)
        self.inlet_sccm = sum(f for f in flows.values() if f > 0.0)

    def _decays(self, h: float) -> tuple[float, float, float]:
        if h != self._decay_dt:
            p = self.params
            self._decay_dt = h
            self._decay = (
                math.exp(-h / p.activation_tau_h),
                math.exp(-h / p.transduction_tau_h),
                math.exp(-h * p.lysis_per_h),
            )
        return self._decay

    def kla_per_h(self) -> float:
        """O2 kLa now: rocking rate (Bai 2019), angle and fill (a thinner wave renews faster)."""
        p, v = self.params, self.state.volume_ml
        fill = max(v, 1.0) / p.bag_volume_ml
        angle = max(self.rocking_angle_deg, 0.0) / p.reference_angle_deg
        shape = angle**p.kla_angle_exponent * (p.reference_fill / fill) ** p.kla_fill_exponent
        rocked = kla_per_h(self.rocking_rpm, p)
        if self.rocking_rpm <= 0.0:
            return rocked  # a still bag: surface transfer only
        return rocked * shape

    def advance(self, dt_s: float) -> None:
        """Integrate the true state over one step of ``dt_s`` seconds (the Plant slices time)."""
        if dt_s <= 0.0:
            return
        p, s = self.params, self.state
        self.t += dt_s
        v = s.volume_ml
        if self.heater_failed or not self.powered:  # only losses: cools towards ambient
            tau = heat_capacity_j_per_k(v, p) / p.loss_ua_w_per_k
            s.temperature_c = p.ambient_c + (s.temperature_c - p.ambient_c) * math.exp(-dt_s / tau)
        else:
            s.temperature_c = step_temperature(s.temperature_c, self.temperature_sp_c, v, dt_s, p)
        s.heater_output = heater_output(s.temperature_c, self.temperature_sp_c, p)
        if v <= 1e-9:
            return
        h = dt_s / 3600.0
        act_decay, tx_decay, lysis_decay = self._decays(h)
        xv, act, glc, lac, do = s.viable_cells, s.activated, s.glucose_mm, s.lactate_mm, s.do_um
        gln, amm, donor = s.glutamine_mm, s.ammonia_mm, self.donor
        x = xv / v
        f_t = temperature_factor(s.temperature_c, p)
        f_m = metabolism_factor(s.temperature_c, p)
        mu = growth_rate(
            act,
            glc,
            lac,
            do,
            s.ph,
            f_t,
            s.il2_u_per_ml,
            p,
            glutamine_mm=gln,
            ammonia_mm=amm,
            cells_per_ml=x,
            potential=donor.growth_potential,
        )
        kd = death_rate(
            glc,
            lac,
            s.ph,
            p,
            temperature_c=s.temperature_c,
            activated=act if s.stimulus > 0.0 else 1.0,  # no activation given: resting, alive
            death_factor=donor.death_factor,
        )
        dil = self.perfusion_ml_per_day / v / 24.0  # perfusion dilution rate, 1/h
        bact = s.contaminant_cells
        if bact > 0.0:
            mu_b, kb_glc, kb_o2, kill = contamination_rates(bact / v, glc, do, p)
            kd += kill
        else:
            mu_b = kb_glc = kb_o2 = 0.0

        # glucose uptake (Monod-limited, implicit so it never goes negative) and lactic acid
        q_glc = (p.qglc_resting + act * (p.qglc_activated - p.qglc_resting)) * f_m
        k_up = q_glc * x * 1e-9 / (p.glucose_uptake_ks_mm + glc)  # 1/h
        glc_new = (glc + h * dil * p.medium_glucose_mm) / (1.0 + h * (dil + k_up + kb_glc))
        acid = p.lactate_per_glucose * k_up * glc_new  # mM/h lactic acid
        acid_b = p.contaminant_acid_per_glucose * kb_glc * glc_new  # bacterial acids
        s.glucose_mm = glc_new
        s.lactate_mm = (lac + h * acid) / (1.0 + h * dil)
        s.alkalinity_mm = (s.alkalinity_mm - h * (acid + acid_b) + h * dil * self._medium_alk) / (
            1.0 + h * dil
        )
        # IL-2: bound and taken up by the (activated) cells, receptor-saturated, and decaying
        il2 = s.il2_u_per_ml
        k_il2 = p.il2_uptake_u_per_cell_h * x * act / (p.il2_k_u_per_ml + il2)
        s.il2_u_per_ml = (il2 + h * dil * p.medium_il2_u_per_ml) / (
            1.0 + h * (dil + p.il2_decay_per_h + k_il2)
        )
        # glutamine: taken up (Monod) and breaking down by itself; both release ammonia
        q_gln = (p.qgln_resting + act * (p.qgln_activated - p.qgln_resting)) * f_m
        k_gln = q_gln * x * 1e-9 / (p.glutamine_ks_mm + gln)  # 1/h
        gln_new = (gln + h * dil * p.medium_glutamine_mm) / (
            1.0 + h * (dil + k_gln + p.glutamine_decay_per_h)
        )
        released = (p.ammonia_per_glutamine * k_gln + p.glutamine_decay_per_h) * gln_new
        s.glutamine_mm = gln_new
        s.ammonia_mm = (amm + h * released) / (1.0 + h * dil)

        # dissolved O2: kLa*(C* - C) - uptake, uptake linearised as k_u*C (exact exponential)
        q_o2 = (p.qo2_resting + act * (p.qo2_activated - p.qo2_resting)) * f_m
        k_u = q_o2 * x * 1e-6 / (p.do_ks_um + do) + kb_o2  # 1/h
        kla = self.kla_per_h()
        c_star = p.do_sat_air_um * s.headspace_o2 / p.air_o2_fraction
        k_tot = kla + k_u
        c_inf = kla * c_star / k_tot
        s.do_um = c_inf + (do - c_inf) * math.exp(-k_tot * h)

        # dissolved CO2: stripped towards the headspace's pCO2, raised by respiration
        k_co2 = p.kla_co2_ratio * kla
        production = p.respiratory_quotient * k_u * s.do_um / (p.co2_solubility_mm_per_mmhg * 1e3)
        p_inf = pco2_mmhg(s.headspace_co2, p) + production / k_co2
        s.pco2_mmhg = p_inf + (s.pco2_mmhg - p_inf) * math.exp(-k_co2 * h)
        s.ph = solve_ph(s.alkalinity_mm, s.pco2_mmhg, s.ph, p)
        # CO2 leaves the liquid as it is made (mM/h): O2 uptake x RQ (production is mmHg/h)
        self._headspace(h, kla * (c_star - s.do_um), production * p.co2_solubility_mm_per_mmhg, v)

        # cells: exponential growth/death over the step; dead cells lyse slowly
        xv_new = xv * math.exp((mu - kd) * h)
        s.dead_cells = s.dead_cells * lysis_decay + kd * 0.5 * (xv + xv_new) * h
        s.viable_cells = xv_new
        if bact > 0.0:  # bacteria grow (logistic) and wash out with the perfusion
            s.contaminant_cells = bact * math.exp((mu_b - dil) * h)
        # the burst wanes with the doublings it drove; activation follows it with a lag
        s.doublings += mu * h / _LN2
        r = s.doublings / donor.division_capacity
        r2 = r * r
        s.burst = 1.0 / (1.0 + p.burst_sharpness * r2 * r2)  # near 1, then falls off by D
        drive = s.stimulus * s.burst
        s.activated = drive + (act - drive) * act_decay
        # CD8+ cells divide a little faster: the CD4+ share drifts down while cells divide
        f4 = s.cd4_fraction
        s.cd4_fraction = f4 - h * p.cd8_growth_advantage * mu * f4 * (1.0 - f4)
        if s.transient_fraction > 0.0:  # degraded, and diluted by each division
            fade = h / p.transient_expression_tau_h + mu * h
            s.transient_fraction *= math.exp(-fade)
        target = s.transduction_target
        s.transduced_fraction = target + (s.transduced_fraction - target) * tx_decay
        copies = s.copies_target
        s.vector_copies = copies + (s.vector_copies - copies) * tx_decay

    def _headspace(self, h: float, otr_um_per_h: float, co2_mm_per_h: float, v_ml: float) -> None:
        """The gas above the liquid: renewed by the inlet flow, drawn on by the culture.

        With the gas flowing (hundreds of sccm) it is the inlet gas within minutes; with
        no flow a dense culture uses its O2 and fills it with CO2 (a closed bag).
        """
        p, s = self.params, self.state
        vh = max(p.bag_volume_ml - v_ml, p.min_headspace_ml)
        renew = self.inlet_sccm * 60.0 / vh  # 1/h
        wash = math.exp(-renew * h)
        # liquid uptake of O2 (umol/h) and release of CO2 (umol/h) as headspace fractions per h
        o2_out = otr_um_per_h * v_ml * 1e-3 * 1e-6 * p.molar_volume_ml / vh
        co2_in = co2_mm_per_h * v_ml * 1e-3 * 1e-3 * p.molar_volume_ml / vh
        if renew > 0.0:
            o2_eq = self.inlet_o2_fraction - o2_out / renew
            co2_eq = self.inlet_co2_fraction + co2_in / renew
            s.headspace_o2 = o2_eq + (s.headspace_o2 - o2_eq) * wash
            s.headspace_co2 = co2_eq + (s.headspace_co2 - co2_eq) * wash
        else:
            s.headspace_o2 -= o2_out * h
            s.headspace_co2 += co2_in * h
        s.headspace_o2 = min(1.0, max(0.0, s.headspace_o2))
        s.headspace_co2 = min(1.0, max(0.0, s.headspace_co2))

    # ------------------------------------------------------------------ operations
    def _mix_in(self, volume_ml: float, glucose: float, alk: float, il2: float, do: float) -> None:
        """Blend a room-temperature liquid into the bag (concentrations by volume)."""
        p, s = self.params, self.state
        v0, v1 = s.volume_ml, s.volume_ml + volume_ml
        if v1 <= 0.0:
            return
        w0, w1 = v0 / v1, volume_ml / v1
        c0 = heat_capacity_j_per_k(v0, p)
        c_add = p.medium_heat_capacity_j_per_k_ml * volume_ml
        s.temperature_c = (s.temperature_c * c0 + p.ambient_c * c_add) / (c0 + c_add)
        s.glucose_mm = s.glucose_mm * w0 + glucose * w1
        s.lactate_mm = s.lactate_mm * w0
        gln = p.medium_glutamine_mm if glucose > 0.0 else 0.0  # medium carries it; base not
        s.glutamine_mm = s.glutamine_mm * w0 + gln * w1
        s.ammonia_mm = s.ammonia_mm * w0
        s.alkalinity_mm = s.alkalinity_mm * w0 + alk * w1
        s.il2_u_per_ml = s.il2_u_per_ml * w0 + il2 * w1
        s.do_um = s.do_um * w0 + do * w1
        s.pco2_mmhg = s.pco2_mmhg * w0 + self._medium_pco2 * w1
        s.volume_ml = v1
        s.ph = solve_ph(s.alkalinity_mm, s.pco2_mmhg, s.ph, p)

    def add(self, material: Material, volume_ml: float) -> None:
        """Dose a material instantly; reagents come diluted in basal medium."""
        if volume_ml < 0.0 or not math.isfinite(volume_ml):
            raise ValueError(f"addition volume must be >= 0 mL, got {volume_ml}")
        if volume_ml == 0.0:
            return
        p, s = self.params, self.state
        material = Material(material)
        if material is Material.BASE:
            self._mix_in(volume_ml, 0.0, p.base_stock_mm, 0.0, p.do_sat_air_um)
            return
        il2 = {Material.MEDIUM: p.medium_il2_u_per_ml, Material.IL2: p.il2_stock_u_per_ml}
        self._mix_in(
            volume_ml,
            p.medium_glucose_mm,
            self._medium_alk,
            il2.get(material, 0.0),
            p.do_sat_air_um,
        )
        if material is Material.ACTIVATOR:
            dose_ul_per_ml = 1000.0 * volume_ml / s.volume_ml
            s.stimulus = max(s.stimulus, min(1.0, dose_ul_per_ml / p.activator_full_dose_ul_per_ml))
            s.burst, s.doublings = 1.0, 0.0  # a new activation: a new proliferative burst
        elif material is Material.VECTOR and s.viable_cells > 0.0:
            moi = volume_ml * p.vector_titer_tu_per_ml / s.viable_cells
            susceptible = p.transduction_resting + (1.0 - p.transduction_resting) * s.activated
            lam = p.transduction_per_moi * moi * susceptible  # integrations per cell (Poisson)
            ceiling = self.donor.transduction_ceiling
            reachable = max(0.0, ceiling - s.transduction_target)
            s.transduction_target += reachable * (1.0 - math.exp(-lam))
            s.copies_target += ceiling * lam

    def withdraw(self, volume_ml: float) -> CellSuspension:
        """Take well-mixed suspension out of the bag (sample, electroporation load)."""
        s = self.state
        vol = min(max(volume_ml, 0.0), s.volume_ml)
        share = vol / s.volume_ml if s.volume_ml > 0.0 else 0.0
        taken = CellSuspension(
            vol,
            s.viable_cells * share,
            s.dead_cells * share,
            s.transduced_fraction,
            s.vector_copies,
            s.transient_fraction,
        )
        s.viable_cells -= taken.viable_cells
        s.dead_cells -= taken.dead_cells
        s.volume_ml -= vol
        if s.volume_ml <= 1e-9:
            s.volume_ml, s.viable_cells, s.dead_cells = 0.0, 0.0, 0.0
        return taken

    def receive(self, suspension: CellSuspension) -> None:
        """Take cells back (electroporation unload); the liquid counts as bag medium."""
        s, p = self.state, self.params
        total = s.viable_cells + suspension.viable_cells
        if total > 0.0:  # per-cell figures pooled, weighted by the viable cells of each

            def pooled(mine: float, theirs: float) -> float:
                return (mine * s.viable_cells + theirs * suspension.viable_cells) / total

            stable, copies = suspension.transduced_fraction, suspension.vector_copies
            s.transduced_fraction = pooled(s.transduced_fraction, stable)
            s.transduction_target = pooled(s.transduction_target, stable)
            s.vector_copies = pooled(s.vector_copies, copies)
            s.copies_target = pooled(s.copies_target, copies)
            s.transient_fraction = pooled(s.transient_fraction, suspension.transient_fraction)
        c0 = heat_capacity_j_per_k(s.volume_ml, p)
        c_add = p.medium_heat_capacity_j_per_k_ml * suspension.volume_ml
        s.temperature_c = (s.temperature_c * c0 + p.ambient_c * c_add) / (c0 + c_add)
        s.viable_cells = total
        s.dead_cells += suspension.dead_cells
        s.volume_ml += suspension.volume_ml

    def sample(self) -> CellSample:
        """Draw 1 mL and count it: counting noise on density, viability, metabolites, CAR+."""
        p, s = self.params, self.state
        glucose, lactate = s.glucose_mm, s.lactate_mm
        drawn = self.withdraw(p.sample_volume_ml)
        rng = self._counter_rng
        if drawn.volume_ml <= 0.0:
            return CellSample(0.0, 0.0, 0.0, 0.0, 0.0)
        density = drawn.viable_cells / drawn.volume_ml * (1.0 + rng.gauss(0.0, p.count_rel_sd))
        total = drawn.viable_cells + drawn.dead_cells
        viability = 100.0 * drawn.viable_cells / total if total > 0.0 else 0.0
        viability += rng.gauss(0.0, p.viability_sd_pct)
        glucose += rng.gauss(0.0, p.metabolite_sd_mm)
        lactate += rng.gauss(0.0, p.metabolite_sd_mm)
        expressing = _expressing(drawn.transduced_fraction, drawn.transient_fraction)
        car = 100.0 * expressing + rng.gauss(0.0, p.flow_cytometry_sd_pct)
        return CellSample(
            viable_cells_per_ml=quantize(max(0.0, density), 1e3),
            viability_pct=quantize(min(100.0, max(0.0, viability)), 0.1),
            glucose_mm=quantize(max(0.0, glucose), 0.01),
            lactate_mm=quantize(max(0.0, lactate), 0.01),
            transduced_pct=quantize(min(100.0, max(0.0, car)), 0.1),
        )

    def harvest(self, volume_ml: float | None = None) -> float:
        """Drain the bag into the product bag (all of it, or ``volume_ml``: a harvest stopped
        part-way); the product bag, ``harvested``, pools what each drain brought."""
        s = self.state
        drained = self.withdraw(s.volume_ml if volume_ml is None else volume_ml)
        part = HarvestRecord(
            t_s=self.t,
            volume_ml=drained.volume_ml,
            viable_cells=drained.viable_cells,
            dead_cells=drained.dead_cells,
            transduced_fraction=_expressing(
                drained.transduced_fraction, drained.transient_fraction
            ),
            vector_copies=drained.vector_copies,
            cd4_fraction=s.cd4_fraction,
        )
        before = self.harvested
        self.harvested = part if before is None else _pooled(before, part)
        return drained.volume_ml

    def observe(self) -> BioreactorReading:
        """What the sensors report now (noise and resolution on top of the true state)."""
        p, s = self.params, self.state
        density = s.viable_cells_per_ml * (
            1.0 + self._capacitance_rng.gauss(0.0, p.capacitance_rel_sd)
        )
        values = {
            "temperature": self._temp_sensor.read(s.temperature_c),
            "do": max(0.0, self._do_sensor.read(100.0 * s.do_um / p.do_sat_air_um)),
            "ph": self._ph_sensor.read(s.ph),
            "volume": max(0.0, self._volume_sensor.read(s.volume_ml)),
            "vcd": quantize(max(0.0, density), p.capacitance_resolution),
        }
        for name, fault in self.sensor_faults.items():
            values[name] = fault.apply(values[name], self.t)
        return BioreactorReading(
            temperature_c=values["temperature"],
            do_pct=values["do"],
            ph=values["ph"],
            volume_ml=values["volume"],
            viable_cells_per_ml=values["vcd"],
            rocking_rpm=self.rocking_rpm,
            perfusion_ml_per_day=self.perfusion_ml_per_day,
            temperature_sp_c=self.temperature_sp_c,
            heater_fault=self.heater_failed and s.heater_output > p.heater_fault_duty,
        )

    # ------------------------------------------------------------------ faults
    def set_sensor_fault(self, sensor: str, fault: SensorFault | None) -> None:
        """Make one sensor stick or drift (None: it reads true again)."""
        if sensor not in ("temperature", "do", "ph", "volume", "vcd"):
            raise ValueError(f"no sensor {sensor!r} on the bag")
        if fault is None:
            self.sensor_faults.pop(sensor, None)
        else:
            self.sensor_faults[sensor] = fault

    def contaminate(self, cells_per_ml: float) -> None:
        """A contamination event: bacteria enter the bag at this density (cells/mL)."""
        if not cells_per_ml > 0.0 or not math.isfinite(cells_per_ml):
            raise ValueError(f"contamination must be > 0 cells/mL, got {cells_per_ml}")
        self.state.contaminant_cells += cells_per_ml * self.state.volume_ml


def _pooled(a: HarvestRecord, b: HarvestRecord) -> HarvestRecord:
    """Two drains in one product bag: volumes and cells add, per-cell figures are the
    viable-cell-weighted mean (the fraction of the whole product, not of either part)."""
    cells = a.viable_cells + b.viable_cells

    def mean(x: float, y: float) -> float:
        return (x * a.viable_cells + y * b.viable_cells) / cells if cells > 0.0 else y

    return HarvestRecord(
        t_s=b.t_s,
        volume_ml=a.volume_ml + b.volume_ml,
        viable_cells=cells,
        dead_cells=a.dead_cells + b.dead_cells,
        transduced_fraction=mean(a.transduced_fraction, b.transduced_fraction),
        vector_copies=mean(a.vector_copies, b.vector_copies),
        cd4_fraction=mean(a.cd4_fraction, b.cd4_fraction),
    )
