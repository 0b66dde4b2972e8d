"""Fixtures for the serial drivers: the twin's ASCII servers on real ptys, drivers pointed at them.

Imported explicitly by tests/drivers/test_alicat_gas.py and friends
(tests/drivers/conftest.py belongs to the Modbus tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.ascii_electroporator import AsciiElectroporator, AsciiElectroporatorConfig
from twin.clock import Clock
from twin.serve.alicat import AlicatServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.sim.plant import Plant


@pytest.fixture
async def serial_plant() -> Plant:
    """A fresh plant for the serial devices."""
    return Plant(seed=3)


@pytest.fixture
async def alicat_server(serial_plant: Any) -> AsyncIterator[AlicatServer]:
    server = AlicatServer(serial_plant, Clock())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def ep_server(serial_plant: Any) -> AsyncIterator[ElectroporatorServer]:
    server = ElectroporatorServer(serial_plant, Clock())
    await server.start()
    yield server
    await server.stop()


MakeGas = Callable[..., Awaitable[AlicatGasDispenser]]
MakeEp = Callable[..., Awaitable[AsciiElectroporator]]


@pytest.fixture
async def make_gas(alicat_server: AlicatServer) -> AsyncIterator[MakeGas]:
    """Build and connect gas dispensers on the twin's pty; all closed at teardown."""
    made: list[AlicatGasDispenser] = []

    async def make(
        name: str = "GAS-1", *, connect: bool = True, **fields: Any
    ) -> AlicatGasDispenser:
        fields.setdefault("port", alicat_server.path)
        driver = AlicatGasDispenser(name, AlicatGasConfig(**fields), Clock())
        made.append(driver)
        if connect:
            await driver.connect()
        return driver

    yield make
    for driver in made:
        await driver.close()


@pytest.fixture
async def make_ep(ep_server: ElectroporatorServer) -> AsyncIterator[MakeEp]:
    """Build and connect electroporators on the twin's pty; all closed at teardown."""
    made: list[AsciiElectroporator] = []

    async def make(name: str = "EP-1", **fields: Any) -> AsciiElectroporator:
        fields.setdefault("port", ep_server.path)
        driver = AsciiElectroporator(name, AsciiElectroporatorConfig(**fields), Clock())
        made.append(driver)
        await driver.connect()
        return driver

    yield make
    for driver in made:
        await driver.close()
