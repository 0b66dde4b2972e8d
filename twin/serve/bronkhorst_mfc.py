"""The twin's gas dispenser as Bronkhorst-style thermal mass-flow controllers on one RS-485 bus.

Every controller of ``plant.gas`` answers Modbus RTU at its own unit id on one
shared pty, as several instruments daisy-chained on one twisted pair
(docs/devices/gas-dispenser-bronkhorst.md). Measure and setpoint are uint16
with 32000 = 100 % of capacity; float32 mirrors in sccm, high word first.
Thermal sensors settle in about a second (TWIN_MODELS.md), so the controllers
served here follow their setpoint with tau = 0.25 s (98 % within 1 s), not
the 7 ms of a laminar-dP instrument.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from twin.clock import Clock
from twin.serve.faults import LinkFaults
from twin.serve.rtu_bus import RtuBus

__all__ = ["BRONKHORST_TAU_S", "DEFAULT_UNITS", "FULL_SCALE_COUNTS", "BronkhorstServer"]

FULL_SCALE_COUNTS = 32000  # 100 % of capacity
MAX_COUNTS = 41942  # 131.07 %: the largest measure the instrument reports
BRONKHORST_TAU_S = 0.25  # thermal sensor: settled (98 %) in about 1 s
DEFAULT_UNITS = {"A": 1, "B": 2, "C": 3, "D": 4}  # plant MFC id -> Modbus unit id

HR_MEASURE, HR_SETPOINT, HR_FLUID = 0x0020, 0x0021, 0x0022
HR_FMEASURE, HR_FSETPOINT, HR_CAPACITY = 0xA100, 0xA118, 0xA128
HR_IDENTITY = 0xF000  # 4 x ascii[8]: vendor, model, serial, firmware
IDENTITY_REGS = 8
VENDOR, FIRMWARE = "poc-twin", "V2.1-twin"

Action = Callable[[int, int, int, int, list[int], Any], Awaitable[ExcCodes | None]]


def _f32(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def _ascii(text: str) -> list[int]:
    raw = text.encode("ascii", "replace")[: 2 * IDENTITY_REGS].ljust(2 * IDENTITY_REGS, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def counts(sccm: float, full_scale: float) -> int:
    """uint16 counts of a flow (32000 = full scale), clamped to what the register holds."""
    if not math.isfinite(sccm):
        return 0
    return min(MAX_COUNTS, max(0, round(sccm / full_scale * FULL_SCALE_COUNTS)))


class BronkhorstServer:
    """Serves every MFC of ``plant.gas`` on one RS-485 bus; a driver opens ``.path``."""

    def __init__(
        self,
        plant: Any,
        clock: Clock,
        *,
        units: dict[str, int] | None = None,
        baud: int = 19200,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        self.plant, self.clock = plant, clock
        self.units = dict(units or DEFAULT_UNITS)
        missing = set(self.units) - set(plant.gas.mfcs)
        if missing:
            raise ValueError(f"the plant has no MFC {', '.join(sorted(missing))}")
        self.baud, self.parity, self.stopbits = baud, parity, stopbits
        self.link = LinkFaults()
        self._bus = RtuBus(clock, self.link, baud=baud, parity=parity, stopbits=stopbits)
        for uid in self.units:  # a thermal instrument: slower than the laminar-dP default
            mfc = plant.gas.mfcs[uid]
            mfc.params = dataclasses.replace(mfc.params, tau_s=BRONKHORST_TAU_S)

    @property
    def path(self) -> str:
        """The serial port a driver opens (the whole bus)."""
        if self._bus.driver_path is None:
            raise RuntimeError("Bronkhorst bus not started")
        return self._bus.driver_path

    def _device(self, uid: str, unit: int) -> SimDevice:
        regs = DataType.REGISTERS
        return SimDevice(
            id=unit,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [
                    SimData(HR_MEASURE, count=3, datatype=regs),
                    SimData(HR_FMEASURE, count=2, datatype=regs),
                    SimData(HR_FSETPOINT, count=2, datatype=regs),
                    SimData(HR_CAPACITY, count=2, datatype=regs),
                    SimData(HR_IDENTITY, count=4 * IDENTITY_REGS, datatype=regs),
                ],
                [SimData(0, datatype=regs)],
            ),
            action=self._action_for(uid),
        )

    async def start(self) -> None:
        """Open the bus: every unit answers its own id, an unknown id gets silence."""
        await self._bus.start([self._device(uid, unit) for uid, unit in self.units.items()])

    async def stop(self) -> None:
        """Stop answering; the port disappears."""
        await self._bus.stop()

    def _image(self, uid: str) -> dict[int, int]:
        mfc = self.plant.gas.mfcs[uid]
        fs = float(mfc.full_scale_sccm)
        r = mfc.observe()
        image = {
            HR_MEASURE: counts(r.mass_flow, fs),
            HR_SETPOINT: counts(mfc.setpoint_sccm, fs),
            HR_FLUID: int(mfc.gas),
        }
        image.update(enumerate(_f32(r.mass_flow), HR_FMEASURE))
        image.update(enumerate(_f32(mfc.setpoint_sccm), HR_FSETPOINT))
        image.update(enumerate(_f32(fs), HR_CAPACITY))
        model, serial = f"F-201CV-{fs:g}SCCM", f"TWM{uid}{int(fs):05d}"
        ident = [r for text in (VENDOR, model, serial, FIRMWARE) for r in _ascii(text)]
        image.update(enumerate(ident, HR_IDENTITY))
        return image

    def _action_for(self, uid: str) -> Action:
        async def action(
            function_code: int,
            start_address: int,
            address: int,
            _count: int,
            registers: list[int],
            values: Any,
        ) -> ExcCodes | None:
            self.plant.advance_to(self.clock.now())
            if function_code not in (3, 6, 16):
                return ExcCodes.ILLEGAL_FUNCTION
            mfc = self.plant.gas.mfcs[uid]
            if values is not None:
                written = dict(enumerate((int(v) for v in values), address))
                if set(written) != {HR_SETPOINT}:
                    return ExcCodes.ILLEGAL_ADDRESS  # only the setpoint is writable
                if written[HR_SETPOINT] > FULL_SCALE_COUNTS:
                    return ExcCodes.ILLEGAL_VALUE
                fs = float(mfc.full_scale_sccm)
                mfc.setpoint_sccm = written[HR_SETPOINT] / FULL_SCALE_COUNTS * fs
                return None
            for addr, value in self._image(uid).items():
                if 0 <= addr - start_address < len(registers):
                    registers[addr - start_address] = value
            return None

        return action
