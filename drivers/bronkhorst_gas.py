"""Gas dispenser driver: Bronkhorst-style thermal mass-flow controllers on one RS-485 bus.

One Modbus unit id per gas line, all on one port (docs/devices/gas-dispenser-bronkhorst.md);
every unit shares the port's one :class:`ModbusLink`, so requests never interleave.
Measure and setpoint travel as uint16 counts (``full_scale_counts`` = 100 % of the
instrument's capacity). At connect each unit must report the gas and capacity the
bench says it has; every setpoint is read back; the O2 cap is enforced here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pydantic
from pymodbus.pdu import ModbusPDU

from drivers.gas_lines import GAS_KEYS, GasLimitsConfig, close_o2_and_n2, gas_key
from drivers.modbus_link import LinkCounters, ModbusLink, Request, open_modbus_link
from drivers.settings import BusClaim, LinkSettings, SerialPortSettings
from twin.clock import Clock
from twin.equipment import DeviceIdentity, Gas, GasDispenserLimits, GasDispenserPV
from twin.errors import CommunicationError, DeviceRefused, EquipmentError, InterlockTripped

__all__ = ["BronkhorstGasConfig", "BronkhorstGasDispenser", "BronkhorstGasLimits"]

HR_MEASURE, HR_SETPOINT, HR_FLUID = 0x0020, 0x0021, 0x0022
HR_FMEASURE, HR_CAPACITY = 0xA100, 0xA128
HR_IDENTITY = 0xF000  # 4 x ascii[8]: vendor, model, serial, firmware


BronkhorstGasLimits = GasLimitsConfig  # the bench-file name this driver has always used


class BronkhorstGasConfig(SerialPortSettings, LinkSettings, extra="forbid"):
    """The bus, one unit id per gas line, the scaling and the exchange policy."""

    units: dict[str, int] = pydantic.Field(
        default_factory=lambda: {"air": 1, "o2": 2, "n2": 3, "co2": 4}
    )
    full_scale_counts: int = pydantic.Field(32000, ge=1, le=65535)  # counts at 100 %
    word_order: str = pydantic.Field("big", pattern="^(big|little)$")  # float32 mirrors
    timeout_s: float = pydantic.Field(0.5, gt=0)
    capacity_tolerance: float = pydantic.Field(0.01, ge=0)  # device vs bench full scale
    limits: BronkhorstGasLimits = BronkhorstGasLimits()

    @pydantic.field_validator("units")
    @classmethod
    def _unit_ids(cls, value: dict[str, int]) -> dict[str, int]:
        out = {gas_key(k): v for k, v in value.items()}
        for gas, uid in out.items():
            if not 1 <= uid <= 247:
                raise ValueError(f"unit id of {gas} must be 1..247, got {uid}")
        if len(set(out.values())) != len(out):
            raise ValueError("two gases share one unit id")
        return out

    @pydantic.model_validator(mode="after")
    def _one_unit_per_gas(self) -> BronkhorstGasConfig:
        # LinkSettings brings a single `unit`; a gas dispenser has one unit per gas line.
        if "unit" in self.model_fields_set:
            raise ValueError("a gas dispenser has one unit id per gas: write units: {air: 1, ...}")
        return self

    @pydantic.model_validator(mode="after")
    def _full_scale_known(self) -> BronkhorstGasConfig:
        missing = set(self.units) - set(self.limits.full_scale_sccm)
        if missing:
            raise ValueError(f"no full scale for {', '.join(sorted(missing))}")
        return self

    def claims(self) -> list[BusClaim]:
        """Every unit id on the bus (for the bench validator)."""
        line = self.line_settings()
        return [BusClaim(self.port, line, uid, ("units", gas)) for gas, uid in self.units.items()]


class BronkhorstGasDispenser:
    """GasDispenser over Modbus RTU: one unit id per gas line, one shared bus."""

    def __init__(self, name: str, config: BronkhorstGasConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._units = {GAS_KEYS[k]: uid for k, uid in config.units.items()}
        self._fs = {GAS_KEYS[k]: v for k, v in config.limits.full_scale_sccm.items()}
        self.limits = GasDispenserLimits(
            full_scale_sccm=dict(self._fs), o2_cap_sccm=config.limits.o2_cap_sccm
        )
        self.counters = LinkCounters()
        self._link: ModbusLink | None = None
        # One settings object per unit, so error messages name the unit that failed.
        self._settings = {u: config.model_copy(update={"unit": u}) for u in self._units.values()}

    async def connect(self) -> None:
        """Join the bus; each unit must meter the gas, at the capacity, the bench says."""
        if self._link is None:
            self._link = open_modbus_link(self.config, self._clock, device=self.name)
        for gas, uid in self._units.items():
            (fluid,) = await self._read(gas, HR_FLUID, 1)
            if fluid != int(gas):
                known = {int(g): g.name for g in Gas}
                raise EquipmentError(
                    self.name,
                    f"unit {uid} meters {known.get(fluid, f'fluid {fluid}')}, "
                    f"the bench says {gas.name}",
                )
            capacity = self._float(await self._read(gas, HR_CAPACITY, 2))
            expected = self._fs[gas]
            if abs(capacity - expected) > self.config.capacity_tolerance * expected:
                raise EquipmentError(
                    self.name,
                    f"unit {uid} ({gas.name}) has a capacity of {capacity:g} sccm, the bench "
                    f"says {expected:g}: every flow would be scaled wrong",
                )

    async def close(self) -> None:
        """Let go of the bus (closed when its last user lets go)."""
        link, self._link = self._link, None
        if link is not None:
            link.release()

    async def identify(self) -> DeviceIdentity:
        """Every unit's identity; model and serial list each unit (``1:...,2:...``)."""
        ids = []
        for gas, uid in self._units.items():
            regs = await self._read(gas, HR_IDENTITY, 32)
            raw = b"".join(r.to_bytes(2, "big") for r in regs)
            fields = [
                raw[i : i + 16].rstrip(b"\0").decode("ascii", "replace") for i in range(0, 64, 16)
            ]
            ids.append((uid, fields))
        return DeviceIdentity(
            vendor=",".join(sorted({f[0] for _, f in ids})),
            model=",".join(f"{uid}:{f[1]}" for uid, f in ids),
            serial=",".join(f"{uid}:{f[2]}" for uid, f in ids),
            firmware=",".join(sorted({f[3] for _, f in ids})),
        )

    async def read(self) -> GasDispenserPV:
        """Measure and setpoint of every gas line: one 2-register read per unit."""
        flows: dict[Gas, float] = {}
        setpoints: dict[Gas, float] = {}
        for gas in self._units:
            measure, setpoint = await self._read(gas, HR_MEASURE, 2)
            flows[gas] = self._sccm(gas, measure)
            setpoints[gas] = self._sccm(gas, setpoint)
        return GasDispenserPV(mass_flow_sccm=flows, setpoint_sccm=setpoints)

    async def read_float_flow(self, gas: Gas) -> float:
        """The float32 measure mirror (sccm): finer than the uint16 counts."""
        return self._float(await self._read(gas, HR_FMEASURE, 2))

    async def set_flow(self, gas: Gas, sccm: float) -> None:
        """Write a setpoint in counts and read it back: the device's value is the one in force."""
        uid = self._unit(gas)
        if gas == Gas.O2 and sccm > self.limits.o2_cap_sccm:
            raise InterlockTripped(
                f"{self.name}: O2 {sccm:g} sccm exceeds the O2 cap of "
                f"{self.limits.o2_cap_sccm:g} sccm"
            )
        fs = self._fs[gas]
        if not 0.0 <= sccm <= fs:
            raise EquipmentError(self.name, f"{gas.name} {sccm:g} sccm outside 0..{fs:g} sccm")
        counts = round(sccm / fs * self.config.full_scale_counts)
        what = f"writing {gas.name} setpoint {sccm:g} sccm ({counts} counts) to unit {uid}"

        def answers(rr: ModbusPDU) -> bool:
            return rr.function_code == 6 and rr.address == HR_SETPOINT

        await self._exchange(
            what, uid, lambda c: c.write_register(HR_SETPOINT, counts, device_id=uid), answers
        )
        (back,) = await self._read(gas, HR_SETPOINT, 1)
        if back != counts:
            raise DeviceRefused(
                self.name,
                f"unit {uid} ({gas.name}) setpoint not accepted: wrote {counts} counts, "
                f"reads back {back}",
            )

    async def safe_state(self) -> None:
        """Close O2 and N2, keep air and CO2; tries both, then reports every failure."""
        await close_o2_and_n2(self.name, self._units, self.set_flow)

    # -- helpers ------------------------------------------------------------------------------

    def _unit(self, gas: Gas) -> int:
        try:
            return self._units[gas]
        except KeyError:
            raise EquipmentError(self.name, f"no {gas.name} line on this dispenser") from None

    def _sccm(self, gas: Gas, counts: int) -> float:
        return counts / self.config.full_scale_counts * self._fs[gas]

    def _float(self, regs: list[int]) -> float:
        hi, lo = regs if self.config.word_order == "big" else regs[::-1]
        return struct.unpack(">f", struct.pack(">HH", hi, lo))[0]

    async def _exchange(
        self, what: str, uid: int, request: Request, check: Callable[[ModbusPDU], bool]
    ) -> ModbusPDU:
        if self._link is None:
            raise CommunicationError(self.name, "not connected: call connect() first")
        return await self._link.transact(
            f"{self.name} unit {uid}", self._settings[uid], self.counters, what, request, check
        )

    async def _read(self, gas: Gas, address: int, count: int) -> list[int]:
        uid = self._unit(gas)

        def answers(rr: ModbusPDU) -> bool:
            return rr.function_code == 3 and len(rr.registers) == count

        rr = await self._exchange(
            f"reading {count} register(s) at {address:#06x} of unit {uid} ({gas.name})",
            uid,
            lambda c: c.read_holding_registers(address, count=count, device_id=uid),
            answers,
        )
        return list(rr.registers)
