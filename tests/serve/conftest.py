"""Fixtures for the twin's device servers: a plant, a clock, a served bioreactor, a bare client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient

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


@pytest.fixture
async def raw(server: BioreactorModbusServer) -> AsyncIterator[AsyncModbusTcpClient]:
    """A bare pymodbus client: proves the documented map without our driver in between."""
    client = AsyncModbusTcpClient(
        server.host, port=server.port, timeout=1.0, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    yield client
    client.close()
