"""docs/devices/bioreactor-modbus.md is true: a bare pymodbus client reads and writes the map."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient as C
from pymodbus.pdu import ModbusPDU

from twin.clock import Clock
from twin.equipment import Material
from twin.serve.bioreactor_modbus import (
    DEFAULT_BIOREACTOR_IDENTITY,
    BioreactorModbusServer,
    BioreactorStatus,
    encode_float32,
    encode_float32s,
)

F32 = C.DATATYPE.FLOAT32


def f32(regs: list[int], order: str) -> float:
    return float(C.convert_from_registers(regs, F32, word_order=order))  # type: ignore[arg-type]


def regs32(value: float, order: str) -> list[int]:
    return C.convert_to_registers(value, F32, word_order=order)  # type: ignore[arg-type]


def exc(rr: ModbusPDU) -> int:
    assert rr.isError(), rr
    return int(rr.exception_code)  # type: ignore[attr-defined]


pytestmark = pytest.mark.usefixtures("no_task_leaks")


async def test_bound_port_is_real(server: BioreactorModbusServer) -> None:
    assert server.port != 0


async def test_process_values_and_mirrors(
    raw: C, server: BioreactorModbusServer, plant: Any, clock: Clock, word_order: str
) -> None:
    plant.bioreactor.temperature_sp_c = 37.0
    await clock.sleep(1800)
    rr = await raw.read_input_registers(0, count=19)
    true = plant.bioreactor.state
    temperature = f32(rr.registers[0:2], word_order)
    assert temperature == pytest.approx(true.temperature_c, abs=0.5)
    assert f32(rr.registers[2:4], word_order) == pytest.approx(37.0)
    assert f32(rr.registers[8:10], word_order) == pytest.approx(true.volume_ml, rel=0.05)
    assert 6.0 < f32(rr.registers[6:8], word_order) < 8.0  # pH
    assert f32(rr.registers[14:16], word_order) > 0  # capacitance VCD
    mirrors = (await raw.read_input_registers(20, count=8)).registers
    t100 = C.convert_from_registers(mirrors[0:1], C.DATATYPE.INT16)
    assert t100 == pytest.approx(temperature * 100, abs=60)  # next poll, sensor noise
    assert mirrors[1] == 3700
    assert mirrors[4] == pytest.approx(true.volume_ml, rel=0.05)


async def test_identity_block_is_ascii(raw: C) -> None:
    regs = (await raw.read_input_registers(100, count=33)).registers
    text = [C.convert_from_registers(regs[i : i + 8], C.DATATYPE.STRING) for i in (0, 8, 16, 24)]
    ident = DEFAULT_BIOREACTOR_IDENTITY
    assert text == [ident.vendor, ident.model, ident.serial, ident.firmware]
    assert regs[32] == 2  # map version


async def test_pump_totals_block_reads_in_one_request(raw: C) -> None:
    """60-64: HARVEST_VOLUME, ADDED_VOLUME and PUMP_RUNS, all 0 before any pump command."""
    assert (await raw.read_input_registers(60, count=5)).registers == [0, 0, 0, 0, 0]


async def test_word_order_register_and_switch(
    raw: C, server: BioreactorModbusServer, plant: Any, word_order: str
) -> None:
    plant.bioreactor.temperature_sp_c = 37.0
    assert (await raw.read_holding_registers(99)).registers == [0 if word_order == "big" else 1]
    sp = (await raw.read_holding_registers(0, count=2)).registers
    assert f32(sp, word_order) == 37.0
    assert sp == regs32(37.0, word_order)
    other = "little" if word_order == "big" else "big"
    assert abs(f32(sp, other)) < 1e-30  # the wrong word order is visibly wrong
    assert not (await raw.write_register(99, 0 if other == "big" else 1)).isError()
    assert (await raw.read_holding_registers(0, count=2)).registers == regs32(37.0, other)
    assert exc(await raw.write_register(99, 2)) == 3


async def test_setpoints_write_read_back_and_limits(raw: C, plant: Any, word_order: str) -> None:
    for address, value, attr in (
        (0, 30.5, "temperature_sp_c"),
        (2, 12.0, "rocking_rpm"),
        (4, 250.0, "perfusion_ml_per_day"),
    ):
        assert not (await raw.write_registers(address, regs32(value, word_order))).isError()
        back = (await raw.read_holding_registers(address, count=2)).registers
        assert f32(back, word_order) == value
        assert getattr(plant.bioreactor, attr) == value
    for address, bad in ((0, 45.0), (0, 3.9), (2, 41.0), (4, -1.0), (0, float("nan"))):
        assert exc(await raw.write_registers(address, regs32(bad, word_order))) == 3
    assert plant.bioreactor.temperature_sp_c == 30.5
    # one bad field refuses the whole request
    both = regs32(20.0, word_order) + regs32(99.0, word_order)
    assert exc(await raw.write_registers(0, both)) == 3
    assert plant.bioreactor.temperature_sp_c == 30.5


async def test_unmapped_and_half_float_and_coils(raw: C) -> None:
    assert exc(await raw.read_input_registers(30, count=1)) == 2
    assert exc(await raw.read_input_registers(0, count=30)) == 2
    assert exc(await raw.read_holding_registers(10, count=1)) == 2
    assert exc(await raw.write_register(50, 1)) == 2
    assert exc(await raw.write_register(0, 0x4214)) == 2  # half a float32
    assert exc(await raw.read_coils(0, count=1)) == 1
    assert exc(await raw.write_register(9, 7)) == 3  # unknown command
    assert exc(await raw.write_register(8, 9)) == 3  # unknown material


async def test_other_unit_id_gets_gateway_exception(raw: C) -> None:
    assert exc(await raw.read_input_registers(0, count=2, device_id=7)) == 0x0B


async def test_heartbeat_counts_device_seconds(raw: C, clock: Clock) -> None:
    first = (await raw.read_input_registers(17)).registers[0]
    await clock.sleep(42.0)
    assert (await raw.read_input_registers(17)).registers[0] == first + 42


async def test_addition_runs_the_pump(raw: C, plant: Any, clock: Clock, word_order: str) -> None:
    v0 = plant.bioreactor.state.volume_ml
    request = [*regs32(200.0, word_order), int(Material.MEDIUM), 1]
    assert not (await raw.write_registers(6, request)).isError()
    ir = (await raw.read_input_registers(16, count=3)).registers
    assert ir[0] & BioreactorStatus.PUMP_RUNNING
    assert ir[2] == 120  # 200 mL at 100 mL/min
    assert exc(await raw.write_register(9, 1)) == 6  # busy
    assert (await raw.read_holding_registers(9)).registers == [1]
    await clock.sleep(60.0)
    volume = f32((await raw.read_input_registers(8, count=2)).registers, word_order)
    assert volume == pytest.approx(v0 + 100.0, abs=1.0)  # the bag fills while the pump runs
    await clock.sleep(61.0)
    status = (await raw.read_input_registers(16)).registers[0]
    assert not status & BioreactorStatus.PUMP_RUNNING
    assert plant.bioreactor.state.volume_ml == pytest.approx(v0 + 200.0, abs=1.0)
    overfill = [*regs32(990.0, word_order), int(Material.MEDIUM), 1]
    assert exc(await raw.write_registers(6, overfill)) == 3


async def test_sample_sequence_and_status_bits(raw: C, clock: Clock, word_order: str) -> None:
    seq0 = (await raw.read_input_registers(40)).registers[0]
    assert not (await raw.write_register(9, 2)).isError()
    assert exc(await raw.write_register(9, 2)) == 6
    bits = (await raw.read_discrete_inputs(0, count=16)).bits
    assert bits[4] and not bits[3]  # SAMPLING, not SAMPLE_READY
    await clock.sleep(61.0)
    block = (await raw.read_input_registers(40, count=11)).registers
    assert block[0] == seq0 + 1
    assert f32(block[1:3], word_order) > 1e5
    assert 0.0 < f32(block[3:5], word_order) <= 100.0
    status = (await raw.read_input_registers(16)).registers[0]
    assert status & BioreactorStatus.SAMPLE_READY
    assert (await raw.read_discrete_inputs(0, count=16)).bits[3]


async def test_harvest_and_safe_state(raw: C, plant: Any, clock: Clock, word_order: str) -> None:
    assert not (await raw.write_registers(4, regs32(500.0, word_order))).isError()
    assert not (await raw.write_register(9, 4)).isError()  # safe state
    assert plant.bioreactor.perfusion_ml_per_day == 0.0
    assert (await raw.read_input_registers(16)).registers[0] & BioreactorStatus.SAFE_STATE
    v0 = plant.bioreactor.state.volume_ml
    assert not (await raw.write_register(9, 3)).isError()
    await clock.sleep(v0 * 0.6 + 1)
    status = (await raw.read_input_registers(16)).registers[0]
    assert status & BioreactorStatus.HARVEST_DONE
    assert not status & (BioreactorStatus.PUMP_RUNNING | BioreactorStatus.SAFE_STATE)
    harvested = f32((await raw.read_input_registers(60, count=2)).registers, word_order)
    assert harvested == pytest.approx(v0, rel=0.05)
    assert plant.bioreactor.state.volume_ml == pytest.approx(0.0, abs=1.0)


def test_floats_packed_together_are_the_floats_packed_one_by_one() -> None:
    """encode_float32s (every poll) is encode_float32 of each value, clamps included."""
    rng = random.Random(1)
    cases = [[rng.uniform(-1e6, 1e6) for _ in range(8)] for _ in range(200)]
    cases += [[math.nan, 5e38, 1.0], [1.0, math.nan, 5e38], [3.5e38], [-3.5e38, 1.0]]
    cases += [[math.inf, 2.0], [1.0, -math.inf], [3.4e38, -3.4e38], [-0.0, 0.0, 1e-46]]
    for values in cases:
        for order in ("big", "little"):
            one_by_one = [r for x in values for r in encode_float32(x, order)]
            assert encode_float32s(values, order) == one_by_one
