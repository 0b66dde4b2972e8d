"""Driver-test fixtures: the twin's real Modbus server on loopback and the driver under test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from drivers.modbus_bioreactor import ModbusBioreactor, ModbusBioreactorConfig
from twin.clock import Clock
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.sim import Plant


@pytest.fixture
def plant() -> Plant:
    return Plant(seed=1)


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def no_task_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks behind (servers and clients must be closed)."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"leaked tasks: {leaked}"


@pytest.fixture(params=["big", "little"])
def word_order(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def server(
    plant: Plant, clock: Clock, word_order: str
) -> AsyncIterator[BioreactorModbusServer]:
    srv = BioreactorModbusServer(plant, clock, word_order=word_order)
    await srv.start()
    yield srv
    await srv.stop()


MakeDriver = Callable[..., Awaitable[ModbusBioreactor]]


@pytest.fixture
async def make_driver(clock: Clock) -> AsyncIterator[MakeDriver]:
    """Build, connect and (at teardown) close drivers with config overrides."""
    made: list[ModbusBioreactor] = []

    async def make(*, connect: bool = True, **fields: Any) -> ModbusBioreactor:
        driver = ModbusBioreactor("BR-1", ModbusBioreactorConfig(**fields), clock)
        made.append(driver)
        if connect:
            await driver.connect()
        return driver

    yield make
    for driver in made:
        await driver.close()


@pytest.fixture
async def bioreactor(
    server: BioreactorModbusServer, make_driver: MakeDriver, word_order: str
) -> ModbusBioreactor:
    return await make_driver(host=server.host, port=server.port, word_order=word_order)
