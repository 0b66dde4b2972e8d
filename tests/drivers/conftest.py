"""Driver-test fixtures: the twin's real Modbus server on loopback and the driver under test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from drivers.modbus_bioreactor import ModbusBioreactor, ModbusBioreactorConfig
from twin.clock import Clock
from twin.serve.bioreactor_modbus import BioreactorModbusServer

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
