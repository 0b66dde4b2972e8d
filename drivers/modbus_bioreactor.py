"""Bioreactor controller over Modbus TCP or Modbus RTU, per docs/devices/bioreactor-modbus.md.

The register addresses below are copied from that manual on purpose: the driver
knows the documented map, not the twin's server, so it works unchanged against
a real controller that implements the same map. Which wire (TCP or an RS-485
port) is only a matter of config: both go through drivers.modbus_link.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Awaitable, Callable
from typing import Literal

import pydantic
from pymodbus.pdu import ModbusPDU

from drivers.modbus_link import (
    LinkCounters,
    ModbusLink,
    ModbusRefused,
    RawRequest,
    Request,
    open_modbus_link,
    raw_tcp_exchange,
)
from drivers.settings import BusClaim, LinkSettings, SerialPortSettings, TcpSettings
from twin.clock import Clock
from twin.equipment import BioreactorLimits, BioreactorPV, CellSample, DeviceIdentity, Material
from twin.errors import CommunicationError, EquipmentError

__all__ = [
    "BioreactorLimitsConfig",
    "ModbusBioreactor",
    "ModbusBioreactorConfig",
    "ModbusRtuBioreactorConfig",
]

# Input registers (FC4)
IR_PV = 0  # 8 float32 then STATUS (16), HEARTBEAT (17), PUMP_REMAINING (18)
IR_PV_COUNT = 19
IR_SAMPLE = 40  # SAMPLE_SEQ, then 5 float32
IR_SAMPLE_COUNT = 11
IR_HARVEST_VOLUME = 60
IR_PUMP_RUNS = 64
UNSENT = -1  # no PUMP_RUNS read yet for the pump command under way
IR_IDENTITY = 100  # 4 x ascii[8]
# Holding registers (FC3/6/16)
HR_TEMP_SP, HR_ROCKING_SP, HR_PERFUSION_SP = 0, 2, 4
HR_ADD_VOLUME, HR_ADD_MATERIAL, HR_COMMAND = 6, 8, 9
HR_WORD_ORDER = 99
CMD_ADD, CMD_SAMPLE, CMD_HARVEST, CMD_SAFE_STATE = 1, 2, 3, 4
# Status bits
PUMP_RUNNING, HARVEST_DONE, SAFE_STATE = 1 << 2, 1 << 5, 1 << 6

Range = tuple[float, float]


class BioreactorLimitsConfig(pydantic.BaseModel, extra="forbid", frozen=True, allow_inf_nan=False):
    """The bench file's setpoint limits for this bioreactor (fields of BioreactorLimits)."""

    temperature_c: Range = (4.0, 40.0)
    rocking_rpm: Range = (0.0, 40.0)
    perfusion_ml_per_day: Range = (0.0, 2000.0)
    working_volume_ml: Range = (50.0, 1000.0)

    @pydantic.field_validator("*")
    @classmethod
    def _ordered(cls, v: Range) -> Range:
        if v[0] > v[1]:
            raise ValueError(f"lower limit {v[0]} is above upper limit {v[1]}")
        return v

    def to_limits(self) -> BioreactorLimits:
        """The equipment-layer limits object the engine checks recipes against."""
        return BioreactorLimits(**self.model_dump())


class _BioreactorOptions(LinkSettings):
    """What every bioreactor driver reads besides its endpoint."""

    word_order: Literal["big", "little"] = "big"
    command_timeout_s: float = pydantic.Field(3600.0, gt=0)  # longest addition/count/harvest
    limits: BioreactorLimitsConfig = BioreactorLimitsConfig()

    def claims(self) -> list[BusClaim]:
        """This controller's unit on its bus (for the bench validator)."""
        ep = self  # the subclasses are endpoints too
        return [BusClaim(ep.bus_key(), ep.line_settings(), self.unit, ("unit",))]  # type: ignore[attr-defined]


class ModbusBioreactorConfig(TcpSettings, _BioreactorOptions, extra="forbid"):
    """A controller on Modbus TCP (host:port, unit id): settings from the bench file."""


class ModbusRtuBioreactorConfig(SerialPortSettings, _BioreactorOptions, extra="forbid"):
    """A controller on an RS-485 bus (port, baud, parity, stop bits, unit id)."""

    timeout_s: float = pydantic.Field(0.5, gt=0)


class ModbusBioreactor:
    """A Bioreactor (twin.equipment) reached over Modbus TCP or RTU."""

    def __init__(
        self,
        name: str,
        config: ModbusBioreactorConfig | ModbusRtuBioreactorConfig,
        clock: Clock,
    ) -> None:
        self.name = name
        self.config = config
        self.limits: BioreactorLimits = config.limits.to_limits()
        self.counters = LinkCounters()
        self._clock = clock
        self._link: ModbusLink | None = None
        #: PUMP_RUNS read just before this driver's last ADD or HARVEST command (UNSENT while
        #: that call has not read it yet; None before any): whether the command reached the
        #: pump, so a total is never an earlier run's.
        self._runs_before: int | None = None

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Join the endpoint's link and check the device's float word order matches the bench."""
        cfg = self.config
        if self._link is None:
            self._link = open_modbus_link(cfg, self._clock, device=self.name)
        (order,) = await self.read_registers("holding", HR_WORD_ORDER, 1)
        device_order = {0: "big", 1: "little"}.get(order, f"unknown ({order})")
        if device_order != cfg.word_order:
            raise EquipmentError(
                self.name,
                f"device sends float32 words {device_order}-endian (holding register "
                f"{HR_WORD_ORDER} = {order}) but the bench says word_order={cfg.word_order!r}: "
                "every float would be misread",
            )

    async def close(self) -> None:
        """Let go of the link (closed when its last device lets go; safe to call twice)."""
        link, self._link = self._link, None
        if link is not None:
            link.release()

    async def _call(
        self, what: str, request: Request, check: Callable[[ModbusPDU], bool] | None = None
    ) -> ModbusPDU:
        """One exchange: no answer -> CommunicationError; exception reply -> DeviceRefused."""
        if self._link is None:
            raise CommunicationError(self.name, "not connected: call connect() first")
        return await self._link.transact(
            self.name, self.config, self.counters, what, request, check
        )

    async def read_registers(
        self, table: Literal["input", "holding"], address: int, count: int
    ) -> list[int]:
        """Raw register read, for commissioning and diagnostics."""
        unit = self.config.unit
        what = f"reading {count} {table} register(s) at {address}"
        fc = 4 if table == "input" else 3

        def answers(rr: ModbusPDU) -> bool:
            return rr.function_code == fc and len(rr.registers) == count

        if table == "input":
            rr = await self._call(
                what,
                lambda c: c.read_input_registers(address, count=count, device_id=unit),
                answers,
            )
        else:
            rr = await self._call(
                what,
                lambda c: c.read_holding_registers(address, count=count, device_id=unit),
                answers,
            )
        return list(rr.registers)

    async def _write(self, what: str, address: int, values: list[int]) -> None:
        unit = self.config.unit

        def answers(rr: ModbusPDU) -> bool:
            return rr.function_code == 16 and rr.address == address

        await self._call(
            what, lambda c: c.write_registers(address, values, device_id=unit), answers
        )

    # -- protocol probes (conformance kits) ------------------------------------------------

    async def probe_request(self, pdu: bytes) -> int:
        """The exception code the device answers to one raw request PDU (0: a normal reply):
        lets a kit check refusals (bad quantity, unlisted function) no typed call can send."""
        unit = self.config.unit
        what = f"probing with request {pdu.hex(' ')}"
        try:
            await self._call(what, lambda c: c.execute(False, RawRequest(pdu, unit)))
        except ModbusRefused as refused:
            return refused.code
        return 0

    async def probe_frame(self, frame: bytes) -> tuple[bytes, bool] | None:
        """Raw bytes on a TCP connection of their own: (what came back, whether the device
        closed it). None on a serial line, where a kit cannot send beside the link."""
        cfg = self.config
        if not isinstance(cfg, TcpSettings):
            return None
        return await raw_tcp_exchange(cfg.host, cfg.port, frame, self._clock, cfg.timeout_s)

    # -- encoding ----------------------------------------------------------------------------

    def _floats(self, regs: list[int]) -> list[float]:
        """float32 values from registers in the configured word order (one struct call for
        them all: every poll decodes eight)."""
        n, odd = divmod(len(regs), 2)
        if odd:
            raise ValueError(f"{len(regs)} registers cannot hold float32 values (two each)")
        if self.config.word_order != "big":
            regs = list(regs)
            regs[0::2], regs[1::2] = regs[1::2], regs[0::2]
        return list(struct.unpack(f">{n}f", struct.pack(f">{2 * n}H", *regs)))

    def _regs(self, value: float) -> list[int]:
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
        return [hi, lo] if self.config.word_order == "big" else [lo, hi]

    # -- Bioreactor protocol -------------------------------------------------------------------

    async def identify(self) -> DeviceIdentity:
        """Who answers at this endpoint: checked when a bench is commissioned."""
        regs = await self.read_registers("input", IR_IDENTITY, 32)
        raw = b"".join(r.to_bytes(2, "big") for r in regs)
        fields = [raw[i : i + 16].rstrip(b"\0").decode("ascii", "replace") for i in (0, 16, 32, 48)]
        return DeviceIdentity(*fields)

    async def read(self) -> BioreactorPV:
        """One poll of every process value (one FC4 request)."""
        regs = await self.read_registers("input", IR_PV, IR_PV_COUNT)
        f = self._floats(regs[:16])
        return BioreactorPV(
            temperature_c=f[0],
            temperature_sp_c=f[1],
            do_pct=f[2],
            ph=f[3],
            volume_ml=f[4],
            rocking_rpm=f[5],
            perfusion_ml_per_day=f[6],
            viable_cells_per_ml=f[7],
            status=regs[16],
            heartbeat=regs[17],
        )

    async def _set_float(
        self, what: str, address: int, value: float, limits: tuple[float, float]
    ) -> None:
        """Write a float32 setpoint and read it back: the device's value is the one in force.

        The bench's limits are checked here, before the wire: a bench may narrow what the
        controller itself accepts, and no caller (engine, CLI, kit) may write past them."""
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: {what} must be a finite number, not {value}")
        lo, hi = limits
        if not lo <= value <= hi:
            raise EquipmentError(
                self.name, f"{what} {value:g} outside the bench's limits {lo:g}..{hi:g}"
            )
        regs = self._regs(value)
        await self._write(f"writing {what} {value:g}", address, regs)
        back = await self.read_registers("holding", address, 2)
        if back != regs:
            (got,) = self._floats(back)
            raise EquipmentError(self.name, f"{what} read back {got:g} after writing {value:g}")

    async def set_temperature(self, celsius: float) -> None:
        """New temperature setpoint for the controller's own loop."""
        await self._set_float(
            "temperature setpoint (°C)", HR_TEMP_SP, celsius, self.limits.temperature_c
        )

    async def set_rocking(self, rpm: float) -> None:
        """Rocking rate: sets mixing and oxygen transfer (kLa)."""
        await self._set_float("rocking setpoint (rpm)", HR_ROCKING_SP, rpm, self.limits.rocking_rpm)

    async def set_perfusion(self, ml_per_day: float) -> None:
        """Fresh-medium perfusion rate (0 stops it)."""
        await self._set_float(
            "perfusion setpoint (mL/day)",
            HR_PERFUSION_SP,
            ml_per_day,
            self.limits.perfusion_ml_per_day,
        )

    async def _status(self) -> int:
        (status,) = await self.read_registers("input", IR_PV + 16, 1)
        return status

    async def _wait(self, what: str, done: Callable[[], Awaitable[bool]]) -> None:
        """Poll on the batch clock until ``done``; a device that never finishes is an error."""
        try:
            async with self._clock.timeout(self.config.command_timeout_s):
                while not await done():
                    await self._clock.sleep(self.config.poll_interval_s)
        except TimeoutError as exc:
            raise EquipmentError(
                self.name, f"{what} not finished after {self.config.command_timeout_s:g} s"
            ) from exc

    async def add(self, material: Material, volume_ml: float) -> None:
        """Dose a material through the addition port; returns when the pump has finished."""
        material = Material(material)
        what = f"addition of {volume_ml:g} mL {material.name}"
        values = [*self._regs(volume_ml), int(material), CMD_ADD]
        await self._before_pump_command()
        await self._write(f"starting {what}", HR_ADD_VOLUME, values)
        back = await self.read_registers("holding", HR_ADD_VOLUME, 3)
        if back != values[:3]:
            raise EquipmentError(self.name, f"{what}: device holds {back}, wrote {values[:3]}")

        async def pump_stopped() -> bool:
            return not await self._status() & PUMP_RUNNING

        await self._wait(what, pump_stopped)

    async def sample(self) -> CellSample:
        """Draw and count a sample: waits until the sample counter advances."""
        (before,) = await self.read_registers("input", IR_SAMPLE, 1)
        await self._write("starting sample", HR_COMMAND, [CMD_SAMPLE])
        result: list[int] = []

        async def counted() -> bool:
            result[:] = await self.read_registers("input", IR_SAMPLE, IR_SAMPLE_COUNT)
            return result[0] != before

        await self._wait("sample count", counted)
        return CellSample(*self._floats(result[1:]))

    async def harvest(self) -> float:
        """Drain the bag to the final-product bag; returns the harvested volume in mL."""
        await self._before_pump_command()
        await self._write("starting harvest", HR_COMMAND, [CMD_HARVEST])

        async def harvested() -> bool:
            status = await self._status()
            return bool(status & HARVEST_DONE) and not status & PUMP_RUNNING

        await self._wait("harvest", harvested)
        return await self.harvested_ml()

    async def harvested_ml(self) -> float:
        """What the last harvest drained (mL): a completed one's volume, or what one a safe
        state stopped part-way had moved into the product bag."""
        return await self._total(0)

    async def _before_pump_command(self) -> None:
        """Note PUMP_RUNS before an ADD or HARVEST command (see :meth:`_total`)."""
        self._runs_before = UNSENT  # cut short before even this read: the command never went
        try:
            (runs,) = await self.read_registers("input", IR_PUMP_RUNS, 1)
        except ModbusRefused as refused:
            if refused.code != 2:  # not "no such register": the line or device is wrong
                raise
            self._runs_before = None  # a map-1 controller: its totals are taken as they are
            return
        self._runs_before = runs

    async def _total(self, index: int) -> float:
        """A pump total (0 HARVEST_VOLUME, 1 ADDED_VOLUME) of this driver's last pump
        command; 0 if that command never reached the pump (PUMP_RUNS as it was before it):
        the register would still hold an earlier run's volume."""
        before = self._runs_before
        if before == UNSENT:
            return 0.0
        if before is None:  # no count to judge by (a map-1 controller, or none sent yet)
            address = IR_HARVEST_VOLUME + 2 * index
            (volume,) = self._floats(await self.read_registers("input", address, 2))
            return volume
        regs = await self.read_registers("input", IR_HARVEST_VOLUME, 5)
        return 0.0 if regs[4] == before else self._floats(regs[:4])[index]

    async def added_ml(self) -> float:
        """What the current or last addition has pumped (mL): the pump's total, so an
        addition a hold or abort stopped part-way is recorded as what went in."""
        return await self._total(1)

    async def safe_state(self) -> None:
        """Hold safe: keep temperature, stop perfusion and additions (checked on the status)."""
        await self._write("commanding safe state", HR_COMMAND, [CMD_SAFE_STATE])
        status = await self._status()
        (perfusion,) = self._floats(await self.read_registers("holding", HR_PERFUSION_SP, 2))
        if not status & SAFE_STATE or status & PUMP_RUNNING or perfusion != 0.0:
            raise EquipmentError(
                self.name,
                f"safe state not confirmed (status {status:#06x}, perfusion SP {perfusion:g})",
            )
