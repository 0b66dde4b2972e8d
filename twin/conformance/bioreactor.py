"""Conformance kit for the Bioreactor interface: what every bioreactor driver and device must do.

The kit reads every process value, writes each setpoint (a value inside the
limits and both limits themselves) and finds it in force, sees each
out-of-limit value refused with the setpoint left as it was, and takes the
safe state. It never doses, samples or harvests: those move material, and a
commissioning bench may hold a bag. Every check puts back the setpoints it found.
A Modbus controller is also checked on the protocol itself (twin.conformance.modbus):
bad quantities, unlisted functions and (on TCP) malformed MBAP headers.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from twin.clock import Clock
from twin.conformance.kit import (
    IDENTITY,
    CheckFn,
    Deviation,
    DeviceFactory,
    Kit,
    check_identity,
    expect_refused,
    finite,
    inside,
    kinds,
    putting_back,
    settle,
)
from twin.conformance.modbus import (
    bad_quantity_refused,
    malformed_header_closes,
    unlisted_function_refused,
)
from twin.conformance.report import ConformanceReport
from twin.equipment import Bioreactor, BioreactorPV, Material

__all__ = ["check_bioreactor"]

#: How long a rocker or perfusion pump may take to reach a new setpoint.
SETTLE_S = 60.0


@dataclass(frozen=True)
class _Setpoint:
    """One setpoint of the interface: how to write it and where its value in force shows."""

    label: str  # as an operator says it
    unit: str
    limits: Callable[[Bioreactor], tuple[float, float]]
    write: Callable[[Bioreactor, float], Awaitable[None]]
    in_force: Callable[[BioreactorPV], float]  # the PV that shows the setpoint has taken effect
    tolerance: Callable[[float], float]  # how close the PV must come (float32, resolution)
    follows: bool  # True: a measured value that needs time to follow; False: an echo


SETPOINTS = (
    _Setpoint(
        "temperature setpoint",
        "°C",
        lambda br: br.limits.temperature_c,
        lambda br, v: br.set_temperature(v),
        lambda pv: pv.temperature_sp_c,
        lambda v: 0.01,
        follows=False,
    ),
    _Setpoint(
        "rocking setpoint",
        "rpm",
        lambda br: br.limits.rocking_rpm,
        lambda br, v: br.set_rocking(v),
        lambda pv: pv.rocking_rpm,
        lambda v: max(0.5, 0.02 * abs(v)),
        follows=True,
    ),
    _Setpoint(
        "perfusion setpoint",
        "mL/day",
        lambda br: br.limits.perfusion_ml_per_day,
        lambda br, v: br.set_perfusion(v),
        lambda pv: pv.perfusion_ml_per_day,
        lambda v: max(1.0, 0.02 * abs(v)),
        follows=True,
    ),
)


async def _reach(br: Bioreactor, clock: Clock, sp: _Setpoint, value: float) -> float:
    """Write ``value`` and return what the device shows in force (after its settle time)."""
    await sp.write(br, value)

    async def shown() -> float:
        return sp.in_force(await br.read())

    within = SETTLE_S if sp.follows else 0.0
    return await settle(clock, shown, value, sp.tolerance(value), within)


async def _restore(br: Bioreactor, sp: _Setpoint, value: float) -> None:
    """Put back the value found (clamped into the limits: a device may start outside them)."""
    lo, hi = sp.limits(br)
    await sp.write(br, min(max(value, lo), hi))


def _read_back(sp: _Setpoint) -> CheckFn[Bioreactor]:
    async def check(br: Bioreactor, clock: Clock) -> str:
        found = sp.in_force(await br.read())
        lo, hi = sp.limits(br)
        seen = []
        async with putting_back(lambda: _restore(br, sp, found)):
            for value in (inside((lo, hi), found), lo, hi):
                got = await _reach(br, clock, sp, value)
                if abs(got - value) > sp.tolerance(value):
                    raise Deviation(f"wrote {value:g} {sp.unit}, the device shows {got:g}")
                seen.append(f"{value:g}")
        return f"wrote and found in force {', '.join(seen)} {sp.unit}"

    return check


def _refused(sp: _Setpoint) -> CheckFn[Bioreactor]:
    async def check(br: Bioreactor, clock: Clock) -> str:
        lo, hi = sp.limits(br)
        margin = max(0.5, 0.01 * (hi - lo))
        before = sp.in_force(await br.read())
        answers = []
        async with putting_back(lambda: _restore(br, sp, before)):
            for value in (hi + margin, lo - margin, math.nan):
                what = f"{sp.label} {value:g} {sp.unit} (limits {lo:g}-{hi:g})"
                answers.append(await expect_refused(lambda v=value: sp.write(br, v), what))
                now = sp.in_force(await br.read())
                if abs(now - before) > sp.tolerance(before):
                    raise Deviation(
                        f"refused {what} but the setpoint in force moved {before:g} -> {now:g}"
                    )
        return (
            f"{hi + margin:g}, {lo - margin:g} and NaN {sp.unit} refused "
            f"({kinds(answers)}); {before:g} kept"
        )

    return check


async def _process_values(br: Bioreactor, clock: Clock) -> str:
    pv = await br.read()
    finite("temperature_c", pv.temperature_c, -20.0, 80.0)
    finite("temperature_sp_c", pv.temperature_sp_c, -20.0, 80.0)
    finite("do_pct", pv.do_pct, 0.0, 500.0)
    finite("ph", pv.ph, 0.0, 14.0)
    finite("volume_ml", pv.volume_ml, 0.0, 100_000.0)
    finite("rocking_rpm", pv.rocking_rpm, 0.0, 1_000.0)
    finite("perfusion_ml_per_day", pv.perfusion_ml_per_day, 0.0, 100_000.0)
    finite("viable_cells_per_ml", pv.viable_cells_per_ml, 0.0, 1e10)
    for name in ("heartbeat", "status"):
        value = getattr(pv, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            raise Deviation(f"{name} = {value!r} is not a 16-bit word")
    return (
        f"{pv.temperature_c:.2f} °C (SP {pv.temperature_sp_c:g}), DO {pv.do_pct:.1f} %, "
        f"pH {pv.ph:.2f}, {pv.volume_ml:.0f} mL, {pv.rocking_rpm:g} rpm, "
        f"{pv.perfusion_ml_per_day:g} mL/day, {pv.viable_cells_per_ml:.3g} cells/mL, "
        f"status {pv.status:#06x}"
    )


async def _heartbeat(br: Bioreactor, clock: Clock) -> str:
    """A controller whose heartbeat stands still has hung, however plausible its values."""
    first = (await br.read()).heartbeat
    await clock.sleep(5.0)
    second = (await br.read()).heartbeat
    if second == first:
        raise Deviation(f"heartbeat stayed at {first} over 5 s: the controller is not running")
    return f"{first} -> {second} over 5 s"


async def _safe_state(br: Bioreactor, clock: Clock) -> str:
    """Safe state stops perfusion and keeps the temperature setpoint (the culture stays warm)."""
    pv = await br.read()
    temperature_sp, perfusion = pv.temperature_sp_c, pv.perfusion_ml_per_day
    pump = SETPOINTS[2]
    running = inside(br.limits.perfusion_ml_per_day, 0.0)
    async with putting_back(lambda: _restore(br, pump, perfusion)):
        await _reach(br, clock, pump, running)
        await br.safe_state()
        stopped = await settle(
            clock, lambda: _perfusion(br), 0.0, pump.tolerance(0.0), within_s=SETTLE_S
        )
        if stopped > pump.tolerance(0.0):
            raise Deviation(f"perfusion still {stopped:g} mL/day after the safe state")
        kept = (await br.read()).temperature_sp_c
        if abs(kept - temperature_sp) > 0.01:
            raise Deviation(
                f"safe state moved the temperature setpoint {temperature_sp:g} -> {kept:g} °C"
            )
        await br.safe_state()  # taking it again must be harmless
    return f"perfusion {running:g} -> 0 mL/day, temperature setpoint {temperature_sp:g} °C kept"


async def _perfusion(br: Bioreactor) -> float:
    return (await br.read()).perfusion_ml_per_day


async def _negative_addition(br: Bioreactor, clock: Clock) -> str:
    """An addition of a negative volume must be refused before any pump turns."""
    answer = await expect_refused(
        lambda: br.add(Material.MEDIUM, -1.0), "an addition of -1 mL medium"
    )
    return f"refused ({answer})"


def _checks() -> list[tuple[str, CheckFn[Bioreactor]]]:
    checks: list[tuple[str, CheckFn[Bioreactor]]] = [
        (IDENTITY, check_identity),
        ("process values", _process_values),
        ("heartbeat advances", _heartbeat),
    ]
    for sp in SETPOINTS:
        checks.append((f"{sp.label} read back", _read_back(sp)))
    for sp in SETPOINTS:
        checks.append((f"{sp.label} outside limits refused", _refused(sp)))
    checks += [
        ("negative addition refused", _negative_addition),
        ("safe state", _safe_state),
        ("bad quantity refused with 0x03", bad_quantity_refused),
        ("unlisted function refused with 0x01", unlisted_function_refused),
        ("malformed MBAP header closes the connection", malformed_header_closes),
    ]
    return checks


async def check_bioreactor(
    make_device: DeviceFactory[Bioreactor], *, device: str = "bioreactor"
) -> ConformanceReport:
    """Run every Bioreactor check; each opens a fresh device with ``make_device``."""
    return await Kit("Bioreactor", make_device, device=device).run(_checks())
