"""Link faults of the Modbus TCP bioreactor, as the project's own driver experiences them.

Each test drives drivers.modbus_bioreactor against the twin's real pymodbus
server and checks what a user of the driver sees: a CommunicationError after
the configured timeouts, a late but correct reading, or a damaged reply that is
refused rather than believed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers.modbus_bioreactor import ModbusBioreactor, ModbusBioreactorConfig
from twin.clock import Clock
from twin.errors import CommunicationError
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.sim import Plant

pytestmark = pytest.mark.usefixtures("no_task_leaks")


@pytest.fixture
async def served(plant: Plant, clock: Clock) -> AsyncIterator[BioreactorModbusServer]:
    srv = BioreactorModbusServer(plant, clock)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def driver(served: BioreactorModbusServer, clock: Clock) -> AsyncIterator[ModbusBioreactor]:
    cfg = ModbusBioreactorConfig(host=served.host, port=served.port, timeout_s=1.0, retries=2)
    drv = ModbusBioreactor("BR-1", cfg, clock)
    await drv.connect()
    yield drv
    await drv.close()


async def test_silent_controller_fails_after_every_retry(
    driver: ModbusBioreactor, served: BioreactorModbusServer, clock: Clock
) -> None:
    served.link.silent = True
    t0 = clock.now()
    with pytest.raises(CommunicationError, match="no valid answer"):
        await driver.read()
    assert clock.now() - t0 == pytest.approx(3.0, abs=0.01)  # 1 s x 3 tries
    served.link.clear()
    assert (await driver.read()).temperature_sp_c == pytest.approx(37.0)


async def test_late_reply_within_timeout_is_read_late_but_right(
    driver: ModbusBioreactor, served: BioreactorModbusServer, clock: Clock, plant: Plant
) -> None:
    served.link.delay_s = 0.4
    t0 = clock.now()
    pv = await driver.read()
    assert clock.now() - t0 == pytest.approx(0.4, abs=0.01)
    assert pv.temperature_c == pytest.approx(plant.bioreactor.state.temperature_c, abs=0.2)


async def test_reply_later_than_timeout_is_a_communication_error(
    driver: ModbusBioreactor, served: BioreactorModbusServer
) -> None:
    served.link.delay_s = 1.5
    with pytest.raises(CommunicationError):
        await driver.read()


@pytest.mark.parametrize("mode", ["garble", "short", "tid"])
async def test_corrupted_reply_is_never_believed(
    driver: ModbusBioreactor, served: BioreactorModbusServer, mode: str
) -> None:
    served.link.corrupt_every, served.link.corrupt_mode = 1, mode  # type: ignore[assignment]
    with pytest.raises(CommunicationError):
        await driver.read()
    served.link.clear()
    assert (await driver.read()).temperature_sp_c == pytest.approx(37.0)


async def test_reply_to_another_transaction_costs_a_retry_not_a_reading(
    driver: ModbusBioreactor, served: BioreactorModbusServer, clock: Clock
) -> None:
    """pymodbus drops a reply with the wrong transaction id, times out and asks again."""
    served.link.corrupt_every, served.link.corrupt_mode = 3, "tid"
    t0 = clock.now()
    readings = [await driver.read() for _ in range(4)]
    assert all(pv.temperature_sp_c == pytest.approx(37.0) for pv in readings)
    assert clock.now() - t0 == pytest.approx(2.0, abs=0.05)  # replies 3 and 6 cost 1 s each
