"""Parameter tables of the twin's physical models: every constant named, with its source.

Sources are the ones gathered in docs TWIN_MODELS.md; "assumed" marks a value no
source gave, chosen and calibrated so the reference process (see ``reference.py``)
behaves as the cited process figures say. Rates are per hour, as process
engineers quote them; the models convert to seconds internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twin.equipment import Gas

__all__ = [
    "BioreactorParams",
    "ElectroporatorParams",
    "GasParams",
    "MfcSpec",
    "PlantParams",
    "SensorSpec",
]


@dataclass(frozen=True)
class SensorSpec:
    """Gaussian noise (1 sd) and display resolution of one sensor reading."""

    noise_sd: float
    resolution: float


@dataclass(frozen=True)
class BioreactorParams:
    """Rocking-bag bioreactor: heater loop, gas transfer, medium chemistry, T-cell kinetics."""

    step_s: float = 60.0  # assumed: fixed internal step; fast parts are integrated analytically

    # --- temperature: C dT/dt = Q*u - UA*(T - T_amb), heater loop with P band + integral
    ambient_c: float = 22.0  # assumed: cleanroom ambient
    initial_temperature_c: float = 22.0  # assumed: bag filled at room temperature
    initial_setpoint_c: float = 37.0  # TWIN_MODELS reference process: expansion at 37 °C
    heater_power_w: float = 60.0  # assumed: rocker tray heater; calibrated to tens of minutes
    loss_ua_w_per_k: float = 1.0  # assumed: heater UA not found in sources
    tray_heat_capacity_j_per_k: float = 2000.0  # assumed: ~2 kg aluminium tray under the bag
    medium_heat_capacity_j_per_k_ml: float = 4.18  # water, rho*Cp
    heater_band_k: float = 1.0  # assumed: full heater power 1 K below setpoint (P band)

    # --- oxygen transfer
    do_sat_air_um: float = 184.0  # 207 µM at 37 °C x 0.89 in medium (Oroboros/MitoEAGLE)
    air_o2_fraction: float = 0.20946  # dry air
    air_co2_fraction: float = 0.0004  # dry air, ~400 ppm
    kla_still_per_h: float = 0.5  # assumed: surface transfer of an unrocked bag
    kla_20rpm_per_h: float = 3.5  # Bai 2019 Biotechnol Bioeng: ~3.5 1/h at <=20 rpm
    kla_40rpm_per_h: float = 65.0  # Bai 2019: up to 65 1/h at 40 rpm
    kla_co2_ratio: float = 0.89  # assumed: sqrt(D_CO2/D_O2) penetration-theory ratio
    # kLa also rises with the rocking angle and falls with the fill (Bai et al. 2019): a
    # thinner, faster wave renews its surface more often. Exponents assumed.
    bag_volume_ml: float = 1000.0  # vendor note: 1e7 cells/mL in a 1 L bag at 10 rpm / 6°
    reference_angle_deg: float = 6.0  # TWIN_MODELS: rocking bag 10-15 rpm, 6°
    reference_fill: float = 0.5  # assumed: the kLa figures are for a half-full bag
    kla_angle_exponent: float = 1.0  # assumed: kLa roughly proportional to angle (4-10°)
    kla_fill_exponent: float = 0.3  # assumed: kLa falls with fill as (fill)^-0.3
    min_headspace_ml: float = 50.0  # assumed: a bag never rocks without gas above the liquid
    molar_volume_ml: float = 25_440.0  # ideal gas at 37 °C and 1 atm (headspace balance)
    respiratory_quotient: float = 1.0  # assumed: mol CO2 per mol O2

    # --- medium chemistry (pH by Henderson-Hasselbalch plus a non-bicarbonate buffer)
    atm_mmhg: float = 760.0  # standard atmosphere
    water_vapour_mmhg: float = 47.0  # saturated water vapour at 37 °C
    co2_solubility_mm_per_mmhg: float = 0.0301  # TWIN_MODELS Henderson-Hasselbalch
    pk_bicarbonate: float = 6.1  # TWIN_MODELS Henderson-Hasselbalch
    medium_bicarbonate_mm: float = 23.8  # 2.0 g/L NaHCO3 (TWIN_MODELS: 1.5-2.2 g/L at 5% CO2)
    medium_buffer_mm: float = 20.0  # assumed: phosphate, amino acids, protein (non-HCO3 buffer)
    medium_buffer_pka: float = 6.8  # assumed: phosphate pKa2 at 37 °C
    medium_reference_co2_fraction: float = 0.05  # medium formulated for 5% CO2 (TWIN_MODELS)
    medium_glucose_mm: float = 11.1  # assumed: 2 g/L glucose (RPMI-1640-like basal medium)
    medium_il2_u_per_ml: float = 100.0  # assumed: feed medium supplemented like day 0 (Zhu 2018)
    base_stock_mm: float = 893.0  # assumed: 7.5% w/v NaHCO3 stock sold for cell culture

    # --- reagents
    il2_stock_u_per_ml: float = 10_000.0  # assumed: 1 mL per 100 mL gives 100 U/mL (Zhu 2018)
    activator_full_dose_ul_per_ml: float = 10.0  # assumed: 1:100 activation reagent dose
    vector_titer_tu_per_ml: float = 1.0e8  # assumed: concentrated lentiviral vector
    # lentiviral integrations per susceptible cell are Poisson(lambda), lambda = k*MOI*s: the
    # CAR+ share is ceiling*(1-e^-lambda) and the vector copies per cell ceiling*lambda
    transduction_per_moi: float = 1.1  # assumed: MOI 5 gives ~37 % CAR+ (Zhu 2018) and
    #                                     1.5-2.5 copies/cell (ARI-0001, TWIN_MODELS)
    transduction_resting: float = 0.25  # assumed: susceptibility of resting vs activated cells
    transient_expression_tau_h: float = 48.0  # assumed: delivered cargo fades over ~2 days
    transduction_tau_h: float = 18.0  # assumed: CAR expression develops over ~1-2 days

    # --- growth: mu = mu_max*act*S/(Ks+S)*Gln/(Ks+Gln)*I(L)*I(NH3)*f(DO)*f(pH)*f(T)*f(IL2)
    #     *f(density) - kd; the burst of one activation wanes with the divisions it drove
    mu_max_per_h: float = 0.080  # intrinsic; calibrated so the observed exponential phase of the
    #                              reference process is inside 0.030-0.053/h (J Biol Eng 2019)
    glucose_ks_mm: float = 0.5  # assumed
    glutamine_ks_mm: float = 0.21  # HuT-78 T cells (Truskey 1990; TWIN_MODELS)
    lactate_ki_mm: float = 30.0  # assumed: lactic acid suppresses T cells (Fischer 2007)
    ammonia_ki_mm: float = 5.0  # assumed: T-cell growth halves near 5 mM ammonia
    density_low_k_per_ml: float = 1.5e5  # assumed: below ~0.25e6/mL growth suffers
    #                                      (Ma et al. 2010; BMC Immunol 2021: 0.25e6/mL best)
    density_high_k_per_ml: float = 6.0e6  # assumed: crowding halves growth near 6e6/mL; peak
    #                                       densities 1.9-8.3e6/mL (J Biol Eng 2019 13:34)
    fever_gain: float = 0.25  # assumed size: fever range raises proliferation (Mace 2011)
    temperature_optimum_c: float = 38.5  # TWIN_MODELS: 38.5-39.5 °C fever range, from here
    fever_top_c: float = 39.5  # ... to here growth is at its best
    temperature_growth_max_c: float = 41.0  # TWIN_MODELS: growth stops, death above ~40-41 °C
    heat_death_per_h: float = 0.02  # assumed: death rate at the heat-death midpoint
    heat_death_c: float = 41.0  # TWIN_MODELS: cell death rises above ~40-41 °C
    heat_death_width_c: float = 0.4  # assumed: e-fold per 0.4 K
    metabolism_peak_c: float = 39.5  # assumed: Q10 holds up to here (fever raises metabolism)
    do_ks_um: float = 2.0  # assumed: ~1% air saturation
    hyperoxia_penalty: float = 0.2  # assumed size; 5% O2 beat 20% (Cytotherapy 2001 3:435)
    ph_optimum: tuple[float, float] = (6.9, 7.6)  # assumed: no pH penalty in this window
    ph_width: float = 0.3  # assumed: gaussian fall-off outside the window
    q10: float = 2.0  # assumed: growth slows below 37 °C
    il2_k_u_per_ml: float = 10.0  # assumed: IL-2 half-effect concentration
    il2_floor: float = 0.4  # assumed: growth without IL-2 relative to saturating IL-2
    il2_decay_per_h: float = 0.004  # assumed: ~7 day half-life of IL-2 in medium at 37 °C
    il2_uptake_u_per_cell_h: float = 1.0e-6  # assumed: 1e6 activated cells/mL use ~1 U/mL/h
    activation_tau_h: float = 24.0  # assumed: blasts form over 1-2 days (the lag phase)
    activation_death_per_h: float = 0.0015  # assumed: cells not (or no longer) activated
    burst_sharpness: float = 1.0  # assumed: burst = 1/(1 + k*(n/D)^4), n doublings so far
    cd8_growth_advantage: float = 0.12  # assumed: CD8+ cells divide a little faster than CD4+

    # --- metabolism (fmol/cell/h); activated rates scale with activation
    qo2_resting: float = 12.0  # Blood 1966;28:163, resting lymphocytes
    qo2_activated: float = 80.0  # assumed: activated T cells above resting, below 200
    qglc_resting: float = 6.2  # Blood 1966, resting lymphocytes
    qglc_activated: float = 60.0  # assumed: activated T cells are glycolytic
    lactate_per_glucose: float = 1.6  # assumed (resting ratio 9.5/6.2 = 1.53, Blood 1966)
    glucose_uptake_ks_mm: float = 0.2  # assumed: transporter saturation
    qgln_resting: float = 2.0  # assumed: resting lymphocytes use little glutamine
    qgln_activated: float = 15.0  # assumed: activated T cells are glutaminolytic
    ammonia_per_glutamine: float = 0.7  # assumed: NH4+ released per glutamine consumed
    glutamine_decay_per_h: float = 0.0042  # assumed: ~10 %/day spontaneous breakdown at 37 °C
    medium_glutamine_mm: float = 2.0  # assumed: RPMI-1640-like basal medium (2.05 mM)

    # --- death (1/h); harvest-hold figures: 250e6/mL, glucose 0.5 mM, pH 6, lactate
    #     55 mM gave 58%/41% viable recovery after 3 h/6 h (TWIN_MODELS, researcher.life)
    kd_base_per_h: float = 0.0012  # assumed: calibrated to 77-96% viability (J Biol Eng 2019)
    kd_starvation_per_h: float = 0.04  # assumed: calibrated to the harvest-hold figures
    starvation_ks_mm: float = 0.3  # assumed
    kd_acid_per_h: float = 0.10  # assumed: calibrated to the harvest-hold figures
    acid_ph50: float = 6.5  # assumed
    acid_ph_width: float = 0.1  # assumed
    kd_lactate_per_h_mm: float = 0.0005  # assumed: per mM above the threshold
    lactate_toxic_mm: float = 20.0  # assumed
    lysis_per_h: float = 0.01  # assumed: dead cells disintegrate over ~4 days

    # --- contamination (a bacterial population; only present after a contamination event)
    contaminant_mu_max_per_h: float = 0.6  # assumed: ~70 min doubling in cell-culture medium
    contaminant_max_per_ml: float = 1.0e9  # assumed: a turbid overnight bacterial culture
    contaminant_glucose_ks_mm: float = 0.1  # assumed
    contaminant_qo2: float = 6.0  # fmol/cell/h; assumed: ~20 mmol O2/gDW/h x 0.3 pg DW/cell
    contaminant_qglc: float = 3.0  # fmol/cell/h; assumed: ~10 mmol/gDW/h x 0.3 pg DW/cell
    contaminant_acid_per_glucose: float = 1.5  # assumed: mixed-acid fermentation (acetate etc.)
    contaminant_kill_per_h: float = 0.25  # assumed: toxins and competition at high density
    contaminant_kill_half_per_ml: float = 1.0e7  # assumed: half the kill rate at 1e7/mL

    # --- heater fault
    heater_fault_duty: float = 0.2  # assumed: controller flags "load failure" above this duty

    # --- sensors (noise sd, resolution)
    temperature_sensor: SensorSpec = SensorSpec(0.02, 0.01)  # assumed Pt100
    do_sensor: SensorSpec = SensorSpec(0.3, 0.1)  # assumed optical DO, % air saturation
    ph_sensor: SensorSpec = SensorSpec(0.005, 0.001)  # assumed single-use optical pH
    volume_sensor: SensorSpec = SensorSpec(0.5, 0.1)  # assumed load cell, mL
    capacitance_rel_sd: float = 0.03  # assumed: in-line capacitance, relative
    capacitance_resolution: float = 1.0e3  # assumed, cells/mL
    count_rel_sd: float = 0.05  # assumed: ~400 cells counted per sample
    viability_sd_pct: float = 1.5  # assumed
    metabolite_sd_mm: float = 0.1  # assumed: blood-gas/metabolite analyser
    flow_cytometry_sd_pct: float = 2.0  # assumed: CAR+ by flow cytometry
    sample_volume_ml: float = 1.0  # TWIN_MODELS plant API: a sample draws 1 mL


@dataclass(frozen=True)
class MfcSpec:
    """One mass-flow controller as installed: unit id, gas and full scale."""

    unit_id: str
    gas: Gas
    full_scale_sccm: float


def _default_mfcs() -> tuple[MfcSpec, ...]:
    # plant API contract: A=AIR 500, B=O2 200, C=N2 500, D=CO2 50 sccm full scale
    return (
        MfcSpec("A", Gas.AIR, 500.0),
        MfcSpec("B", Gas.O2, 200.0),
        MfcSpec("C", Gas.N2, 500.0),
        MfcSpec("D", Gas.CO2, 50.0),
    )


@dataclass(frozen=True)
class GasParams:
    """Gas dispenser: Alicat-style laminar-dP mass-flow controllers."""

    mfcs: tuple[MfcSpec, ...] = field(default_factory=_default_mfcs)
    tau_s: float = 0.007  # TWIN_MODELS: 63% of a step in ~7 ms (laminar dP)
    vtm_after_s: float = 10.0  # assumed delay; Alicat BC manual: valve thermal management
    #                            starts when a setpoint sees no flow "for a certain amount of time"
    over_range: float = 1.31  # TWIN_MODELS: measured flow clamps at 1.31 x full scale
    flow_noise_fs: float = 0.001  # assumed: 0.1% of full scale, 1 sd
    zero_band_fs: float = 0.0025  # assumed: readings below 0.25% FS show as zero
    flow_resolution_sccm: float = 0.01  # assumed: display digits
    line_pressure_psia: float = 14.7  # assumed: vents to the bag at about 1 atm
    back_pressure_psi_at_fs: float = 0.3  # assumed: sparger/filter back pressure
    pressure_sensor: SensorSpec = SensorSpec(0.02, 0.01)  # assumed
    gas_temperature_c: float = 22.0  # assumed: gas lines at ambient
    temperature_sensor: SensorSpec = SensorSpec(0.05, 0.01)  # assumed
    standard_temperature_c: float = 25.0  # Alicat standard conditions
    standard_pressure_psia: float = 14.696  # Alicat standard conditions


@dataclass(frozen=True)
class ElectroporatorParams:
    """Square-wave electroporator: delivery and kill as sigmoids of field strength."""

    cell_radius_um: float = 5.0  # TWIN_MODELS: lymphocyte radius ~5 µm
    stable_integration: float = 0.3  # assumed: share of transiently delivered cells whose
    #                                  cargo integrates (transposon / knock-in); TWIN_MODELS:
    #                                  stable integration is a fraction of transient delivery
    critical_tmp_v: float = 1.1  # assumed; E50 = Vc/(1.5 r) (Kotnik & Miklavcic 2000)
    delivery_slope_v_per_cm: float = 250.0  # assumed sigmoid width s
    delivery_max: float = 0.95  # assumed plateau (Neon note: >80% for primary T cells)
    kill_e50_v_per_cm: float = 3000.0  # assumed; E50_kill > E50 as TWIN_MODELS requires
    kill_slope_v_per_cm: float = 500.0  # assumed sigmoid width s2
    reference_pulse_us: float = 20.0  # assumed: thresholds quoted for one 20 µs pulse
    strength_duration_exponent: float = 0.3  # assumed: thresholds fall as (width*count)^-0.3
    buffer_conductivity_s_per_m: float = 1.2  # assumed: PBS-like electroporation buffer
    max_current_a: float = 250.0  # TWIN_MODELS square-wave hardware: <=250 A
    current_noise_rel: float = 0.01  # assumed current-sense accuracy
    chamber_max_ul: float = 5000.0  # twin.equipment.ElectroporatorLimits.chamber_ul


@dataclass(frozen=True)
class PlantParams:
    """All parameter tables of one simulated bench."""

    bioreactor: BioreactorParams = field(default_factory=BioreactorParams)
    gas: GasParams = field(default_factory=GasParams)
    electroporator: ElectroporatorParams = field(default_factory=ElectroporatorParams)
    update_s: float = 1.0  # assumed: the instruments update their process values at 1 Hz
