"""Bioreactor over Modbus RTU and Bronkhorst-style MFCs, against the twin on real ptys."""

from __future__ import annotations

import asyncio

import pytest

from drivers.bronkhorst_gas import BronkhorstGasConfig, BronkhorstGasDispenser
from drivers.modbus_bioreactor import ModbusBioreactor, ModbusRtuBioreactorConfig
from twin.clock import Clock
from twin.equipment import Bioreactor, Gas, GasDispenser, Material
from twin.errors import CommunicationError, DeviceRefused, EquipmentError, InterlockTripped
from twin.serve.bioreactor_modbus import DEFAULT_BIOREACTOR_IDENTITY
from twin.serve.bioreactor_rtu import BioreactorRtuServer
from twin.serve.bronkhorst_mfc import BronkhorstServer
from twin.sim import Plant


async def test_rtu_bioreactor_reads_writes_and_refuses() -> None:
    clock, plant = Clock(), Plant(seed=2)
    server = BioreactorRtuServer(plant, clock, unit=7)
    await server.start()
    wide = {"temperature_c": (0.0, 100.0)}  # the controller's own refusal is under test
    config = ModbusRtuBioreactorConfig(port=server.path, unit=7, limits=wide)
    br = ModbusBioreactor("BR-1", config, clock)
    try:
        await br.connect()
        assert isinstance(br, Bioreactor)
        assert await br.identify() == DEFAULT_BIOREACTOR_IDENTITY
        await br.set_temperature(36.5)
        assert plant.bioreactor.temperature_sp_c == 36.5
        assert (await br.read()).temperature_sp_c == 36.5
        with pytest.raises(DeviceRefused, match="0x03 ILLEGAL DATA VALUE"):
            await br.set_temperature(45.0)
        t0 = clock.now()
        await br.read()
        # 8-byte request + 43-byte reply at 19200 8N1, each with its 3.5-char gap
        assert clock.now() - t0 == pytest.approx((8 + 43 + 7) * 10 / 19200, rel=0.05)
    finally:
        await br.close()
        await server.stop()


async def test_rtu_bioreactor_doses_harvests_and_gives_the_pump_totals() -> None:
    """The RTU twin serves the same pump registers as the TCP one (60-64): a dose and a
    harvest run, and the totals a hold's settling reads answer (before: register 64 was
    not served over RTU, so every dose and harvest was refused there)."""
    clock, plant = Clock(), Plant(seed=2)
    server = BioreactorRtuServer(plant, clock, unit=7)
    await server.start()
    br = ModbusBioreactor("BR-1", ModbusRtuBioreactorConfig(port=server.path, unit=7), clock)
    try:
        await br.connect()
        await br.add(Material.MEDIUM, 20.0)
        assert await br.added_ml() == pytest.approx(20.0)
        volume = plant.bioreactor.state.volume_ml
        assert await br.harvest() == pytest.approx(volume, rel=0.02)
        assert await br.harvested_ml() == pytest.approx(volume, rel=0.02)
    finally:
        await br.close()
        await server.stop()


async def test_wrong_unit_id_on_a_bus_is_silence_not_an_answer() -> None:
    clock = Clock()
    server = BioreactorRtuServer(Plant(seed=2), clock, unit=1)
    await server.start()
    config = ModbusRtuBioreactorConfig(port=server.path, unit=2, timeout_s=0.2, retries=1)
    br = ModbusBioreactor("BR-X", config, clock)
    try:
        with pytest.raises(CommunicationError, match=r"BR-X: .*unit 2.*0.2 s x 2 tries"):
            await br.connect()
    finally:
        await br.close()
        await server.stop()


@pytest.fixture
async def bus() -> tuple[Plant, BronkhorstServer]:
    plant = Plant(seed=4)
    server = BronkhorstServer(plant, Clock())
    await server.start()
    yield plant, server  # type: ignore[misc]
    await server.stop()


async def test_bronkhorst_scaling_readback_and_thermal_settling(
    bus: tuple[Plant, BronkhorstServer],
) -> None:
    plant, server = bus
    clock = Clock()
    gas = BronkhorstGasDispenser("GAS-1", BronkhorstGasConfig(port=server.path), clock)
    try:
        await gas.connect()
        assert isinstance(gas, GasDispenser)
        await gas.set_flow(Gas.AIR, 250.0)  # 16000 counts of a 500 sccm instrument
        assert plant.gas.mfcs["A"].setpoint_sccm == pytest.approx(250.0)
        early = (await gas.read()).mass_flow_sccm[Gas.AIR]
        await clock.sleep(1.0)
        pv = await gas.read()
        assert pv.setpoint_sccm[Gas.AIR] == pytest.approx(250.0)
        assert early < 0.5 * 250.0  # thermal: not there after a few ms ...
        assert pv.mass_flow_sccm[Gas.AIR] == pytest.approx(250.0, rel=0.03)  # ... but in ~1 s
        assert await gas.read_float_flow(Gas.AIR) == pytest.approx(250.0, rel=0.03)
        with pytest.raises(InterlockTripped):
            await gas.set_flow(Gas.O2, 150.0)
        ident = await gas.identify()
        assert ident.model.startswith("1:F-201CV-500SCCM,2:")
    finally:
        await gas.close()


async def test_bench_that_names_the_wrong_capacity_is_refused(
    bus: tuple[Plant, BronkhorstServer],
) -> None:
    _, server = bus
    config = BronkhorstGasConfig(
        port=server.path, limits={"full_scale_sccm": {"air": 1000, "o2": 200, "n2": 500, "co2": 50}}
    )
    gas = BronkhorstGasDispenser("GAS-1", config, Clock())
    try:
        with pytest.raises(EquipmentError, match="capacity of 500 sccm, the bench says 1000"):
            await gas.connect()
    finally:
        await gas.close()


async def test_two_dispensers_on_one_bus_share_one_line_without_collisions(
    bus: tuple[Plant, BronkhorstServer],
) -> None:
    _, server = bus
    clock = Clock()
    a = BronkhorstGasDispenser(
        "GAS-A",
        BronkhorstGasConfig(
            port=server.path,
            units={"air": 1, "o2": 2},
            limits={"full_scale_sccm": {"air": 500, "o2": 200}},
        ),
        clock,
    )
    b = BronkhorstGasDispenser(
        "GAS-B",
        BronkhorstGasConfig(
            port=server.path,
            units={"n2": 3, "co2": 4},
            limits={"full_scale_sccm": {"n2": 500, "co2": 50}},
        ),
        clock,
    )
    try:
        await a.connect()
        await b.connect()
        await asyncio.gather(*(d.read() for d in (a, b) for _ in range(10)))
        assert a.counters.retries == b.counters.retries == 0
        assert a.counters.transactions == b.counters.transactions == 4 + 2 * 10
        odd = BronkhorstGasDispenser(
            "GAS-C", BronkhorstGasConfig(port=server.path, parity="E", units={"air": 1}), clock
        )
        with pytest.raises(CommunicationError, match="already open with"):
            await odd.connect()
    finally:
        await a.close()
        await b.close()
