"""The Modbus bioreactor driver against the twin's real pymodbus server over loopback TCP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pydantic
import pytest
from pymodbus.client import AsyncModbusTcpClient

import twin.serve.bioreactor_modbus as bmod
from drivers.modbus_bioreactor import ModbusBioreactor, ModbusBioreactorConfig
from twin.clock import Clock
from twin.equipment import Bioreactor, BioreactorLimits, Material
from twin.errors import CommunicationError, DeviceRefused, EquipmentError
from twin.serve.bioreactor_modbus import (
    DEFAULT_BIOREACTOR_IDENTITY,
    BioreactorModbusServer,
    BioreactorStatus,
)

pytestmark = pytest.mark.usefixtures("no_task_leaks")

MakeDriver = Callable[..., Awaitable[ModbusBioreactor]]


async def test_implements_the_bioreactor_protocol(bioreactor: ModbusBioreactor) -> None:
    assert isinstance(bioreactor, Bioreactor)
    assert bioreactor.limits == BioreactorLimits()


async def test_identify(bioreactor: ModbusBioreactor) -> None:
    assert await bioreactor.identify() == DEFAULT_BIOREACTOR_IDENTITY


async def test_read_process_values(bioreactor: ModbusBioreactor, plant: Any, clock: Clock) -> None:
    await clock.sleep(3600)
    pv = await bioreactor.read()
    true = plant.bioreactor.state
    assert pv.temperature_c == pytest.approx(true.temperature_c, abs=0.5)
    assert pv.temperature_sp_c == pytest.approx(plant.bioreactor.temperature_sp_c)
    assert pv.volume_ml == pytest.approx(true.volume_ml, rel=0.05)
    assert 6.0 < pv.ph < 8.0
    assert 0.0 <= pv.do_pct <= 150.0
    assert pv.viable_cells_per_ml > 0
    assert pv.heartbeat == 3600


async def test_set_and_read_back_each_setpoint(bioreactor: ModbusBioreactor, plant: Any) -> None:
    await bioreactor.set_temperature(36.5)
    await bioreactor.set_rocking(12.0)
    await bioreactor.set_perfusion(300.0)
    model = plant.bioreactor
    assert (model.temperature_sp_c, model.rocking_rpm, model.perfusion_ml_per_day) == (
        36.5,
        12.0,
        300.0,
    )
    pv = await bioreactor.read()
    assert pv.temperature_sp_c == 36.5
    assert pv.rocking_rpm == pytest.approx(12.0, abs=0.5)


async def test_out_of_limit_setpoint_is_refused_by_the_device(
    bioreactor: ModbusBioreactor, plant: Any
) -> None:
    # A bench as wide as the wire allows: what is tested is the controller's own refusal.
    bioreactor.limits = dataclasses.replace(
        bioreactor.limits, temperature_c=(0.0, 100.0), rocking_rpm=(0.0, 100.0)
    )
    with pytest.raises(DeviceRefused, match=r"BR-1: .*temperature.*0x03 ILLEGAL DATA VALUE"):
        await bioreactor.set_temperature(45.0)
    with pytest.raises(DeviceRefused, match="ILLEGAL DATA VALUE"):
        await bioreactor.set_rocking(80.0)
    assert plant.bioreactor.temperature_sp_c != 45.0


async def test_setpoint_beyond_the_bench_limits_is_refused_before_the_wire(
    bioreactor: ModbusBioreactor, plant: Any
) -> None:
    """A bench may narrow what the controller accepts (example-lab: 30-38.5 °C)."""
    bioreactor.limits = dataclasses.replace(bioreactor.limits, temperature_c=(30.0, 38.5))
    before = plant.bioreactor.temperature_sp_c
    with pytest.raises(EquipmentError, match=r"BR-1: .*39 outside the bench's limits 30..38.5"):
        await bioreactor.set_temperature(39.0)
    assert plant.bioreactor.temperature_sp_c == before


async def test_unmapped_address_is_refused(bioreactor: ModbusBioreactor) -> None:
    with pytest.raises(DeviceRefused, match="0x02 ILLEGAL DATA ADDRESS"):
        await bioreactor.read_registers("holding", 50, 1)


async def test_addition_changes_volume_and_waits_for_the_pump(
    bioreactor: ModbusBioreactor, clock: Clock
) -> None:
    before = await bioreactor.read()
    t0 = clock.now()
    await bioreactor.add(Material.MEDIUM, 150.0)
    assert clock.now() - t0 >= 90.0  # 150 mL at 100 mL/min
    after = await bioreactor.read()
    assert not after.status & BioreactorStatus.PUMP_RUNNING
    assert after.volume_ml - before.volume_ml == pytest.approx(150.0, abs=5.0)


async def test_the_pump_total_says_what_an_addition_stopped_part_way_put_in(
    bioreactor: ModbusBioreactor, plant: Any, clock: Clock
) -> None:
    """ADDED_VOLUME: 0 before any addition, the running addition's total as it pumps, what
    went in once a safe state stopped it part-way, the whole volume of one that finished."""
    assert await bioreactor.added_ml() == 0.0
    before = plant.bioreactor.state.volume_ml
    dose = asyncio.ensure_future(bioreactor.add(Material.IL2, 100.0))  # 60 s at 100 mL/min
    await clock.sleep(24.0)
    assert await bioreactor.added_ml() == pytest.approx(40.0, abs=2.0)
    dose.cancel()  # the engine gives up the call, then makes the bioreactor safe
    with contextlib.suppress(asyncio.CancelledError):
        await dose
    await bioreactor.safe_state()
    went_in = await bioreactor.added_ml()
    await clock.sleep(120.0)
    assert await bioreactor.added_ml() == went_in  # the pump stopped: nothing more went in
    assert 35.0 < went_in < 50.0
    assert plant.bioreactor.state.volume_ml - before == pytest.approx(went_in, abs=0.5)
    await bioreactor.add(Material.MEDIUM, 30.0)
    assert await bioreactor.added_ml() == pytest.approx(30.0)


async def test_a_pump_command_that_never_reached_the_pump_has_moved_nothing(
    bioreactor: ModbusBioreactor, plant: Any
) -> None:
    """An addition cut short while it waited for the line (a scan's read on the wire): its
    total is 0, not the 30 mL of the addition before it, which ADDED_VOLUME still holds
    (before: the record said '30 of 50 mL went in', and no rest was dosed)."""
    await bioreactor.add(Material.MEDIUM, 30.0)
    assert await bioreactor.added_ml() == pytest.approx(30.0)
    bag = plant.bioreactor.state.volume_ml
    scan = asyncio.ensure_future(bioreactor.read())
    await asyncio.sleep(0)  # the scan's read takes the line
    dose = asyncio.ensure_future(bioreactor.add(Material.IL2, 50.0))
    await asyncio.sleep(0)  # the dose waits for it
    dose.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dose
    await scan
    assert await bioreactor.added_ml() == 0.0
    assert plant.bioreactor.state.volume_ml == bag


async def test_a_map_1_controller_without_pump_totals_still_doses_and_harvests(
    bioreactor: ModbusBioreactor, plant: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller of the first map (60-61 only: no ADDED_VOLUME, no PUMP_RUNS) refuses
    those reads; a dose and a harvest still run, and only a cut short dose's total is not
    known (the engine records it so)."""
    blocks = dict(bmod._BLOCKS)
    blocks[bmod.INPUT] = tuple(
        (lo, bmod.IR_HARVEST_VOLUME + 2) if lo == bmod.IR_HARVEST_VOLUME else (lo, hi)
        for lo, hi in blocks[bmod.INPUT]
    )
    monkeypatch.setattr(bmod, "_BLOCKS", blocks)
    await bioreactor.add(Material.MEDIUM, 20.0)
    with pytest.raises(DeviceRefused, match="ILLEGAL DATA ADDRESS"):
        await bioreactor.added_ml()
    volume = plant.bioreactor.state.volume_ml
    assert await bioreactor.harvest() == pytest.approx(volume, rel=0.02)


async def test_addition_that_would_overfill_is_refused(bioreactor: ModbusBioreactor) -> None:
    with pytest.raises(DeviceRefused, match="ILLEGAL DATA VALUE"):
        await bioreactor.add(Material.MEDIUM, 999.0)


async def test_sample_returns_counted_cells(bioreactor: ModbusBioreactor, clock: Clock) -> None:
    t0 = clock.now()
    first = await bioreactor.sample()
    assert clock.now() - t0 >= 60.0
    assert first.viable_cells_per_ml > 1e5
    assert 0.0 < first.viability_pct <= 100.0
    second = await bioreactor.sample()
    assert second.viable_cells_per_ml > 1e5


async def test_harvest_and_safe_state(bioreactor: ModbusBioreactor, plant: Any) -> None:
    await bioreactor.set_perfusion(500.0)
    await bioreactor.safe_state()
    assert plant.bioreactor.perfusion_ml_per_day == 0.0
    volume = (await bioreactor.read()).volume_ml
    assert await bioreactor.harvest() == pytest.approx(volume, rel=0.05)
    assert (await bioreactor.read()).volume_ml == pytest.approx(0.0, abs=2.0)


async def test_heartbeat_advances_with_virtual_time(
    bioreactor: ModbusBioreactor, clock: Clock
) -> None:
    first = (await bioreactor.read()).heartbeat
    await clock.sleep(5 * 86400)  # five days, in virtual time
    assert (await bioreactor.read()).heartbeat == (first + 5 * 86400) % 65536


@pytest.mark.parametrize("word_order", ["little"])
async def test_word_order_mismatch(
    server: BioreactorModbusServer, make_driver: MakeDriver, plant: Any
) -> None:
    """The bench says big, the device sends little: refused at connect, and visibly wrong."""
    plant.bioreactor.temperature_sp_c = 37.0
    with pytest.raises(EquipmentError, match=r"little-endian.*word_order='big'"):
        await make_driver(host=server.host, port=server.port, word_order="big")
    client = AsyncModbusTcpClient(server.host, port=server.port, reconnect_delay=0)
    await client.connect()
    regs = (await client.read_input_registers(2, count=2)).registers  # TEMP_SP_ACTIVE
    client.close()
    f32 = AsyncModbusTcpClient.DATATYPE.FLOAT32
    assert AsyncModbusTcpClient.convert_from_registers(regs, f32, word_order="little") == 37.0
    wrong = AsyncModbusTcpClient.convert_from_registers(regs, f32, word_order="big")
    assert abs(wrong) < 1e-30  # what a driver without the check would have read


async def test_stopped_server_gives_communication_error(
    server: BioreactorModbusServer, bioreactor: ModbusBioreactor, clock: Clock
) -> None:
    await bioreactor.read()
    await server.stop()
    t0 = clock.now()
    with pytest.raises(CommunicationError, match="BR-1"):
        await bioreactor.read()
    assert clock.now() - t0 <= bioreactor.config.timeout_s * (bioreactor.config.retries + 1)


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP endpoint that accepts and never answers: a hung controller."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(256):
            pass

    srv = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    for w in writers:
        w.close()
    srv.close()
    await srv.wait_closed()


async def test_silent_device_times_out_on_the_clock(
    silent_port: int, make_driver: MakeDriver, clock: Clock
) -> None:
    driver = await make_driver(
        host="127.0.0.1", port=silent_port, timeout_s=0.5, retries=2, connect=False
    )
    t0 = clock.now()
    with pytest.raises(CommunicationError, match=r"BR-1: .*no valid answer.*0.5 s x 3 tries"):
        await driver.connect()
    assert clock.now() - t0 == pytest.approx(1.5, abs=0.01)


async def test_nothing_listening_gives_communication_error(make_driver: MakeDriver) -> None:
    sock_srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = sock_srv.sockets[0].getsockname()[1]
    sock_srv.close()
    await sock_srv.wait_closed()
    with pytest.raises(CommunicationError, match="BR-1: cannot connect"):
        await make_driver(host="127.0.0.1", port=port)


def test_config_is_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        ModbusBioreactorConfig(host="h", prot=502)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        ModbusBioreactorConfig(host="h", limits={"temperature_c": (40.0, 4.0)})
    cfg = ModbusBioreactorConfig(host="h", limits={"temperature_c": (30.0, 38.0)})
    assert cfg.limits.to_limits().temperature_c == (30.0, 38.0)


@pytest.mark.parametrize("order", ["big", "little"])
def test_floats_decoded_together_are_the_floats_decoded_pair_by_pair(order: str) -> None:
    """Every poll decodes its eight floats in one struct call: the same floats, NaN and
    infinities included, as decoding each register pair."""
    config = ModbusBioreactorConfig.model_validate({"host": "h", "port": 1, "word_order": order})
    driver = ModbusBioreactor("br", config, Clock.__new__(Clock))
    rng = random.Random(2)
    regs = [rng.randrange(0x10000) for _ in range(64)] + [0x7F80, 0, 0xFF80, 0, 0x7FC0, 1]
    words = zip(regs[::2], regs[1::2], strict=True)
    pairs = [(a, b) if order == "big" else (b, a) for a, b in words]
    one_by_one = [struct.unpack(">f", struct.pack(">HH", *p))[0] for p in pairs]
    together = driver._floats(regs)
    assert struct.pack(f">{len(pairs)}d", *together) == struct.pack(f">{len(pairs)}d", *one_by_one)
    with pytest.raises(ValueError, match="cannot hold float32"):
        driver._floats(regs[:3])
