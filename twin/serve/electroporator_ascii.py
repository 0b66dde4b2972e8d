"""The twin's electroporator on a pty, speaking our own ASCII protocol.

No electroporator vendor publishes a remote-control protocol, so this one is
ours (docs/devices/electroporator-ascii.md). It behaves like a careful
instrument: a pulse needs an explicit ARM after a loaded chamber and a valid
program; the program and the chamber are locked while armed; an arm expires;
every error disarms; FIRE fires once and disarms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twin.clock import Clock
from twin.equipment import ElectroporatorLimits
from twin.serve.faults import LinkFaults
from twin.serve.pty import PtyEndpoint

__all__ = ["ARM_TIMEOUT_S", "GAP_MM", "ElectroporatorServer", "ErrorCode"]

ARM_TIMEOUT_S = 60.0
"""An arm left unfired this long lapses: nobody walks away from an armed device."""

GAP_MM = (0.5, 4.0)
"""Accepted electrode gap (mm): covers 1, 2 and 4 mm cuvettes and flow chambers."""

MAX_LINE = 80
"""Longest request (characters, terminator excluded); a longer one is discarded up to its
CR and answered ``ERR 11``: the pty never holds more than this of a line."""

_PRINTABLE = bytes(range(0x20, 0x7F))

IDN = ("poc-twin", "EP-1 square-wave electroporator (twin)", "TW-EP-0001", "1.0.0")


class ErrorCode:
    """The ERR codes of the protocol (see the device doc)."""

    UNKNOWN_COMMAND = 10
    BAD_ARGUMENT = 11
    OUT_OF_RANGE = 12
    NOT_ARMED = 20
    NOT_LOADED = 21
    NOT_PROGRAMMED = 22
    LOCKED_WHILE_ARMED = 23
    CHAMBER_NOT_EMPTY = 24
    ARM_EXPIRED = 25
    DEVICE_FAULT = 30
    PULSE_ABORTED = 31


class _Error(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def _number(token: str, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise _Error(ErrorCode.BAD_ARGUMENT, f"{what} is not a number: {token}") from None
    if not math.isfinite(value):
        raise _Error(ErrorCode.BAD_ARGUMENT, f"{what} is not a number: {token}")
    return value


def _within(value: float, bounds: tuple[float, float], what: str, unit: str) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise _Error(ErrorCode.OUT_OF_RANGE, f"{what} {value:g} {unit} outside {lo:g}..{hi:g}")


class ElectroporatorServer:
    """Serves ``plant.electroporator`` on one pty; the driver opens ``.path``."""

    def __init__(
        self,
        plant: Any,
        clock: Clock,
        *,
        baud: int = 9600,
        framing: str = "8N1",
        limits: ElectroporatorLimits | None = None,
        line: type[PtyEndpoint] = PtyEndpoint,
    ) -> None:
        """``line``: what carries the bytes (a pty, or a null modem for an in-process bench)."""
        self._plant = plant
        self._clock = clock
        self._limits = limits or ElectroporatorLimits()
        self._endpoint = line(
            self._handle,
            baud=baud,
            name="electroporator",
            framing=framing,
            clock=clock,
            max_line=MAX_LINE,
        )
        self.link: LinkFaults = self._endpoint.link
        self._program: tuple[float, float, int, float] | None = None
        self._armed_at: float | None = None
        self._fault = "NONE"
        #: Told after each request whether it was a command (not a query ending in ``?``):
        #: the twin's keeper pictures the plant after a load, a pulse or a recovery.
        self.on_request: Callable[[bool], None] | None = None

    @property
    def path(self) -> str:
        """The pty a driver opens as its serial port."""
        return self._endpoint.path

    async def start(self) -> None:
        """Open the pty and answer commands."""
        await self._endpoint.start()

    async def stop(self) -> None:
        """Disarm and close the pty."""
        self._disarm()
        await self._endpoint.close()

    @property
    def _model(self) -> Any:
        return self._plant.electroporator

    def _armed(self) -> bool:
        if self._armed_at is not None and self._clock.now() - self._armed_at > ARM_TIMEOUT_S:
            self._disarm()
        return self._armed_at is not None

    def _disarm(self) -> None:
        self._armed_at = None
        if hasattr(self._model, "armed"):
            self._model.armed = False

    def _handle(self, line: bytes) -> bytes | None:
        if len(line) <= MAX_LINE and not line.strip(b" "):
            return None  # a blank line is not a request: a host may send CR LF to end a partial
        self._plant.advance_to(self._clock.now())
        try:
            reply = self._dispatch(line)
        except _Error as err:
            self._disarm()  # any error leaves the device safe
            self._fault = f"E{err.code} {err.text}"
            reply = f"ERR {err.code} {err.text}"
        if self.on_request is not None:
            self.on_request(not line.strip().endswith(b"?"))
        return (reply + "\r\n").encode("ascii")

    def _dispatch(self, line: bytes) -> str:
        if len(line) > MAX_LINE:
            raise _Error(ErrorCode.BAD_ARGUMENT, f"line longer than {MAX_LINE} characters")
        if line.translate(None, _PRINTABLE):  # a byte outside 0x20..0x7E: never echoed back
            at = next(i for i, b in enumerate(line) if b not in _PRINTABLE)
            raise _Error(
                ErrorCode.BAD_ARGUMENT,
                f"character 0x{line[at]:02X} at column {at + 1} is not printable ASCII",
            )
        words = line.decode("ascii").split()
        command, args = words[0].upper(), words[1:]
        handler = self._commands().get(command)
        if handler is None:
            raise _Error(ErrorCode.UNKNOWN_COMMAND, f"unknown command {words[0]}")
        expected = 4 if command == "PROG" else 1 if command == "LOAD" else 0
        if len(args) != expected:
            raise _Error(ErrorCode.BAD_ARGUMENT, f"{command} takes {expected} argument(s)")
        return handler(args)

    def _commands(self) -> dict[str, Any]:
        return {
            "*IDN?": self._idn,
            "STAT?": self._stat,
            "LOAD": self._load,
            "UNLOAD": self._unload,
            "RECOVER": self._recover,
            "PROG": self._set_program,
            "PROG?": self._read_program,
            "ARM": self._arm,
            "FIRE": self._fire,
            "DISARM": self._disarm_cmd,
            "CLR": self._clear,
        }

    def _idn(self, _: list[str]) -> str:
        return "OK " + ",".join(IDN)

    def _stat(self, _: list[str]) -> str:
        armed = int(self._armed())
        loaded = float(self._model.loaded_ul)
        programmed = int(self._program is not None)
        return f"OK ARMED={armed} LOADED={loaded:.1f} PROGRAMMED={programmed} FAULT={self._fault}"

    def _load(self, args: list[str]) -> str:
        volume = _number(args[0], "volume")
        if self._armed():
            raise _Error(ErrorCode.LOCKED_WHILE_ARMED, "chamber locked while armed")
        _within(volume, self._limits.chamber_ul, "volume", "uL")
        if self._model.loaded_ul > 0:
            raise _Error(ErrorCode.CHAMBER_NOT_EMPTY, "chamber not empty; UNLOAD first")
        self._call(self._model.load, volume)
        return f"OK LOADED {float(self._model.loaded_ul):.1f}"

    def _unload(self, _: list[str]) -> str:
        if self._armed():
            raise _Error(ErrorCode.LOCKED_WHILE_ARMED, "chamber locked while armed")
        volume = float(self._model.loaded_ul)
        if volume > 0:
            self._call(self._model.unload)
        return f"OK UNLOADED {volume:.1f}"

    def _recover(self, _: list[str]) -> str:
        if self._armed():
            raise _Error(ErrorCode.LOCKED_WHILE_ARMED, "chamber locked while armed")
        returned = self._call(self._model.recover)
        return f"OK RECOVERED {float(returned):.1f}"

    def _set_program(self, args: list[str]) -> str:
        voltage = _number(args[0], "voltage")
        width = _number(args[1], "pulse width")
        count_f = _number(args[2], "pulse count")
        gap = _number(args[3], "gap")
        if self._armed():
            raise _Error(ErrorCode.LOCKED_WHILE_ARMED, "program locked while armed")
        if count_f != int(count_f):
            raise _Error(ErrorCode.BAD_ARGUMENT, f"pulse count must be an integer: {args[2]}")
        count = int(count_f)
        lim = self._limits
        if voltage <= 0:
            raise _Error(ErrorCode.OUT_OF_RANGE, f"voltage {voltage:g} V must be above 0")
        _within(voltage, lim.voltage_v, "voltage", "V")
        _within(width, lim.pulse_width_us, "pulse width", "us")
        _within(count, lim.pulse_count, "pulse count", "")
        _within(gap, GAP_MM, "gap", "mm")
        self._call(self._model.program, voltage, width, count, gap)
        self._program = (voltage, width, count, gap)
        return "OK " + self._program_text()

    def _program_text(self) -> str:
        if self._program is None:
            return "PROG NONE"
        v, w, n, g = self._program
        return f"PROG {v:.1f} {w:.1f} {n:d} {g:.2f}"

    def _read_program(self, _: list[str]) -> str:
        return "OK " + self._program_text()

    def _arm(self, _: list[str]) -> str:
        if self._model.loaded_ul <= 0:
            raise _Error(ErrorCode.NOT_LOADED, "chamber not loaded")
        if self._program is None:
            raise _Error(ErrorCode.NOT_PROGRAMMED, "no program set")
        if not self._armed():
            self._armed_at = self._clock.now()
            if hasattr(self._model, "armed"):
                self._model.armed = True
        return "OK ARMED"

    def _fire(self, _: list[str]) -> str:
        if self._armed_at is not None and not self._armed():
            raise _Error(ErrorCode.ARM_EXPIRED, f"arm expired after {ARM_TIMEOUT_S:g} s")
        if not self._armed():
            raise _Error(ErrorCode.NOT_ARMED, "not armed")
        if self._model.loaded_ul <= 0:
            raise _Error(ErrorCode.NOT_LOADED, "chamber not loaded")
        outcome = self._call(self._model.pulse)
        self._disarm()  # one arm, one shot
        fault = getattr(outcome, "fault", "")
        if fault:  # the generator tripped (overcurrent, empty chamber): nothing delivered
            raise _Error(
                ErrorCode.PULSE_ABORTED,
                f"pulse aborted: {fault} (field {outcome.field_v_per_cm:.1f} V/cm, "
                f"current {outcome.peak_current_a:.2f} A)",
            )
        return (
            f"OK FIRED FIELD={outcome.field_v_per_cm:.1f} "
            f"CURRENT={outcome.peak_current_a:.2f} PULSES={int(outcome.pulses_delivered)}"
        )

    def _disarm_cmd(self, _: list[str]) -> str:
        self._disarm()
        return "OK DISARMED"

    def _clear(self, _: list[str]) -> str:
        self._fault = "NONE"
        return "OK CLEARED"

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run a model action; the model's refusal (empty bag, ...) is a device fault."""
        try:
            return fn(*args)
        except (ValueError, RuntimeError) as exc:
            raise _Error(ErrorCode.DEVICE_FAULT, str(exc) or type(exc).__name__) from None
