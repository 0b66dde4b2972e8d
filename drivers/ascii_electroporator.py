"""Electroporator driver for our ASCII protocol (docs/devices/electroporator-ascii.md).

Pulses are the one thing in the plant that cannot be undone: a program is read
back before it is trusted, a pulse is ARM then FIRE, FIRE and LOAD are never
retried automatically (a lost reply does not mean nothing happened), and any
failure after ARM is followed by a DISARM.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import pydantic

from drivers.modbus_link import LinkCounters
from drivers.serial_line import SerialLine, open_line
from drivers.settings import Baud, BusClaim
from twin.clock import Clock
from twin.equipment import (
    DeviceIdentity,
    ElectroporatorLimits,
    ElectroporatorStatus,
    PulseProgram,
    PulseResult,
)
from twin.errors import CommunicationError, DeviceRefused, EquipmentError

__all__ = ["AsciiElectroporator", "AsciiElectroporatorConfig", "AsciiElectroporatorLimits"]


class AsciiElectroporatorLimits(pydantic.BaseModel, extra="forbid", allow_inf_nan=False):
    """The bench's ranges (may be tighter than the hardware's), checked before a command is sent."""

    voltage_v: tuple[float, float] = (0.0, 3500.0)
    pulse_width_us: tuple[float, float] = (3.0, 10000.0)
    pulse_count: tuple[int, int] = (1, 10)
    chamber_ul: tuple[float, float] = (10.0, 5000.0)
    gap_mm: tuple[float, float] = (0.5, 4.0)


class AsciiElectroporatorConfig(pydantic.BaseModel, extra="forbid", allow_inf_nan=False):
    """Where the electroporator is and how patiently to talk to it."""

    port: str
    baud: Baud = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = pydantic.Field(default=1.0, gt=0.0)
    retries: int = pydantic.Field(default=1, ge=0, le=10)  # never applied to FIRE or LOAD
    limits: AsciiElectroporatorLimits = AsciiElectroporatorLimits()

    def claims(self) -> list[BusClaim]:
        """The whole port: our ASCII protocol has no unit ids (for the bench validator)."""
        line = ("ascii", self.baud, self.parity, self.stopbits, 8)
        return [BusClaim(self.port, line, None, ("port",))]


def _well_formed(raw: bytes) -> bool:
    """A reply the protocol can produce: printable ASCII starting OK or ERR (else: line noise)."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return False
    return text.isprintable() and (text == "OK" or text.startswith(("OK ", "ERR")))


def _intact(raw: bytes) -> bool:
    """A well-formed reply that is about our request. We only send known commands with valid
    arguments, so ``ERR 10`` (unknown command) or ``ERR 11`` (bad argument, non-printable
    character, line too long) means line noise, or a previous host's unterminated line, joined
    the request on the device's side: the device never saw it, so it may be sent again."""
    return _well_formed(raw) and not raw.startswith((b"ERR 10", b"ERR 11"))


def _check(value: float, bounds: tuple[float, float], what: str, device: str) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise EquipmentError(device, f"{what} {value:g} outside {lo:g}..{hi:g}")


def _key_values(text: str, device: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise CommunicationError(device, f"garbled reply field {word!r} in {text!r}")
        out[key] = value
    return out


class AsciiElectroporator:
    """Electroporator over our ASCII protocol on its own (or a shared) serial port."""

    def __init__(self, name: str, config: AsciiElectroporatorConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        lim = config.limits
        self.limits = ElectroporatorLimits(
            voltage_v=lim.voltage_v,
            pulse_width_us=lim.pulse_width_us,
            pulse_count=lim.pulse_count,
            chamber_ul=lim.chamber_ul,
            gap_mm=lim.gap_mm,
        )
        self._line: SerialLine | None = None
        self.counters = LinkCounters()  # this device's share of the line's traffic

    async def connect(self) -> None:
        """Open the port and make sure the device starts disarmed."""
        if self._line is None:
            self._line = open_line(
                self.config.port,
                baud=self.config.baud,
                parity=self.config.parity,
                stopbits=self.config.stopbits,
                clock=self._clock,
            )
        await self.safe_state()

    @property
    def serial_line(self) -> SerialLine | None:
        """The line this device talks through (None until connected): conformance kits send
        raw bytes on it to check the device survives garbage (twin.conformance)."""
        return self._line

    async def close(self) -> None:
        """Let go of the port."""
        if self._line is not None:
            self._line.release()
            self._line = None

    async def identify(self) -> DeviceIdentity:
        """``*IDN?``: vendor, model, serial, firmware."""
        parts = (await self._ask("*IDN?")).split(",")
        if len(parts) != 4:
            raise CommunicationError(self.name, f"garbled identity {','.join(parts)!r}")
        vendor, model, serial, firmware = (p.strip() for p in parts)
        return DeviceIdentity(vendor=vendor, model=model, serial=serial, firmware=firmware)

    async def status(self) -> ElectroporatorStatus:
        """``STAT?``: armed, loaded volume, last fault ('' when none)."""
        text = await self._ask("STAT?")
        head, sep, fault = text.partition("FAULT=")
        fields = _key_values(head, self.name)
        try:
            armed = fields["ARMED"] == "1"
            loaded = float(fields["LOADED"])
        except (KeyError, ValueError):
            raise CommunicationError(self.name, f"garbled status {text!r}") from None
        if not sep:
            raise CommunicationError(self.name, f"garbled status {text!r}")
        fault = fault.strip()
        return ElectroporatorStatus(
            armed=armed, loaded_ul=loaded, fault="" if fault == "NONE" else fault
        )

    async def load(self, volume_ul: float) -> None:
        """Draw suspension into the chamber (not retried: cells would move twice)."""
        _check(volume_ul, self.limits.chamber_ul, "chamber volume (uL)", self.name)
        words = (await self._ask(f"LOAD {volume_ul:.1f}", retries=0)).split()
        try:
            loaded = float(words[1]) if words[0] == "LOADED" and len(words) == 2 else math.nan
        except (ValueError, IndexError):
            loaded = math.nan
        if math.isnan(loaded):
            raise CommunicationError(self.name, f"garbled LOAD reply {' '.join(words)!r}")
        if abs(loaded - volume_ul) > 0.051:  # the bag ran short: the chamber is part-filled
            raise DeviceRefused(self.name, f"loaded {loaded:g} uL of {volume_ul:g} uL asked")

    async def unload(self) -> None:
        """Empty the chamber into the recovery bag (idempotent on the device)."""
        await self._ask("UNLOAD")

    async def recover(self) -> float:
        """Return the recovery bag to the culture bag; the mL returned (idempotent: a repeat
        returns 0)."""
        words = (await self._ask("RECOVER")).split()
        try:
            if words[0] != "RECOVERED" or len(words) != 2:
                raise ValueError
            return float(words[1])
        except (ValueError, IndexError):
            raise CommunicationError(
                self.name, f"garbled RECOVER reply {' '.join(words)!r}"
            ) from None

    async def program(self, program: PulseProgram) -> None:
        """Send the program, then read it back and compare field by field."""
        lim = self.limits
        _check(program.voltage_v, lim.voltage_v, "voltage (V)", self.name)
        _check(program.pulse_width_us, lim.pulse_width_us, "pulse width (us)", self.name)
        _check(program.pulse_count, lim.pulse_count, "pulse count", self.name)
        await self._ask(
            f"PROG {program.voltage_v:.1f} {program.pulse_width_us:.1f} "
            f"{program.pulse_count:d} {program.gap_mm:.2f}"
        )
        words = (await self._ask("PROG?")).split()
        try:
            if words[0] != "PROG" or len(words) != 5:
                raise ValueError
            v, w, n, g = float(words[1]), float(words[2]), int(words[3]), float(words[4])
        except (ValueError, IndexError):
            raise CommunicationError(self.name, f"garbled program read-back {words!r}") from None
        if (
            abs(v - program.voltage_v) > 0.051
            or abs(w - program.pulse_width_us) > 0.051
            or n != program.pulse_count
            or abs(g - program.gap_mm) > 0.0051
        ):
            raise DeviceRefused(
                self.name,
                f"program read-back {v:g} V {w:g} us x{n} {g:g} mm differs from {program}",
            )

    async def pulse(self) -> PulseResult:
        """ARM then FIRE once; on any failure after ARM, DISARM before raising."""
        await self._ask("ARM")
        try:
            text = await self._ask("FIRE", retries=0)
            fields = _key_values(text.removeprefix("FIRED"), self.name)
            return PulseResult(
                field_v_per_cm=float(fields["FIELD"]),
                peak_current_a=float(fields["CURRENT"]),
                pulses_delivered=int(fields["PULSES"]),
            )
        except (KeyError, ValueError):
            with contextlib.suppress(EquipmentError):
                await self._ask("DISARM")
            raise CommunicationError(self.name, "garbled FIRE reply") from None
        except BaseException:
            with contextlib.suppress(EquipmentError):
                await self._ask("DISARM")
            raise

    async def safe_state(self) -> None:
        """DISARM: no pulse can be fired until a new ARM."""
        await self._ask("DISARM")

    async def _ask(self, command: str, *, retries: int | None = None) -> str:
        """One exchange; returns the text after ``OK ``; ``ERR`` becomes DeviceRefused."""
        if self._line is None:
            raise CommunicationError(self.name, "not connected")
        tries = self.config.retries if retries is None else retries
        raw = await self._line.transact(
            f"{command}\r\n".encode("ascii"),
            device=self.name,
            terminator=b"\r\n",
            timeout=self.config.timeout_s,
            retries=tries,
            accept=_intact if tries else _well_formed,  # FIRE, LOAD: the ERR itself is reported
            counters=self.counters,
        )
        text = raw.decode("ascii", "replace").strip()
        if text.startswith("ERR"):
            raise DeviceRefused(self.name, f"{command.split()[0]} refused: {text}")
        if text == "OK":
            return ""
        if not text.startswith("OK "):
            raise CommunicationError(self.name, f"unexpected reply {text!r} to {command!r}")
        return text[3:]
