"""T-cell growth and death rates (1/h) as functions of the culture's conditions.

mu = mu_max*donor*burst*activated*f(glucose)*f(glutamine)*I(lactate)*I(ammonia)*f(DO)
     *f(pH)*f(T)*f(IL-2)*f(density)   (TWIN_MODELS.md)

Growth follows the culture, not the clock: only activated cells (blasts, formed
over a lag after the stimulus) divide, and the burst one activation drives wanes
with the divisions it has driven, so a culture held cold or starved keeps its
potential for later. Death accelerates when glucose runs out, lactate builds up,
pH falls or the bag overheats, calibrated to the harvest-hold figures (58 %/41 %
viable recovery after 3 h/6 h at 250e6/mL).
"""

from __future__ import annotations

import math

from twin.sim.params import BioreactorParams

__all__ = [
    "death_rate",
    "density_factor",
    "growth_rate",
    "metabolism_factor",
    "temperature_factor",
]


def temperature_factor(temperature_c: float, p: BioreactorParams) -> float:
    """Growth against temperature: Q10 below 37 °C, a fever-range gain at its best over
    38.5-39.5 °C (Mace 2011), falling to nothing at 41 °C."""
    if temperature_c <= 37.0:
        return p.q10 ** ((temperature_c - 37.0) / 10.0)
    top = 1.0 + p.fever_gain
    if temperature_c <= p.temperature_optimum_c:
        return 1.0 + p.fever_gain * (temperature_c - 37.0) / (p.temperature_optimum_c - 37.0)
    if temperature_c <= p.fever_top_c:
        return top
    if temperature_c >= p.temperature_growth_max_c:
        return 0.0
    span = p.temperature_growth_max_c - p.fever_top_c
    return top * (p.temperature_growth_max_c - temperature_c) / span


def metabolism_factor(temperature_c: float, p: BioreactorParams) -> float:
    """Uptake rates against temperature: Q10 up to ~39.5 °C, then failing with the cells."""
    if temperature_c <= p.metabolism_peak_c:
        return p.q10 ** ((temperature_c - 37.0) / 10.0)
    peak = p.q10 ** ((p.metabolism_peak_c - 37.0) / 10.0)
    fall = (temperature_c - p.metabolism_peak_c) / (p.temperature_growth_max_c + 1.0 - 39.5)
    return peak * (1.0 - fall) if fall < 1.0 else 0.0


def density_factor(cells_per_ml: float, p: BioreactorParams) -> float:
    """Activated T cells need company (paracrine signals: low density hurts, Ma 2010) and
    room (crowding slows them near 1e7/mL)."""
    low = cells_per_ml / (p.density_low_k_per_ml + cells_per_ml)
    r = cells_per_ml / p.density_high_k_per_ml
    return low / (1.0 + r * r)


def growth_rate(
    activated: float,
    glucose_mm: float,
    lactate_mm: float,
    do_um: float,
    ph: float,
    f_temp: float,
    il2_u_per_ml: float,
    p: BioreactorParams,
    *,
    glutamine_mm: float = 2.0,
    ammonia_mm: float = 0.0,
    cells_per_ml: float = 1.0e6,
    potential: float = 1.0,
) -> float:
    """Specific growth rate (1/h): only activated cells divide, as the burst allows.

    ``potential``: the donor's growth potential times what is left of the burst (0..).
    """
    if activated <= 0.0 or glucose_mm <= 0.0 or potential <= 0.0:
        return 0.0
    f_s = glucose_mm / (p.glucose_ks_mm + glucose_mm)
    gln = glutamine_mm if glutamine_mm > 0.0 else 0.0
    f_q = gln / (p.glutamine_ks_mm + gln)
    r = lactate_mm / p.lactate_ki_mm
    f_l = 1.0 / (1.0 + r * r)
    f_a = 1.0 / (1.0 + ammonia_mm / p.ammonia_ki_mm)
    do_pct = 100.0 * do_um / p.do_sat_air_um
    hyper = (do_pct - 30.0) / 70.0  # min(1.0, max(0.0, ...)) as conditionals (every step)
    hyper = hyper if hyper > 0.0 else 0.0
    hyper = hyper if hyper < 1.0 else 1.0
    f_do = do_um / (p.do_ks_um + do_um) * (1.0 - p.hyperoxia_penalty * hyper)
    lo, hi = p.ph_optimum
    if ph < lo:
        f_ph = math.exp(-(((lo - ph) / p.ph_width) ** 2))
    elif ph > hi:
        f_ph = math.exp(-(((ph - hi) / p.ph_width) ** 2))
    else:
        f_ph = 1.0
    f_il2 = p.il2_floor + (1.0 - p.il2_floor) * il2_u_per_ml / (p.il2_k_u_per_ml + il2_u_per_ml)
    f_x = density_factor(cells_per_ml, p)
    return (
        p.mu_max_per_h
        * potential
        * activated
        * f_s
        * f_q
        * f_l
        * f_a
        * f_do
        * f_ph
        * f_temp
        * f_il2
        * f_x
    )


def death_rate(
    glucose_mm: float,
    lactate_mm: float,
    ph: float,
    p: BioreactorParams,
    *,
    temperature_c: float = 37.0,
    activated: float = 1.0,
    death_factor: float = 1.0,
) -> float:
    """Specific death rate (1/h): a baseline (the donor's), cells that failed to activate,
    starvation, acid, lactate and heat."""
    ks2 = p.starvation_ks_mm * p.starvation_ks_mm
    starve = p.kd_starvation_per_h * ks2 / (ks2 + glucose_mm * glucose_mm)
    z = (ph - p.acid_ph50) / p.acid_ph_width
    z = z if z < 50.0 else 50.0  # min(50.0, z), as a conditional (every step)
    acid = p.kd_acid_per_h / (1.0 + math.exp(z))
    excess = lactate_mm - p.lactate_toxic_mm
    lac = p.kd_lactate_per_h_mm * (excess if excess > 0.0 else 0.0)
    heat = 0.0
    if temperature_c > 38.0:
        w = (temperature_c - p.heat_death_c) / p.heat_death_width_c
        heat = p.heat_death_per_h * math.exp(w if w < 20.0 else 20.0)
    resting = p.activation_death_per_h * (1.0 - activated if activated < 1.0 else 0.0)
    return p.kd_base_per_h * death_factor + resting + starve + acid + lac + heat
