"""The bag's temperature under the controller's own heater loop, integrated exactly.

Plant: C dT/dt = Q*u - UA*(T - T_amb) (first order, TWIN_MODELS.md). Controller:
proportional band plus an integral term; the loop settles in about a minute,
far faster than anything else in the bag, so its integral term is taken as
settled at the heat-loss feed-forward u_ff = UA*(SP - T_amb)/Q. The closed loop
is then piecewise linear (heater saturated full, off, or in its band), and each
piece is an exponential we can step through exactly, so the result does not
depend on the step size a caller happens to use.
"""

from __future__ import annotations

import math

from twin.sim.params import BioreactorParams

__all__ = ["heat_capacity_j_per_k", "heater_output", "step_temperature"]

_HI, _BAND, _LO = 1, 0, -1


def heat_capacity_j_per_k(volume_ml: float, p: BioreactorParams) -> float:
    """Heat capacity the heater warms: the medium plus the tray under the bag."""
    return p.tray_heat_capacity_j_per_k + p.medium_heat_capacity_j_per_k_ml * volume_ml


def _clamp01(u: float) -> float:
    """min(1.0, max(0.0, u)) as conditionals: the same value, cheaper, twice a plant step."""
    u = u if u > 0.0 else 0.0
    return u if u < 1.0 else 1.0


def _feed_forward(setpoint_c: float, p: BioreactorParams) -> float:
    return _clamp01(p.loss_ua_w_per_k * (setpoint_c - p.ambient_c) / p.heater_power_w)


def heater_output(temperature_c: float, setpoint_c: float, p: BioreactorParams) -> float:
    """Heater duty (0..1) the controller applies at this temperature."""
    return _clamp01((setpoint_c - temperature_c) / p.heater_band_k + _feed_forward(setpoint_c, p))


def step_temperature(
    temperature_c: float, setpoint_c: float, volume_ml: float, dt_s: float, p: BioreactorParams
) -> float:
    """Temperature after ``dt_s`` seconds of closed-loop heating (exact, piecewise)."""
    cap = heat_capacity_j_per_k(volume_ml, p)
    q, ua, t_amb = p.heater_power_w, p.loss_ua_w_per_k, p.ambient_c
    u_ff = _feed_forward(setpoint_c, p)
    kp = 1.0 / p.heater_band_k
    lower = setpoint_c - (1.0 - u_ff) * p.heater_band_k  # below: heater full on
    upper = setpoint_c + u_ff * p.heater_band_k  # above: heater off
    t = temperature_c
    if t <= lower:
        region = _HI
    elif t >= upper:
        region = _LO
    else:
        region = _BAND
    remaining = dt_s
    for _ in range(4):
        if region == _HI:
            t_inf, tau, edge, nxt = t_amb + q / ua, cap / ua, lower, _BAND
        elif region == _LO:
            t_inf, tau, edge, nxt = t_amb, cap / ua, upper, _BAND
        else:
            gain = q * kp + ua
            t_inf = (q * kp * setpoint_c + q * u_ff + ua * t_amb) / gain
            tau = cap / gain
            if t_inf > upper:
                edge, nxt = upper, _LO
            elif t_inf < lower:
                edge, nxt = lower, _HI
            else:
                edge, nxt = t_inf, _BAND
        crosses = (t < edge < t_inf) or (t_inf < edge < t) if nxt != region else False
        if crosses:
            t_cross = tau * math.log((t - t_inf) / (edge - t_inf))
            if t_cross < remaining:
                t, remaining, region = edge, remaining - t_cross, nxt
                continue
        return t_inf + (t - t_inf) * math.exp(-remaining / tau)
    return t
