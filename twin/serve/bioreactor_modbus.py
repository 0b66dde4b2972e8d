"""The twin's bioreactor controller on the wire: docs/devices/bioreactor-modbus.md over TCP.

The server is passive, like the plant: nothing runs between requests. Every
request first brings the plant to ``clock.now()`` (finishing pump runs and
sample counts that fell due on the way), then renders the register block it
touches from the plant, or validates and applies a write. So the registers are
never stale and virtual time costs nothing while no client asks.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, Literal, Protocol

from pymodbus.constants import ExcCodes

from twin.clock import Clock
from twin.equipment import BioreactorLimits, CellSample, DeviceIdentity, Material
from twin.serve.faults import LinkFaults
from twin.serve.modbus_server import COILS, DISCRETE, HOLDING, INPUT, TwinModbusTcpServer

__all__ = [
    "DEFAULT_BIOREACTOR_IDENTITY",
    "BioreactorCommand",
    "BioreactorModbusServer",
    "BioreactorStatus",
]

WordOrder = Literal["big", "little"]

PUMP_ML_PER_MIN = 100.0  # addition and harvest pump (assumed: a peristaltic pump on a 1 L bag)
SAMPLE_COUNT_S = 60.0  # off-line count of one sample (assumed)
MAP_VERSION = 2  # 2: ADDED_VOLUME and PUMP_RUNS (62-64)
DEFAULT_BIOREACTOR_IDENTITY = DeviceIdentity(
    vendor="poc-twin", model="RB-1000 twin", serial="TWIN-RB-0001", firmware="1.0.0"
)

# Input registers (FC4)
IR_PV_FLOATS = 0  # 8 float32: temp, temp SP, DO, pH, volume, rocking, perfusion, VCD
IR_STATUS = 16
IR_HEARTBEAT = 17
IR_PUMP_REMAINING = 18
IR_MIRRORS = 20
IR_SAMPLE_SEQ = 40
IR_SAMPLE_FLOATS = 41  # 5 float32: VCD, viability, glucose, lactate, transduced
IR_HARVEST_VOLUME = 60
IR_ADDED_VOLUME = 62
IR_PUMP_RUNS = 64
IR_IDENTITY = 100  # 4 x ascii[8]: vendor, model, serial, firmware
IR_MAP_VERSION = 132
IDENTITY_REGS = 8

# Holding registers (FC3/6/16)
HR_TEMP_SP = 0
HR_ROCKING_SP = 2
HR_PERFUSION_SP = 4
HR_ADD_VOLUME = 6
HR_ADD_MATERIAL = 8
HR_COMMAND = 9
HR_WORD_ORDER = 99
HR_FLOATS = (HR_TEMP_SP, HR_ROCKING_SP, HR_PERFUSION_SP, HR_ADD_VOLUME)

#: The function codes docs/devices/bioreactor-modbus.md lists; any other gets 0x01 (coils
#: FC 1/5/15, diagnostics FC 8, device identification FC 43 among them).
FUNCTIONS = frozenset({2, 3, 4, 6, 16, 23})


class BioreactorCommand(IntEnum):
    """Codes written to the COMMAND holding register."""

    ADD = 1
    SAMPLE = 2
    HARVEST = 3
    SAFE_STATE = 4


class BioreactorStatus(IntFlag):
    """The status word (input register 16, discrete inputs 0-15)."""

    HEATER_ON = 1 << 0
    AT_SETPOINT = 1 << 1
    PUMP_RUNNING = 1 << 2
    SAMPLE_READY = 1 << 3
    SAMPLING = 1 << 4
    HARVEST_DONE = 1 << 5
    SAFE_STATE = 1 << 6
    ALARM = 1 << 7
    ALARM_TEMPERATURE = 1 << 8
    ALARM_DO_LOW = 1 << 9
    ALARM_OVERFILL = 1 << 10
    ALARM_HEATER = 1 << 11  # heater driven, no heater current (load failure)


_BUSY_CHECKED = (BioreactorCommand.SAMPLE, BioreactorCommand.HARVEST)
_HEATER_ON = int(BioreactorStatus.HEATER_ON)
_AT_SETPOINT = int(BioreactorStatus.AT_SETPOINT)
_PUMP_RUNNING = int(BioreactorStatus.PUMP_RUNNING)
_SAMPLING = int(BioreactorStatus.SAMPLING)
_ALARM = int(BioreactorStatus.ALARM)
_ALARM_TEMPERATURE = int(BioreactorStatus.ALARM_TEMPERATURE)
_ALARM_DO_LOW = int(BioreactorStatus.ALARM_DO_LOW)
_ALARM_OVERFILL = int(BioreactorStatus.ALARM_OVERFILL)
_ALARM_HEATER = int(BioreactorStatus.ALARM_HEATER)
_ANY_ALARM = _ALARM_TEMPERATURE | _ALARM_DO_LOW | _ALARM_OVERFILL | _ALARM_HEATER


class _BioreactorModel(Protocol):
    temperature_sp_c: float
    rocking_rpm: float
    perfusion_ml_per_day: float
    powered: bool

    def add(self, material: Material, volume_ml: float) -> None: ...
    def harvest(self) -> float: ...
    def sample(self) -> CellSample: ...
    def observe(self) -> Any: ...


class PlantLike(Protocol):
    """What the server needs of twin.sim.Plant (see /work/notes/plant_api.md)."""

    @property
    def bioreactor(self) -> _BioreactorModel: ...

    def advance_to(self, t: float) -> None: ...


@dataclass
class _PumpRun:
    kind: BioreactorCommand  # ADD or HARVEST
    t_start: float
    t_end: float
    material: Material
    volume_ml: float
    delivered_ml: float = 0.0


def encode_float32(value: float, word_order: WordOrder) -> list[int]:
    """Two registers of an IEEE float32 in the configured word order."""
    if math.isfinite(value) and abs(value) > 3.4e38:
        value = math.copysign(math.inf, value)
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo] if word_order == "big" else [lo, hi]


_F32_LIMIT = 3.4e38  # beyond it encode_float32 sends infinity


def encode_float32s(values: list[float], word_order: WordOrder) -> list[int]:
    """:func:`encode_float32` of each value, one after the other: packed in one go when no
    value needs its clamp (the process values of every poll), one by one otherwise."""
    if not (max(values) <= _F32_LIMIT and min(values) >= -_F32_LIMIT):  # NaN first: slow path
        return [r for x in values for r in encode_float32(x, word_order)]
    n = len(values)
    regs = list(struct.unpack(f">{2 * n}H", struct.pack(f">{n}f", *values)))
    if word_order != "big":
        regs[0::2], regs[1::2] = regs[1::2], regs[0::2]
    return regs


def decode_float32(regs: list[int], word_order: WordOrder) -> float:
    """The float32 held in two registers in the configured word order."""
    hi, lo = (regs[0], regs[1]) if word_order == "big" else (regs[1], regs[0])
    return struct.unpack(">f", struct.pack(">HH", hi, lo))[0]


def _ascii(text: str, n_regs: int) -> list[int]:
    raw = text.encode("ascii", "replace")[: 2 * n_regs].ljust(2 * n_regs, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _u16(x: float) -> int:
    return 0 if not math.isfinite(x) else min(0xFFFF, max(0, round(x)))


def _i16(x: float) -> int:
    v = 0 if not math.isfinite(x) else min(0x7FFF, max(-0x8000, round(x)))
    return v & 0xFFFF


_BLOCKS: dict[str, tuple[tuple[int, int], ...]] = {
    DISCRETE: ((0, 16),),
    HOLDING: ((HR_TEMP_SP, HR_COMMAND + 1), (HR_WORD_ORDER, HR_WORD_ORDER + 1)),
    INPUT: (
        (IR_PV_FLOATS, IR_PUMP_REMAINING + 1),
        (IR_MIRRORS, IR_MIRRORS + 8),
        (IR_SAMPLE_SEQ, IR_SAMPLE_SEQ + 11),
        (IR_HARVEST_VOLUME, IR_PUMP_RUNS + 1),
        (IR_IDENTITY, IR_MAP_VERSION + 1),
    ),
}
"""The mapped blocks of each table; a request must lie inside one of them."""


def _block(table: str, address: int, count: int) -> int | ExcCodes:
    """Start of the mapped block holding ``address .. address+count-1``, or why not."""
    if table == COILS:
        return ExcCodes.ILLEGAL_FUNCTION
    for lo, hi in _BLOCKS[table]:
        if lo <= address and address + count <= hi:
            return lo
    return ExcCodes.ILLEGAL_ADDRESS


def _within(x: float, lo: float, hi: float) -> bool:
    return math.isfinite(x) and lo <= x <= hi


class BioreactorModbusServer:
    """One simulated bioreactor controller answering Modbus TCP on loopback (or any host)."""

    def __init__(
        self,
        plant: PlantLike,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        word_order: WordOrder = "big",
        identity: DeviceIdentity = DEFAULT_BIOREACTOR_IDENTITY,
        limits: BioreactorLimits = BioreactorLimits(),  # noqa: B008 (frozen dataclass)
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be 1..247, not {unit}")
        if word_order not in ("big", "little"):
            raise ValueError(f"word_order must be 'big' or 'little', not {word_order!r}")
        self.plant, self.clock = plant, clock
        self.host, self.port, self.unit = host, port, unit
        self.word_order: WordOrder = word_order
        self.identity, self.limits = identity, limits
        self._server: TwinModbusTcpServer | None = None
        self.link = LinkFaults()  # faults this controller shows on the wire
        #: Told after each request whether it changed the bag (a write taken, a dose or
        #: harvest that ended): the twin's keeper pictures the plant then
        #: (twin/serve/keeping.py). None: nobody listens.
        self.on_request: Callable[[bool], None] | None = None
        self.functions = FUNCTIONS
        self._pump: _PumpRun | None = None
        self._sample_due: tuple[float, CellSample] | None = None
        self._sample: CellSample = CellSample(0.0, 0.0, 0.0, 0.0, 0.0)
        self._sample_seq = 0
        self._harvest_volume = 0.0
        #: The current or last addition: its pump's total is ADDED_VOLUME.
        self._last_add: _PumpRun | None = None
        #: ADD and HARVEST commands accepted (wrapping): whether a command reached the pump.
        self._pump_runs = 0
        self._latched = BioreactorStatus(0)  # SAMPLE_READY, HARVEST_DONE, SAFE_STATE
        self._add_volume = 0.0
        self._add_material = Material.MEDIUM
        self._last_command = 0
        self._identity_regs = [
            r
            for text in (identity.vendor, identity.model, identity.serial, identity.firmware)
            for r in _ascii(text, IDENTITY_REGS)
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; afterwards ``port`` is the bound port (the OS picks one when port=0).

        On pymodbus' null-modem host (an in-process bench) the port is a name in this
        process, not a socket: the same server and client code, no wire."""
        server = TwinModbusTcpServer(self, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except BaseException:
            server.forget_pdu_end()  # nobody will shut down a server that never listened
            raise
        self._server = server
        sockets = getattr(server.transport, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        server, self._server = self._server, None
        if server is None:
            return
        listener = server.transport
        await server.shutdown()
        wait_closed = getattr(listener, "wait_closed", None)  # a null modem closes at once
        if wait_closed is not None:
            await wait_closed()

    # -- request handling (called by twin.serve.modbus_server) --------------------------------

    def read(self, table: str, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """The registers of one read, rendered from the plant as of now."""
        block = _block(table, address, count)
        if isinstance(block, ExcCodes):
            return block
        now = self.clock.now()
        ended = self._service(now)
        if self.on_request is not None:
            self.on_request(ended)
        if table == DISCRETE:
            word = self._status_word()
            return [bool(word >> i & 1) for i in range(address, address + count)]
        image = self._holding_image() if table == HOLDING else self._input_block(block, now)
        return [image[a] for a in range(address, address + count)]

    def write(self, table: str, address: int, values: list[int]) -> ExcCodes | None:
        """Validate and apply one write to the holding registers."""
        if table != HOLDING:
            return ExcCodes.ILLEGAL_FUNCTION
        block = _block(table, address, len(values))
        if isinstance(block, ExcCodes):
            return block
        now = self.clock.now()
        self._service(now)
        refused = self._write(address, values, now)
        if self.on_request is not None:
            self.on_request(refused is None)
        return refused

    def lose_power(self, now: float) -> None:
        """The controller loses power (a scenario's ``power_loss``): it answers nothing, its
        pump stops where it is (what it moved stays moved), perfusion and rocking stop and
        the bag is no longer heated."""
        self._service(now)
        run, self._pump = self._pump, None
        if run is not None and run.kind is BioreactorCommand.ADD:
            self._dose(run, now)
        elif run is not None:
            self._drain(run, now)
        self._sample_due = None
        model = self.plant.bioreactor
        model.perfusion_ml_per_day = 0.0
        model.rocking_rpm = 0.0
        model.powered = False
        self.link.silent = True

    def power_up(self, temperature_sp_c: float) -> None:
        """Power is back: the controller starts at its power-up setpoints (it keeps none in
        memory: ``temperature_sp_c``, no rocking, no perfusion) and answers again."""
        model = self.plant.bioreactor
        model.temperature_sp_c = temperature_sp_c
        model.powered = True
        self._latched = BioreactorStatus(0)
        self.link.silent = False

    def _service(self, now: float) -> bool:
        """Bring the plant to ``now``, completing what fell due on the way; True when a
        dose or harvest ended on the way."""
        model = self.plant.bioreactor
        run = self._pump
        ended = False
        if run is not None:
            if now >= run.t_end:
                ended = True
                self.plant.advance_to(run.t_end)
                self._pump = None
                if run.kind is BioreactorCommand.ADD:
                    self._dose(run, run.t_end)
                else:  # the bag is drained (whatever it holds now)
                    run.delivered_ml += model.harvest()
                    self._harvest_volume = run.delivered_ml
                    self._latched |= BioreactorStatus.HARVEST_DONE
            elif run.kind is BioreactorCommand.ADD:
                self.plant.advance_to(now)
                self._dose(run, now)
        if self._sample_due is not None and now >= self._sample_due[0]:
            self._sample = self._sample_due[1]
            self._sample_due = None
            self._sample_seq = (self._sample_seq + 1) & 0xFFFF
            self._latched |= BioreactorStatus.SAMPLE_READY
        self.plant.advance_to(now)
        return ended

    def _drain(self, run: _PumpRun, t: float) -> None:
        """A harvest stopped at time t: what the pump had moved is in the product bag."""
        pumped = min(run.volume_ml, PUMP_ML_PER_MIN / 60.0 * (t - run.t_start))
        if pumped > run.delivered_ml:
            run.delivered_ml += self.plant.bioreactor.harvest(pumped - run.delivered_ml)
        self._harvest_volume = run.delivered_ml

    def _dose(self, run: _PumpRun, t: float) -> None:
        """Deliver what the pump has moved by time t (the bag fills while it runs)."""
        target = min(run.volume_ml, PUMP_ML_PER_MIN / 60.0 * (t - run.t_start))
        if target > run.delivered_ml:
            self.plant.bioreactor.add(run.material, target - run.delivered_ml)
            run.delivered_ml = target

    def _status(self, pv: Any = None) -> BioreactorStatus:
        """The status word now (``pv``: the reading it describes, taken if not given)."""
        return BioreactorStatus(self._status_word(pv))

    def _status_word(self, pv: Any = None) -> int:
        # Plain int arithmetic on the flag values: IntFlag's operators cost a few µs each and
        # the word is rendered on every poll.
        pv = pv if pv is not None else self.plant.bioreactor.observe()
        sp = self.plant.bioreactor.temperature_sp_c
        s = int(self._latched)
        temperature = pv.temperature_c
        if temperature < sp - 0.1:
            s |= _HEATER_ON
        if abs(temperature - sp) <= 0.5:
            s |= _AT_SETPOINT
        if self._pump is not None:
            s |= _PUMP_RUNNING
        if self._sample_due is not None:
            s |= _SAMPLING
        t_lo, t_hi = self.limits.temperature_c
        if not t_lo <= temperature <= t_hi:
            s |= _ALARM_TEMPERATURE
        if pv.do_pct < 10.0:
            s |= _ALARM_DO_LOW
        if pv.volume_ml > self.limits.working_volume_ml[1]:
            s |= _ALARM_OVERFILL
        if getattr(pv, "heater_fault", False):
            s |= _ALARM_HEATER
        if s & _ANY_ALARM:
            s |= _ALARM
        return s

    def _input_block(self, start: int, now: float) -> dict[int, int]:
        """One mapped block of input registers (only the block a read touches is rendered)."""
        if start == IR_IDENTITY:
            image = dict(enumerate(self._identity_regs, IR_IDENTITY))
            image[IR_MAP_VERSION] = MAP_VERSION
            return image
        if start == IR_SAMPLE_SEQ:
            s = self._sample
            figures = [s.viable_cells_per_ml, s.viability_pct, s.glucose_mm, s.lactate_mm]
            figures.append(s.transduced_pct)
            sample = [self._sample_seq] + [r for x in figures for r in self._f32(x)]
            return dict(enumerate(sample, IR_SAMPLE_SEQ))
        if start == IR_HARVEST_VOLUME:
            added = 0.0 if self._last_add is None else self._last_add.delivered_ml
            totals = [*self._f32(self._harvest_volume), *self._f32(added), self._pump_runs]
            return dict(enumerate(totals, IR_HARVEST_VOLUME))
        model = self.plant.bioreactor
        pv = model.observe()
        if start == IR_MIRRORS:
            mirrors = [
                _i16(pv.temperature_c * 100),
                _i16(model.temperature_sp_c * 100),
                _u16(pv.do_pct * 10),
                _u16(pv.ph * 100),
                _u16(pv.volume_ml),
                _u16(pv.rocking_rpm * 10),
                _u16(pv.perfusion_ml_per_day),
                _u16(pv.viable_cells_per_ml / 1e4),
            ]
            return dict(enumerate(mirrors, IR_MIRRORS))
        floats = [
            pv.temperature_c,
            model.temperature_sp_c,
            pv.do_pct,
            pv.ph,
            pv.volume_ml,
            pv.rocking_rpm,
            pv.perfusion_ml_per_day,
            pv.viable_cells_per_ml,
        ]
        regs = encode_float32s(floats, self.word_order)
        remaining = 0 if self._pump is None else math.ceil(self._pump.t_end - now)
        regs += [self._status_word(pv), int(now) & 0xFFFF, _u16(remaining)]
        return dict(enumerate(regs, IR_PV_FLOATS))

    def _holding_image(self) -> dict[int, int]:
        model = self.plant.bioreactor
        floats = [model.temperature_sp_c, model.rocking_rpm, model.perfusion_ml_per_day]
        floats.append(self._add_volume)
        regs = [r for x in floats for r in self._f32(x)]
        regs += [int(self._add_material), self._last_command]
        image = dict(enumerate(regs, HR_TEMP_SP))
        image[HR_WORD_ORDER] = 0 if self.word_order == "big" else 1
        return image

    def _f32(self, x: float) -> list[int]:
        return encode_float32(x, self.word_order)

    def _write(self, address: int, values: list[int], now: float) -> ExcCodes | None:
        """Validate every field of one write, then apply them all (COMMAND last)."""
        w = dict(enumerate(values, address))
        if any((a in w) != (a + 1 in w) for a in HR_FLOATS):
            return ExcCodes.ILLEGAL_ADDRESS
        lim = self.limits
        setpoints: dict[str, float] = {}
        for addr, attr, (lo, hi) in (
            (HR_TEMP_SP, "temperature_sp_c", lim.temperature_c),
            (HR_ROCKING_SP, "rocking_rpm", lim.rocking_rpm),
            (HR_PERFUSION_SP, "perfusion_ml_per_day", lim.perfusion_ml_per_day),
        ):
            if addr in w:
                setpoints[attr] = decode_float32([w[addr], w[addr + 1]], self.word_order)
                if not _within(setpoints[attr], lo, hi):
                    return ExcCodes.ILLEGAL_VALUE
        volume, material = self._add_volume, self._add_material
        if HR_ADD_VOLUME in w:
            volume = decode_float32([w[HR_ADD_VOLUME], w[HR_ADD_VOLUME + 1]], self.word_order)
            if not (_within(volume, 0.0, lim.working_volume_ml[1]) and volume > 0):
                return ExcCodes.ILLEGAL_VALUE
        if HR_ADD_MATERIAL in w:
            if w[HR_ADD_MATERIAL] not in Material._value2member_map_:
                return ExcCodes.ILLEGAL_VALUE
            material = Material(w[HR_ADD_MATERIAL])
        if w.get(HR_WORD_ORDER, 0) not in (0, 1):
            return ExcCodes.ILLEGAL_VALUE
        command: BioreactorCommand | None = None
        if HR_COMMAND in w:
            if w[HR_COMMAND] not in BioreactorCommand._value2member_map_:
                return ExcCodes.ILLEGAL_VALUE
            command = BioreactorCommand(w[HR_COMMAND])
            refused = self._refuse_command(command, volume)
            if refused is not None:
                return refused
        # Everything valid: apply.
        model = self.plant.bioreactor
        for attr, value in setpoints.items():
            setattr(model, attr, value)
        if setpoints.get("perfusion_ml_per_day", 0.0) > 0.0:
            self._latched &= ~BioreactorStatus.SAFE_STATE
        self._add_volume, self._add_material = volume, material
        if HR_WORD_ORDER in w:
            self.word_order = "big" if w[HR_WORD_ORDER] == 0 else "little"
        if command is not None:
            self._execute(command, now)
        return None

    def _refuse_command(self, command: BioreactorCommand, volume: float) -> ExcCodes | None:
        if command is BioreactorCommand.ADD:
            if self._pump is not None:
                return ExcCodes.DEVICE_BUSY
            if volume <= 0.0:
                return ExcCodes.ILLEGAL_VALUE
            bag = self.plant.bioreactor.observe().volume_ml
            if bag + volume > self.limits.working_volume_ml[1]:
                return ExcCodes.ILLEGAL_VALUE
            return None
        busy = self._sample_due if command is BioreactorCommand.SAMPLE else self._pump
        return ExcCodes.DEVICE_BUSY if busy is not None and command in _BUSY_CHECKED else None

    def _execute(self, command: BioreactorCommand, now: float) -> None:
        model = self.plant.bioreactor
        self._last_command = int(command)
        if command in (BioreactorCommand.ADD, BioreactorCommand.HARVEST):
            self._pump_runs = (self._pump_runs + 1) & 0xFFFF
        s_per_ml = 60.0 / PUMP_ML_PER_MIN
        if command is BioreactorCommand.ADD:
            duration = self._add_volume * s_per_ml
            self._pump = self._last_add = _PumpRun(
                command, now, now + duration, self._add_material, self._add_volume
            )
            self._latched &= ~BioreactorStatus.SAFE_STATE
        elif command is BioreactorCommand.SAMPLE:
            self._latched &= ~BioreactorStatus.SAMPLE_READY
            self._sample_due = (now + SAMPLE_COUNT_S, model.sample())
        elif command is BioreactorCommand.HARVEST:
            model.perfusion_ml_per_day = 0.0
            bag = max(0.0, model.observe().volume_ml)
            self._pump = _PumpRun(command, now, now + bag * s_per_ml, Material.MEDIUM, bag)
            self._latched &= ~(BioreactorStatus.HARVEST_DONE | BioreactorStatus.SAFE_STATE)
        else:  # SAFE_STATE: keep temperature and rocking, stop perfusion and the pump
            model.perfusion_ml_per_day = 0.0
            if self._pump is not None and self._pump.kind is BioreactorCommand.ADD:
                self._dose(self._pump, now)
            elif self._pump is not None:
                self._drain(self._pump, now)
            self._pump = None
            self._latched |= BioreactorStatus.SAFE_STATE
