"""The connection settings every driver reads from the bench file, and the buses they claim.

A driver's config is composed of an endpoint (:class:`TcpSettings` or
:class:`SerialPortSettings`) and the exchange policy (:class:`LinkSettings`).
``claims()`` tells the bench validator which bus, line settings and unit ids a
device occupies, so two devices answering one id on one bus, or two drivers
opening one port with different line settings, are refused before anything
is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pydantic

__all__ = [
    "Baud",
    "BusClaim",
    "LinkSettings",
    "ModbusEndpoint",
    "SerialPortSettings",
    "TcpSettings",
]


@dataclass(frozen=True)
class BusClaim:
    """One device (or one unit of a device) on one bus, as the bench validator sees it."""

    bus: str  # "tcp://host:port" or the serial port path
    line: tuple[object, ...]  # protocol and line settings every user of the bus must share
    unit: int | str | None  # None: the device owns the whole port
    loc: tuple[str, ...]  # where in the driver config the unit (or port) is written


class TcpSettings(pydantic.BaseModel, extra="forbid", allow_inf_nan=False):
    """A Modbus TCP endpoint (a controller, or a gateway in front of an RS-485 bus)."""

    host: str
    port: int = pydantic.Field(502, ge=1, le=65535)

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    def bus_key(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def line_settings(self) -> tuple[object, ...]:
        return ("modbus-tcp",)


#: The standard serial rates; any other is a typo a UART would not even open with.
Baud = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]


class SerialPortSettings(pydantic.BaseModel, extra="forbid", allow_inf_nan=False):
    """A serial port (RS-485/RS-232 adapter) and its line settings."""

    port: str
    baud: Baud = 19200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def describe(self) -> str:
        return self.port

    def bus_key(self) -> str:
        return self.port

    def line_settings(self) -> tuple[object, ...]:
        return ("modbus-rtu", self.baud, self.parity, self.stopbits, self.bytesize)

    def line_text(self) -> str:
        """``19200 8N1`` style, for messages."""
        return f"{self.baud} {self.bytesize}{self.parity}{self.stopbits}"


ModbusEndpoint = TcpSettings | SerialPortSettings


class LinkSettings(pydantic.BaseModel, extra="forbid", allow_inf_nan=False):
    """How patiently to talk to one device: the exchange policy of the industrial drivers."""

    unit: int = pydantic.Field(1, ge=0, le=247)
    timeout_s: float = pydantic.Field(1.0, gt=0)  # one attempt
    retries: int = pydantic.Field(2, ge=0, le=10)  # extra attempts after a failed one
    poll_interval_s: float = pydantic.Field(1.0, gt=0)  # status polls while a command runs
    reconnect_s: float = pydantic.Field(0.5, gt=0)  # first reconnect backoff, doubles ...
    reconnect_max_s: float = pydantic.Field(30.0, gt=0)  # ... up to this
    #: A call (bus wait included) never takes longer: a silent device is reported by then.
    #: Default: twice timeout_s x (retries + 1), room to wait behind one failing neighbour.
    watchdog_s: float | None = pydantic.Field(None, gt=0)

    def watchdog(self) -> float:
        """The longest any one call to this device may take."""
        if self.watchdog_s is not None:
            return self.watchdog_s
        return 2.0 * self.timeout_s * (self.retries + 1)

    @pydantic.model_validator(mode="after")
    def _watchdog_covers_one_attempt(self) -> LinkSettings:
        if self.watchdog_s is not None and self.watchdog_s < self.timeout_s:
            raise ValueError(
                f"watchdog_s {self.watchdog_s:g} is shorter than one attempt "
                f"(timeout_s {self.timeout_s:g})"
            )
        return self
