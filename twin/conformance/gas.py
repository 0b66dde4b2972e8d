"""Conformance kit for the GasDispenser interface: every gas line, every limit, the safe state.

For each gas line the dispenser declares (its full scale in ``limits``) the kit
writes a setpoint inside the range and both ends of it and reads each back,
sees the mass flow follow, sees values beyond full scale, below zero and above
the O2 cap refused with the setpoint left as it was, and takes the safe state
(O2 and N2 closed, air and CO2 kept so the culture keeps its pH). Every check
puts back the setpoints it found.

``check_gas_line`` checks an Alicat-style ASCII line itself
(docs/devices/gas-dispenser-alicat.md), writing raw bytes through the driver's
serial line: line noise and an overlong line get no reply at all (a multi-drop
bus never answers noise) and change no setpoint, the next poll is answered, and
a request is not answered before its CR.
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
    inside,
    kinds,
    putting_back,
    raw_exchange,
    serial_line_of,
    settle,
)
from twin.conformance.report import ConformanceReport
from twin.equipment import Gas, GasDispenser

__all__ = ["check_gas_dispenser", "check_gas_line"]

#: A mass-flow controller reaches a new setpoint within seconds (typically < 1 s).
SETTLE_S = 10.0
#: Gases a safe state closes; the others it keeps.
CLOSED_WHEN_SAFE = (Gas.O2, Gas.N2)


def _label(gas: Gas) -> str:
    """Gas names as an operator says them: air, O2, N2, CO2."""
    return "air" if gas is Gas.AIR else gas.name


def _top(gd: GasDispenser, gas: Gas) -> float:
    """The highest setpoint a line accepts: full scale, or the O2 cap if that is lower."""
    full = gd.limits.full_scale_sccm[gas]
    return min(full, gd.limits.o2_cap_sccm) if gas is Gas.O2 else full


def _tolerance(gd: GasDispenser, gas: Gas) -> float:
    """Read-back resolution: two decimals on ASCII controllers, 1/32000 of full scale on counts."""
    return max(0.02, gd.limits.full_scale_sccm[gas] / 20_000.0)


async def _setpoint(gd: GasDispenser, gas: Gas) -> float:
    return (await gd.read()).setpoint_sccm[gas]


async def _restore(gd: GasDispenser, setpoints: dict[Gas, float]) -> None:
    for gas, value in setpoints.items():
        await gd.set_flow(gas, min(max(value, 0.0), _top(gd, gas)))


async def _process_values(gd: GasDispenser, clock: Clock) -> str:
    pv = await gd.read()
    lines = list(gd.limits.full_scale_sccm)
    if not lines:
        raise Deviation("declares no gas line (limits.full_scale_sccm is empty)")
    shown = []
    for gas in lines:
        full = gd.limits.full_scale_sccm[gas]
        if gas not in pv.mass_flow_sccm or gas not in pv.setpoint_sccm:
            raise Deviation(f"the reading has no {_label(gas)} line, though the limits declare one")
        finite(f"{_label(gas)} mass flow", pv.mass_flow_sccm[gas], 0.0, 1.5 * full)
        finite(f"{_label(gas)} setpoint", pv.setpoint_sccm[gas], 0.0, full)
        shown.append(f"{_label(gas)} {pv.mass_flow_sccm[gas]:g}/{pv.setpoint_sccm[gas]:g}")
    return "flow/setpoint sccm: " + ", ".join(shown)


def _read_back(gas: Gas) -> CheckFn[GasDispenser]:
    async def check(gd: GasDispenser, clock: Clock) -> str:
        found = await _setpoint(gd, gas)
        top, tol = _top(gd, gas), _tolerance(gd, gas)
        async with putting_back(lambda: _restore(gd, {gas: found})):
            for value in (inside((0.0, top), found), 0.0, top):
                await gd.set_flow(gas, value)
                got = await _setpoint(gd, gas)
                if abs(got - value) > tol:
                    raise Deviation(f"wrote {value:g} sccm, the {_label(gas)} line holds {got:g}")
        return f"{inside((0.0, top), found):g}, 0 and {top:g} sccm read back"

    return check


async def _flow_follows(gd: GasDispenser, clock: Clock) -> str:
    """The mass flow, not just the setpoint: a controller with no gas behind it fails here."""
    found = (await gd.read()).setpoint_sccm
    seen = []
    async with putting_back(lambda: _restore(gd, dict(found))):
        for gas in gd.limits.full_scale_sccm:
            target = inside((0.0, _top(gd, gas)), 0.0)
            await gd.set_flow(gas, target)
            band = 0.02 * gd.limits.full_scale_sccm[gas]

            async def flow(g: Gas = gas) -> float:
                return (await gd.read()).mass_flow_sccm[g]

            got = await settle(clock, flow, target, band, SETTLE_S)
            if abs(got - target) > band:
                raise Deviation(
                    f"{_label(gas)} flows {got:g} sccm {SETTLE_S:g} s after a setpoint of "
                    f"{target:g} (is the supply connected?)"
                )
            seen.append(f"{_label(gas)} {got:g}")
    return "sccm: " + ", ".join(seen)


def _refused(gas: Gas) -> CheckFn[GasDispenser]:
    async def check(gd: GasDispenser, clock: Clock) -> str:
        full = gd.limits.full_scale_sccm[gas]
        margin = max(0.5, 0.01 * full)
        before = await _setpoint(gd, gas)
        answers = []
        async with putting_back(lambda: _restore(gd, {gas: before})):  # if it took one anyway
            for value in (full + margin, -margin, math.nan):
                what = f"{_label(gas)} {value:g} sccm (full scale {full:g})"
                answers.append(await expect_refused(lambda v=value: gd.set_flow(gas, v), what))
                now = await _setpoint(gd, gas)
                if abs(now - before) > _tolerance(gd, gas):
                    raise Deviation(f"refused {what} but the setpoint moved {before:g} -> {now:g}")
        return f"{full + margin:g}, {-margin:g} and NaN sccm refused ({kinds(answers)})"

    return check


async def _o2_cap(gd: GasDispenser, clock: Clock) -> str:
    """The O2 cap is an interlock below full scale: the line must refuse what lies between."""
    full = gd.limits.full_scale_sccm.get(Gas.O2)
    cap = gd.limits.o2_cap_sccm
    if full is None:
        raise NotApplicable("no O2 line")
    if cap >= full:
        raise NotApplicable(f"the O2 cap ({cap:g} sccm) is not below full scale ({full:g})")
    value = cap + min(max(0.5, 0.01 * full), (full - cap) / 2)
    before = await _setpoint(gd, Gas.O2)
    what = f"O2 {value:g} sccm above the cap of {cap:g} (full scale {full:g})"
    async with putting_back(lambda: _restore(gd, {Gas.O2: before})):
        answer = await expect_refused(lambda: gd.set_flow(Gas.O2, value), what)
        now = await _setpoint(gd, Gas.O2)
        if abs(now - before) > _tolerance(gd, Gas.O2):
            raise Deviation(f"refused {what} but the setpoint moved {before:g} -> {now:g}")
    return f"{value:g} sccm refused ({answer}), cap {cap:g}"


async def _safe_state(gd: GasDispenser, clock: Clock) -> str:
    found = dict((await gd.read()).setpoint_sccm)
    lines = list(gd.limits.full_scale_sccm)
    opened = {gas: inside((0.0, _top(gd, gas)), 0.0) for gas in lines}
    async with putting_back(lambda: _restore(gd, found)):
        for gas, value in opened.items():
            await gd.set_flow(gas, value)
        await gd.safe_state()
        after = (await gd.read()).setpoint_sccm
        for gas in lines:
            want = 0.0 if gas in CLOSED_WHEN_SAFE else opened[gas]
            if abs(after[gas] - want) > _tolerance(gd, gas):
                verb = "close" if gas in CLOSED_WHEN_SAFE else "keep"
                raise Deviation(
                    f"safe state did not {verb} {_label(gas)}: setpoint {after[gas]:g} sccm, "
                    f"expected {want:g}"
                )
        await gd.safe_state()  # taking it again must be harmless
    closed = [_label(g) for g in lines if g in CLOSED_WHEN_SAFE]
    kept = [_label(g) for g in lines if g not in CLOSED_WHEN_SAFE]
    return f"closed {', '.join(closed) or 'none'}; kept {', '.join(kept) or 'none'}"


def _checks(gases: list[Gas]) -> list[tuple[str, CheckFn[GasDispenser]]]:
    checks: list[tuple[str, CheckFn[GasDispenser]]] = [
        (IDENTITY, check_identity),
        ("process values", _process_values),
    ]
    checks += [(f"{_label(gas)} setpoint read back", _read_back(gas)) for gas in gases]
    checks.append(("mass flow follows setpoint", _flow_follows))
    checks += [(f"{_label(gas)} outside full scale refused", _refused(gas)) for gas in gases]
    checks += [("O2 above cap refused", _o2_cap), ("safe state", _safe_state)]
    return checks


async def check_gas_dispenser(
    make_device: DeviceFactory[GasDispenser], *, device: str = "gas dispenser"
) -> ConformanceReport:
    """Run every GasDispenser check; each opens a fresh device with ``make_device``.

    The gas lines come from the device's declared limits, read once on a first opening.
    """
    gases: list[Gas] = []
    try:
        async with make_device() as gd:
            gases = sorted(gd.limits.full_scale_sccm)
    except Exception:  # the identity check opens it again and reports why it cannot
        gases = []
    return await Kit("GasDispenser", make_device, device=device).run(_checks(gases))


#: Longer than the protocol's 64 characters: a setpoint of 0 written with 200 zeros.
OVERLONG_ZEROS = 200


def _first_unit(gd: GasDispenser) -> str:
    serial_line_of(gd)
    units = getattr(gd, "unit_ids", None)
    if not units:
        raise NotApplicable("the dispenser does not name the unit ids on its line")
    return str(next(iter(units.values())))


def _noise(uid: str) -> list[bytes]:
    """Noise a cable or a careless host puts on the bus, some of it addressed to a unit."""
    u = uid.encode()
    return [b"\x00\xff", "é".encode(), b"\x1b[A", u + b"\x00", u + b"S0\x08", u + b"\nS0"]


async def _unanswered(gd: GasDispenser, sent: bytes) -> None:
    reply = await raw_exchange(gd, sent, terminator=b"\r")
    if reply is not None:
        raise Deviation(f"answered line noise {sent[:40]!r} with {reply[:80]!r}")


async def _still_holds(gd: GasDispenser, before: dict[Gas, float], after_what: str) -> None:
    now = (await gd.read()).setpoint_sccm
    for gas, value in before.items():
        if abs(now[gas] - value) > _tolerance(gd, gas):
            raise Deviation(
                f"{after_what} moved the {_label(gas)} setpoint {value:g} -> {now[gas]:g}"
            )


async def _noise_then_poll(gd: GasDispenser, clock: Clock) -> str:
    uid = _first_unit(gd)
    found = dict((await gd.read()).setpoint_sccm)
    async with putting_back(lambda: _restore(gd, found)):
        for noise in _noise(uid):
            await _unanswered(gd, noise + b"\r")
            await _still_holds(gd, found, f"line noise {noise!r}")
    return f"{len(_noise(uid))} noisy lines unanswered, setpoints kept, every poll answered"


async def _overlong_then_poll(gd: GasDispenser, clock: Clock) -> str:
    uid = _first_unit(gd)
    found = dict((await gd.read()).setpoint_sccm)
    sent = f"{uid}S".encode() + b"0" * OVERLONG_ZEROS + b"\r"
    async with putting_back(lambda: _restore(gd, found)):
        await _unanswered(gd, sent)
        await _still_holds(gd, found, f"an overlong line ({len(sent) - 1} characters)")
    return f"{len(sent) - 1} characters unanswered, setpoints kept, next poll answered"


async def _waits_for_cr(gd: GasDispenser, clock: Clock) -> str:
    uid = _first_unit(gd)
    early = await raw_exchange(gd, uid.encode(), terminator=b"\r")
    if early is not None:
        raise Deviation(f"answered a poll of {uid} before its CR: {early[:80]!r}")
    reply = await raw_exchange(gd, b"\r", terminator=b"\r")
    if reply is None or not reply.startswith(f"{uid} ".encode()):
        raise Deviation(f"the CR did not complete the poll of {uid}: {reply!r}")
    await gd.read()
    return f"no reply before CR, unit {uid}'s frame after"


async def check_gas_line(
    make_device: DeviceFactory[GasDispenser], *, device: str = "gas dispenser"
) -> ConformanceReport:
    """Check an ASCII gas line survives line noise; each check opens a fresh device. Every
    check is skipped for a dispenser that does not talk ASCII over a serial line."""
    checks: list[tuple[str, CheckFn[GasDispenser]]] = [
        ("line noise unanswered, next poll answered", _noise_then_poll),
        ("overlong line unanswered, next poll answered", _overlong_then_poll),
        ("request waits for its CR", _waits_for_cr),
    ]
    return await Kit("GasDispenser serial line", make_device, device=device).run(checks)
