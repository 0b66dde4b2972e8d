"""Conformance kit for the Electroporator interface: status, program, chamber, disarming.

A pulse cannot be undone, so this kit never fires one: it checks the device
opens disarmed, takes a program inside its ranges and refuses one outside them,
loads and unloads the chamber (what it draws goes back to the bag), refuses a
volume outside the chamber's range, refuses to pulse an empty chamber, and
disarms on the safe state.
"""

from __future__ import annotations

import math

from twin.clock import Clock
from twin.conformance.kit import (
    IDENTITY,
    CheckFn,
    Deviation,
    DeviceFactory,
    Kit,
    NotApplicable,
    check_identity,
    expect_refused,
    finite,
    kinds,
    putting_back,
)
from twin.conformance.report import ConformanceReport
from twin.equipment import Electroporator, PulseProgram

__all__ = ["check_electroporator"]

#: The gap of a standard 2 mm cuvette: every electroporator program names one.
GAP_MM = 2.0
#: A typical chamber fill for a check (clamped into the device's chamber range).
PROBE_UL = 100.0
LOADED_TOLERANCE_UL = 0.1


def _valid_program(ep: Electroporator) -> PulseProgram:
    """A program well inside every range of the device."""
    lim = ep.limits
    v_lo, v_hi = lim.voltage_v
    w_lo, w_hi = lim.pulse_width_us
    n_lo, n_hi = lim.pulse_count
    voltage = round(v_lo + 0.25 * (v_hi - v_lo), 1) or round(0.5 * v_hi, 1)
    width = round(math.sqrt(max(w_lo, 1e-3) * w_hi), 1)  # geometric middle: ranges span decades
    return PulseProgram(voltage, min(max(width, w_lo), w_hi), max(n_lo, min(n_hi, 1)), GAP_MM)


async def _status(ep: Electroporator, clock: Clock) -> str:
    status = await ep.status()
    if not isinstance(status.armed, bool):
        raise Deviation(f"armed is {status.armed!r}, not yes or no")
    finite("loaded_ul", status.loaded_ul, 0.0, 1e6)
    if not isinstance(status.fault, str):
        raise Deviation(f"fault is {status.fault!r}, not a text")
    return f"armed {status.armed}, {status.loaded_ul:g} uL loaded, fault {status.fault or 'none'}"


async def _opens_disarmed(ep: Electroporator, clock: Clock) -> str:
    """Whatever state a previous user left, a freshly opened electroporator cannot fire."""
    if (await ep.status()).armed:
        raise Deviation("armed right after opening: a pulse could be fired without a new ARM")
    return "disarmed"


async def _program(ep: Electroporator, clock: Clock) -> str:
    program = _valid_program(ep)
    await ep.program(program)
    return (
        f"{program.voltage_v:g} V, {program.pulse_width_us:g} us x{program.pulse_count}, "
        f"{program.gap_mm:g} mm accepted"
    )


async def _program_refused(ep: Electroporator, clock: Clock) -> str:
    lim = ep.limits
    good = _valid_program(ep)
    v_hi = lim.voltage_v[1]
    w_lo, w_hi = lim.pulse_width_us
    n_lo, n_hi = lim.pulse_count
    bad = {
        f"voltage {v_hi + 1:g} V above {v_hi:g}": PulseProgram(
            v_hi + 1.0, good.pulse_width_us, good.pulse_count, good.gap_mm
        ),
        f"pulse width {w_hi * 1.01:g} us above {w_hi:g}": PulseProgram(
            good.voltage_v, w_hi * 1.01, good.pulse_count, good.gap_mm
        ),
        f"pulse width {w_lo * 0.5:g} us below {w_lo:g}": PulseProgram(
            good.voltage_v, w_lo * 0.5, good.pulse_count, good.gap_mm
        ),
        f"{n_hi + 1} pulses, more than {n_hi}": PulseProgram(
            good.voltage_v, good.pulse_width_us, n_hi + 1, good.gap_mm
        ),
        f"{n_lo - 1} pulses, fewer than {n_lo}": PulseProgram(
            good.voltage_v, good.pulse_width_us, n_lo - 1, good.gap_mm
        ),
        "voltage NaN": PulseProgram(math.nan, good.pulse_width_us, good.pulse_count, good.gap_mm),
    }
    answers = []
    for what, program in bad.items():
        answers.append(
            await expect_refused(lambda p=program: ep.program(p), f"a program of {what}")
        )
    return f"{len(bad)} programs refused ({kinds(answers)})"


def _probe_volume(ep: Electroporator) -> float:
    lo, hi = ep.limits.chamber_ul
    return min(max(PROBE_UL, lo), hi)


async def _chamber(ep: Electroporator, clock: Clock) -> str:
    """Load reads back in the status, unload empties the chamber again."""
    before = (await ep.status()).loaded_ul
    if before > LOADED_TOLERANCE_UL:
        raise NotApplicable(f"the chamber already holds {before:g} uL: the kit does not empty it")
    volume = _probe_volume(ep)
    await ep.load(volume)
    async with putting_back(ep.unload):  # what was drawn goes back to the bag
        loaded = (await ep.status()).loaded_ul
        if abs(loaded - volume) > LOADED_TOLERANCE_UL:
            raise Deviation(f"loaded {volume:g} uL, the status shows {loaded:g} uL")
    emptied = (await ep.status()).loaded_ul
    if emptied > LOADED_TOLERANCE_UL:
        raise Deviation(f"unloaded, yet the status still shows {emptied:g} uL")
    return f"{volume:g} uL loaded and unloaded"


async def _chamber_refused(ep: Electroporator, clock: Clock) -> str:
    lo, hi = ep.limits.chamber_ul
    before = (await ep.status()).loaded_ul
    answers = []

    async def empty_again() -> None:  # a device that took a load anyway gives it back
        if (await ep.status()).loaded_ul > before + LOADED_TOLERANCE_UL:
            await ep.unload()

    async with putting_back(empty_again):
        for value in (hi * 1.01 + 1.0, lo * 0.5):
            what = f"a load of {value:g} uL (chamber {lo:g}-{hi:g})"
            answers.append(await expect_refused(lambda v=value: ep.load(v), what))
            now = (await ep.status()).loaded_ul
            if abs(now - before) > LOADED_TOLERANCE_UL:
                raise Deviation(f"refused {what} but the chamber went {before:g} -> {now:g} uL")
    return f"{hi * 1.01 + 1.0:g} and {lo * 0.5:g} uL refused ({kinds(answers)})"


async def _empty_chamber_no_pulse(ep: Electroporator, clock: Clock) -> str:
    """With nothing in the chamber there is nothing to electroporate: no pulse may leave."""
    if (await ep.status()).loaded_ul > LOADED_TOLERANCE_UL:
        raise NotApplicable("the chamber is not empty: the kit never fires into cells")
    await ep.program(_valid_program(ep))
    async with putting_back(ep.safe_state):  # whatever happened, it ends disarmed
        answer = await expect_refused(ep.pulse, "a pulse with an empty chamber")
        if (await ep.status()).armed:
            raise Deviation("refused the pulse but stayed armed")
    return f"refused ({answer}), disarmed"


async def _safe_state(ep: Electroporator, clock: Clock) -> str:
    await ep.program(_valid_program(ep))
    await ep.safe_state()
    if (await ep.status()).armed:
        raise Deviation("still armed after the safe state")
    await ep.safe_state()  # taking it again must be harmless
    return "disarmed, twice"


async def check_electroporator(
    make_device: DeviceFactory[Electroporator], *, device: str = "electroporator"
) -> ConformanceReport:
    """Run every Electroporator check; each opens a fresh device with ``make_device``."""
    checks: list[tuple[str, CheckFn[Electroporator]]] = [
        (IDENTITY, check_identity),
        ("status", _status),
        ("opens disarmed", _opens_disarmed),
        ("program inside ranges accepted", _program),
        ("program outside ranges refused", _program_refused),
        ("chamber load read back", _chamber),
        ("chamber volume outside range refused", _chamber_refused),
        ("no pulse with an empty chamber", _empty_chamber_no_pulse),
        ("safe state", _safe_state),
    ]
    return await Kit("Electroporator", make_device, device=device).run(checks)
