"""Conformance kit for the Electroporator interface: status, program, chamber, disarming.

A pulse cannot be undone, so this kit never fires one: it checks the device
opens disarmed, takes a program inside its ranges and refuses one outside them,
loads and unloads the chamber (what it draws goes back to the bag), refuses a
volume outside the chamber's range, refuses to pulse an empty chamber, and
disarms on the safe state.

``check_electroporator_line`` checks the ASCII line itself
(docs/devices/electroporator-ascii.md), writing raw bytes through the driver's
serial line: garbage and an overlong line each get one ``ERR 11`` and the next
command its answer; a request is not answered before its terminator. It clears
the fault its garbage left (``CLR``) if the device had none.
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
    raw_exchange,
    serial_line_of,
)
from twin.conformance.report import ConformanceReport
from twin.equipment import Electroporator, PulseProgram

__all__ = ["check_electroporator", "check_electroporator_line"]

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

    async def give_back() -> None:  # chamber -> recovery bag -> the culture it came from
        await ep.unload()
        await ep.recover()

    async with putting_back(give_back):
        loaded = (await ep.status()).loaded_ul
        if abs(loaded - volume) > LOADED_TOLERANCE_UL:
            raise Deviation(f"loaded {volume:g} uL, the status shows {loaded:g} uL")
    emptied = (await ep.status()).loaded_ul
    if emptied > LOADED_TOLERANCE_UL:
        raise Deviation(f"unloaded, yet the status still shows {emptied:g} uL")
    return f"{volume:g} uL loaded, unloaded and recovered"


async def _chamber_refused(ep: Electroporator, clock: Clock) -> str:
    lo, hi = ep.limits.chamber_ul
    before = (await ep.status()).loaded_ul
    answers = []

    async def empty_again() -> None:  # a device that took a load anyway gives it back
        if (await ep.status()).loaded_ul > before + LOADED_TOLERANCE_UL:
            await ep.unload()
            await ep.recover()

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


#: Line noise a host or a cable can put on the line: NUL and 0xFF, non-ASCII text, a
#: terminal's backspace and cursor key, DEL, a LF inside a line.
GARBAGE = (b"\x00\xff", "DISARMÉ".encode(), b"ARM\x08\x08\x08", b"\x1b[A", b"\x7f", b"STAT?\nFIRE")
#: Longer than the protocol's 80 characters by far (about 1 s on the wire at 9600 baud).
OVERLONG = 1000
_PRINTABLE = bytes(range(0x20, 0x7F))


async def _clear_fault_if_none(ep: Electroporator, had: str) -> None:
    """Put back a clean fault register (the garbage's ERR set it) if there was no fault."""
    if not had:
        await raw_exchange(ep, b"CLR\r\n", terminator=b"\r\n")


def _err_11(reply: bytes | None, sent: bytes) -> str:
    """The one reply a refused line gets: ``ERR 11 <printable text>``, no echo of the bytes."""
    if reply is None:
        raise Deviation(f"no answer to {sent[:40]!r}: every request gets one reply (ERR 11)")
    text = reply.removesuffix(b"\r\n")
    if not text.startswith(b"ERR 11 ") or text.translate(None, _PRINTABLE):
        raise Deviation(f"{sent[:40]!r} answered {reply[:80]!r}, expected ERR 11 <text>")
    return text.decode()


async def _garbage_then_command(ep: Electroporator, clock: Clock) -> str:
    serial_line_of(ep)
    identity, had = await ep.identify(), (await ep.status()).fault
    async with putting_back(lambda: _clear_fault_if_none(ep, had)):
        for garbage in GARBAGE:
            _err_11(await raw_exchange(ep, garbage + b"\r\n", terminator=b"\r\n"), garbage)
            if await ep.identify() != identity:
                raise Deviation(f"after {garbage!r} *IDN? answered another identity")
        if (await ep.status()).armed:
            raise Deviation("armed after garbage")
    return f"{len(GARBAGE)} garbage lines each answered ERR 11, *IDN? right after each"


async def _overlong_then_command(ep: Electroporator, clock: Clock) -> str:
    serial_line_of(ep)
    identity, had = await ep.identify(), (await ep.status()).fault
    async with putting_back(lambda: _clear_fault_if_none(ep, had)):
        sent = b"X" * OVERLONG + b"\r\n"
        text = _err_11(await raw_exchange(ep, sent, terminator=b"\r\n"), sent)
        if await ep.identify() != identity:
            raise Deviation("after an overlong line *IDN? answered another identity")
    return f"{OVERLONG} characters: {text}; *IDN? answered after"


async def _waits_for_terminator(ep: Electroporator, clock: Clock) -> str:
    """A request is answered once, after its terminator: never early, never twice."""
    serial_line_of(ep)
    early = await raw_exchange(ep, b"*IDN?", terminator=b"\r\n")
    if early is not None:
        raise Deviation(f"answered *IDN? before its terminator: {early[:80]!r}")
    reply = await raw_exchange(ep, b"\r\n", terminator=b"\r\n")
    if reply is None or not reply.startswith(b"OK "):
        raise Deviation(f"the terminator did not complete *IDN?: {reply!r}")
    await ep.identify()
    return "no reply before CR LF, one after"


async def check_electroporator_line(
    make_device: DeviceFactory[Electroporator], *, device: str = "electroporator"
) -> ConformanceReport:
    """Check the ASCII line survives garbage; each check opens a fresh device. Every check is
    skipped for an electroporator that does not talk over a serial line."""
    checks: list[tuple[str, CheckFn[Electroporator]]] = [
        ("garbage refused, next command answered", _garbage_then_command),
        ("overlong line refused, next command answered", _overlong_then_command),
        ("request waits for its terminator", _waits_for_terminator),
    ]
    return await Kit("Electroporator serial line", make_device, device=device).run(checks)
