"""Gas dispenser driver: Alicat-style mass-flow controllers on one serial line.

One unit id per gas line, all on one multi-drop port (docs/devices/gas-dispenser-alicat.md).
Every setpoint is checked against the setpoint the controller echoes back, and the
O2 cap is enforced here, below any recipe, as an interlock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import pydantic

from drivers.gas_lines import GAS_KEYS, GasLimitsConfig, close_o2_and_n2, gas_key
from drivers.modbus_link import LinkCounters
from drivers.serial_line import SerialLine, open_line, shown
from drivers.settings import Baud, BusClaim
from twin.clock import Clock
from twin.equipment import DeviceIdentity, Gas, GasDispenserLimits, GasDispenserPV
from twin.errors import CommunicationError, DeviceRefused, EquipmentError, InterlockTripped

__all__ = ["AlicatFrame", "AlicatGasConfig", "AlicatGasDispenser", "AlicatGasLimits"]

_FRAME_GAS = {"Air": Gas.AIR, "CO2": Gas.CO2, "N2": Gas.N2, "O2": Gas.O2}
_SETPOINT_TOLERANCE = 0.011  # the frame carries 2 decimals


AlicatGasLimits = GasLimitsConfig  # the bench-file name this driver has always used

_F = TypeVar("_F")


class AlicatGasConfig(pydantic.BaseModel, extra="forbid", allow_inf_nan=False):
    """Where the controllers are and how patiently to talk to them."""

    port: str
    baud: Baud = 19200
    units: dict[str, str] = {"air": "A", "o2": "B", "n2": "C", "co2": "D"}
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = pydantic.Field(default=0.5, gt=0.0)
    retries: int = pydantic.Field(default=2, ge=0, le=10)
    limits: AlicatGasLimits = AlicatGasLimits()

    @pydantic.field_validator("units")
    @classmethod
    def _unit_ids(cls, value: dict[str, str]) -> dict[str, str]:
        out = {gas_key(k): v for k, v in value.items()}
        for gas, uid in out.items():
            if len(uid) != 1 or not ("A" <= uid <= "Z"):
                raise ValueError(f"unit id of {gas} must be one letter A-Z, got {uid!r}")
        if len(set(out.values())) != len(out):
            raise ValueError("two gases share one unit id")
        return out

    def claims(self) -> list[BusClaim]:
        """Every unit id on the port (for the bench validator)."""
        line = ("ascii", self.baud, self.parity, self.stopbits, 8)
        return [BusClaim(self.port, line, uid, ("units", gas)) for gas, uid in self.units.items()]

    @pydantic.model_validator(mode="after")
    def _full_scale_known(self) -> AlicatGasConfig:
        missing = set(self.units) - set(self.limits.full_scale_sccm)
        if missing:
            raise ValueError(f"no full scale for {', '.join(sorted(missing))}")
        return self


@dataclass(frozen=True)
class AlicatFrame:
    """One data frame, as a controller answers a poll or a command."""

    unit_id: str
    pressure_psia: float
    temperature_c: float
    volumetric_flow: float
    mass_flow_sccm: float
    setpoint_sccm: float
    gas: str
    flags: frozenset[str]


class AlicatGasDispenser:
    """GasDispenser over Alicat-style ASCII: one unit id per gas line, one shared port."""

    def __init__(self, name: str, config: AlicatGasConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._units = {GAS_KEYS[k]: uid for k, uid in config.units.items()}
        # Per unit, built once rather than on each of ~70,000 exchanges a batch.
        self._device_names = {uid: f"{name} unit {uid}" for uid in self._units.values()}
        self._refusals = {uid: f"{uid} ?".encode() for uid in self._units.values()}
        self._polls = {uid: f"{uid}\r".encode("ascii") for uid in self._units.values()}
        self.limits = GasDispenserLimits(
            full_scale_sccm={GAS_KEYS[k]: v for k, v in config.limits.full_scale_sccm.items()},
            o2_cap_sccm=config.limits.o2_cap_sccm,
        )
        self._line: SerialLine | None = None
        self.counters = LinkCounters()  # this device's share of the line's traffic

    async def connect(self) -> None:
        """Open the shared port; make each unit meter the gas the bench says it meters."""
        if self._line is None:
            self._line = open_line(
                self.config.port,
                baud=self.config.baud,
                parity=self.config.parity,
                stopbits=self.config.stopbits,
                clock=self._clock,
            )
        for gas, uid in self._units.items():
            frame = await self.poll(gas)
            if _FRAME_GAS.get(frame.gas) != gas:
                frame = await self._ask_frame(uid, f"G{int(gas)}")
                if _FRAME_GAS.get(frame.gas) != gas:
                    raise DeviceRefused(
                        self.name, f"unit {uid} did not select {gas.name}: reports {frame.gas}"
                    )

    @property
    def serial_line(self) -> SerialLine | None:
        """The shared line (None until connected): conformance kits send raw bytes on it to
        check the units survive line noise (twin.conformance)."""
        return self._line

    @property
    def unit_ids(self) -> dict[Gas, str]:
        """The unit id of each gas line on the shared port."""
        return dict(self._units)

    async def close(self) -> None:
        """Let go of the shared port (closed when its last user lets go)."""
        if self._line is not None:
            self._line.release()
            self._line = None

    async def identify(self) -> DeviceIdentity:
        """Every unit's identity; model and serial list each unit (``A:...,B:...``)."""
        ids = []
        for uid in self._units.values():
            raw = await self._ask(uid, "??M*", frames=4)
            lines = [ln for ln in raw.decode("ascii", "replace").split("\r") if ln]
            fields = [ln.split(" ", 2) for ln in lines]
            if len(fields) != 4 or any(len(f) != 3 or f[0] != uid for f in fields):
                raise CommunicationError(self.name, f"unit {uid} garbled identity {shown(raw)}")
            ids.append((uid, [f[2] for f in fields]))
        vendors = sorted({v[0] for _, v in ids})
        firmwares = sorted({v[3] for _, v in ids})
        return DeviceIdentity(
            vendor=",".join(vendors),
            model=",".join(f"{uid}:{v[1]}" for uid, v in ids),
            serial=",".join(f"{uid}:{v[2]}" for uid, v in ids),
            firmware=",".join(firmwares),
        )

    async def poll(self, gas: Gas) -> AlicatFrame:
        """One data frame of a gas line."""
        uid = self._unit(gas)
        return await self._ask_frame(uid, "")

    async def read(self) -> GasDispenserPV:
        """Poll every gas line in turn."""
        flows: dict[Gas, float] = {}
        setpoints: dict[Gas, float] = {}
        for gas, uid in self._units.items():
            # What poll(gas) does, keeping only the two figures used (~60,000 polls a batch).
            flows[gas], setpoints[gas] = await self._ask_parsed(uid, "", _flows_of)
        return GasDispenserPV(mass_flow_sccm=flows, setpoint_sccm=setpoints)

    async def set_flow(self, gas: Gas, sccm: float) -> None:
        """Write a setpoint and check the controller now holds exactly that setpoint."""
        uid = self._unit(gas)
        if gas == Gas.O2 and sccm > self.limits.o2_cap_sccm:
            raise InterlockTripped(
                f"{self.name}: O2 {sccm:g} sccm exceeds the O2 cap of "
                f"{self.limits.o2_cap_sccm:g} sccm"
            )
        full_scale = self.limits.full_scale_sccm[gas]
        if not 0.0 <= sccm <= full_scale:
            raise EquipmentError(
                self.name, f"{gas.name} {sccm:g} sccm outside 0..{full_scale:g} sccm"
            )
        frame = await self._ask_frame(uid, f"S{sccm:.2f}")
        if abs(frame.setpoint_sccm - sccm) > _SETPOINT_TOLERANCE:
            raise DeviceRefused(
                self.name,
                f"unit {uid} ({gas.name}) setpoint not accepted: sent {sccm:.2f}, "
                f"reads back {frame.setpoint_sccm:.2f}",
            )

    async def hold_closed(self, gas: Gas) -> AlicatFrame:
        """Close a line's valve whatever its setpoint (HLD until cancel_hold)."""
        uid = self._unit(gas)
        return await self._ask_frame(uid, "HC")

    async def cancel_hold(self, gas: Gas) -> AlicatFrame:
        """Release a held valve: the line follows its setpoint again."""
        uid = self._unit(gas)
        return await self._ask_frame(uid, "C")

    async def safe_state(self) -> None:
        """Close O2 and N2, keep air and CO2; tries both, then reports every failure."""
        await close_o2_and_n2(self.name, self._units, self.set_flow)

    def _unit(self, gas: Gas) -> str:
        try:
            return self._units[gas]
        except KeyError:
            raise EquipmentError(self.name, f"no {gas.name} line on this dispenser") from None

    async def _ask_frame(self, uid: str, command: str) -> AlicatFrame:
        """One command answered by a data frame."""
        return await self._ask_parsed(uid, command, _frame_of)

    async def _ask_parsed(
        self, uid: str, command: str, make: Callable[[str, list[str]], _F | None]
    ) -> _F:
        """One command answered by a data frame, split and parsed once (the reply check
        keeps what it parsed: ~70,000 frames a batch); ``make`` builds the answer from the
        frame's fields (None: a number does not parse). The refusal is looked for only in
        a reply that is no data frame."""
        parsed: list[_F | None] = [None]

        def accept(raw: bytes) -> bool:
            parsed[0] = None
            try:
                parts = raw.decode("ascii").split()
            except UnicodeDecodeError:  # line noise sets bit 7: never sent by a controller
                return False
            if not parts or parts[0] != uid:
                return False
            n = len(parts)
            if n == 2 and parts[1] == "?":
                return True  # refused: reported below
            if n < 7:
                return False
            parsed[0] = make(uid, parts)
            return True

        reply = await self._transact(uid, command, 1, accept)
        frame = parsed[0]
        if frame is None:
            self._check_refused(uid, command, reply)
            raise CommunicationError(self.name, f"unit {uid} sent no data frame: {shown(reply)}")
        return frame

    async def _ask(self, uid: str, command: str, *, frames: int = 1) -> bytes:
        return await self._exchange(
            uid, command, frames, lambda raw: _well_formed(uid, raw, frames)
        )

    async def _exchange(
        self, uid: str, command: str, frames: int, accept: Callable[[bytes], bool]
    ) -> bytes:
        reply = await self._transact(uid, command, frames, accept)
        self._check_refused(uid, command, reply)
        return reply

    async def _transact(
        self, uid: str, command: str, frames: int, accept: Callable[[bytes], bool]
    ) -> bytes:
        """One request to unit ``uid`` on the line (a poll's request built once per unit)."""
        if self._line is None:
            raise CommunicationError(self.name, "not connected")
        return await self._line.transact(
            f"{uid}{command}\r".encode("ascii") if command else self._polls[uid],
            device=self._device_names[uid],
            terminator=b"\r",
            timeout=self.config.timeout_s,
            retries=self.config.retries,
            frames=frames,
            accept=accept,
            counters=self.counters,
        )

    def _check_refused(self, uid: str, command: str, reply: bytes) -> None:
        """DeviceRefused if ``reply`` is the unit's ``?``."""
        if reply.strip() == self._refusals[uid]:
            raise DeviceRefused(self.name, f"unit {uid} refused {uid}{command!s}: replied '?'")


def _well_formed(uid: str, raw: bytes, frames: int) -> bool:
    """A reply this unit can send: its data frame, its ``?``, or its identity lines."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:  # line noise sets bit 7: never sent by a controller
        return False
    if frames > 1:
        lines = [ln for ln in text.split("\r") if ln]
        return len(lines) == frames and all(ln.startswith(f"{uid} M") for ln in lines)
    parts = text.split()
    return bool(parts) and parts[0] == uid and (parts[1:] == ["?"] or len(parts) >= 7)


def _frame_of(uid: str, parts: list[str]) -> AlicatFrame | None:
    """The data frame in a reply's fields (unit id checked by the caller); None if a number
    does not parse."""
    try:
        pressure, temperature, volumetric, mass, setpoint = [float(p) for p in parts[1:6]]
    except ValueError:
        return None
    # Positional: a frozen dataclass takes keywords at several times the cost (~70,000 a batch).
    return AlicatFrame(
        uid, pressure, temperature, volumetric, mass, setpoint, parts[6], frozenset(parts[7:])
    )


def _flows_of(uid: str, parts: list[str]) -> tuple[float, float] | None:
    """Mass flow and setpoint of a data frame's fields, None where :func:`_frame_of` finds no
    frame (a number does not parse): what ``read`` keeps of each poll."""
    try:  # the three numbers before must parse too, as for a whole frame
        float(parts[1]), float(parts[2]), float(parts[3])
        return float(parts[4]), float(parts[5])
    except ValueError:
        return None
