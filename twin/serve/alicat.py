"""The twin's gas dispenser on a pty, speaking the Alicat-style ASCII protocol.

Every mass-flow controller of ``plant.gas`` sits on one multi-drop line, as on
an RS-485 bus: each answers only its own unit id; an id nobody owns gets no
answer at all. The protocol as served here is docs/devices/gas-dispenser-alicat.md.
"""

from __future__ import annotations

import math
from typing import Any

from twin.clock import Clock
from twin.equipment import Gas
from twin.serve.faults import LinkFaults, garble_ascii
from twin.serve.pty import PtyEndpoint
from twin.sim.gas import MassFlowController

__all__ = ["GAS_NAMES", "AlicatServer"]

GAS_NAMES: dict[Gas, str] = {Gas.AIR: "Air", Gas.CO2: "CO2", Gas.N2: "N2", Gas.O2: "O2"}
"""Gas names as they appear in the data frame."""

OVER_RANGE = 1.25
"""MOV/VOV: flow beyond the measurable range, not a noisy reading at full scale."""

MAX_LINE = 64
"""Longest request (characters, CR excluded). A longer line is line noise: discarded up to
its CR, unanswered, as is a line with any byte outside printable ASCII."""

_PRINTABLE = bytes(range(0x20, 0x7F))

#: A frame's numbers as written (``f"{x:+07.2f}"``) for values met before: five per frame,
#: ~57,000 frames a batch, and readings at the display's resolution repeat a small set of
#: values. Zeros (signed) and NaN are never kept; emptied past ``_FIELDS_MAX``.
_FIELDS: dict[float, str] = {}
_FIELDS_MAX = 1 << 14


def _field(x: float) -> str:
    """One number of a data frame: sign, 3 integer digits, 2 decimals (``+014.70``)."""
    text = _FIELDS.get(x)
    if text is None:
        text = f"{x:+07.2f}"
        if x and x == x:
            if len(_FIELDS) >= _FIELDS_MAX:
                _FIELDS.clear()
            _FIELDS[x] = text
    return text


VENDOR = "poc-twin"
FIRMWARE = "10v05-twin"


class AlicatServer:
    """Serves all MFCs of ``plant.gas`` on one pty; the driver opens ``.path``."""

    def __init__(
        self,
        plant: Any,
        clock: Clock,
        *,
        baud: int = 19200,
        framing: str = "8N1",
        line: type[PtyEndpoint] = PtyEndpoint,
    ) -> None:
        """``line``: what carries the bytes (a pty, or a null modem for an in-process bench)."""
        self._plant = plant
        self._clock = clock
        self._endpoint = line(
            self._handle, baud=baud, name="alicat", framing=framing, clock=clock, max_line=MAX_LINE
        )
        self.link: LinkFaults = self._endpoint.link
        # The valve hold lives in the controller, not in the flow model: while a unit
        # holds, the model sees setpoint 0 and the frame shows the commanded setpoint.
        self._held: set[str] = set()
        self._commanded: dict[str, float] = {}
        # Faults of one controller on the multi-drop line: the others still answer.
        self._unit_faults: dict[str, LinkFaults] = {}

    def unit_link(self, uid: str) -> LinkFaults:
        """The link faults of one unit id (silent or garbling alone on the shared line)."""
        if uid not in self._plant.gas.mfcs:
            raise KeyError(f"no unit {uid} on this line; units: {', '.join(self._plant.gas.mfcs)}")
        return self._unit_faults.setdefault(uid, LinkFaults())

    @property
    def path(self) -> str:
        """The pty a driver opens as its serial port."""
        return self._endpoint.path

    async def start(self) -> None:
        """Open the pty and answer polls."""
        await self._endpoint.start()

    async def stop(self) -> None:
        """Close the pty; the path disappears."""
        await self._endpoint.close()

    def _handle(self, line: bytes) -> bytes | None:
        if len(line) > MAX_LINE or line.translate(None, _PRINTABLE):
            return None  # line noise (overlong, control or non-ASCII bytes): nobody answers
        text = line.decode("ascii").strip()
        if not text:
            return None
        uid, command = text[0], text[1:].strip()
        mfcs = self._plant.gas.mfcs
        if uid not in mfcs:
            return None  # multi-drop: nobody owns this id, nobody answers
        unit = self._unit_faults.get(uid)
        if unit is not None and not unit.healthy:
            if unit.silent:
                return None
            reply = self._answer(uid, mfcs[uid], command)
            return garble_ascii(reply) if unit.corrupt_next() else reply
        return self._answer(uid, mfcs[uid], command)

    def _answer(self, uid: str, mfc: MassFlowController, command: str) -> bytes:
        self._plant.advance_to(self._clock.now())
        if not command:  # a poll: by far the most common request
            return self._frame(uid, mfc)
        upper = command.upper()
        if upper.startswith("S"):
            return self._set_setpoint(uid, mfc, command[1:])
        if upper.startswith("G"):
            return self._select_gas(uid, mfc, command[1:])
        if upper == "HC":
            if uid not in self._held:
                self._commanded[uid] = mfc.setpoint_sccm
                self._held.add(uid)
                mfc.setpoint_sccm = 0.0
            return self._frame(uid, mfc)
        if upper == "C":
            if uid in self._held:
                self._held.discard(uid)
                mfc.setpoint_sccm = self._commanded.pop(uid)
            return self._frame(uid, mfc)
        if upper == "??M*":
            return self._identity(uid, mfc)
        return f"{uid} ?\r".encode()

    def _set_setpoint(self, uid: str, mfc: MassFlowController, arg: str) -> bytes:
        try:
            value = float(arg.strip())
        except ValueError:
            return f"{uid} ?\r".encode()
        if not math.isfinite(value):
            return f"{uid} ?\r".encode()
        value = min(max(value, 0.0), float(mfc.full_scale_sccm))  # as the contract says: clamp
        if uid in self._held:
            self._commanded[uid] = value  # stored; the valve stays held until AC
        else:
            mfc.setpoint_sccm = value
        return self._frame(uid, mfc)

    def _select_gas(self, uid: str, mfc: MassFlowController, arg: str) -> bytes:
        try:
            gas = Gas(int(arg.strip()))
        except ValueError:
            return f"{uid} ?\r".encode()
        mfc.gas = gas
        return self._frame(uid, mfc)

    def _frame(self, uid: str, mfc: MassFlowController) -> bytes:
        pressure, temperature, volumetric, mass = mfc.sample()  # observe() without the object
        fs = float(mfc.full_scale_sccm)
        held = uid in self._held
        setpoint = self._commanded[uid] if held else float(mfc.setpoint_sccm)
        # ``gas`` is a Gas (an IntEnum), so it looks its name up as it is.
        frame = (
            f"{uid} {_field(pressure)} {_field(temperature)} "
            f"{_field(volumetric)} {_field(mass)} {_field(setpoint)} {GAS_NAMES[mfc.gas]}"
        )
        if held:
            frame += " HLD"
        if mass > OVER_RANGE * fs:
            frame += " MOV"
        if volumetric > OVER_RANGE * fs:
            frame += " VOV"
        if mfc.valve_thermal_management:
            frame += " VTM"  # setpoint held, no flow: the gas supply is gone
        return (frame + "\r").encode()

    def _identity(self, uid: str, mfc: MassFlowController) -> bytes:
        model = f"MC-{float(mfc.full_scale_sccm):g}SCCM-D"
        serial = f"TW{uid}{int(mfc.full_scale_sccm):05d}"
        lines = [VENDOR, model, serial, FIRMWARE]
        return "".join(f"{uid} M{i:02d} {v}\r" for i, v in enumerate(lines)).encode()
