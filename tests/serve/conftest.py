"""Fixtures for the twin's device servers: a plant, a clock, a served bioreactor, a bare client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient

from twin.serve.bioreactor_modbus import BioreactorModbusServer


@pytest.fixture
async def raw(server: BioreactorModbusServer) -> AsyncIterator[AsyncModbusTcpClient]:
    """A bare pymodbus client: proves the documented map without our driver in between."""
    client = AsyncModbusTcpClient(
        server.host, port=server.port, timeout=1.0, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    yield client
    client.close()
