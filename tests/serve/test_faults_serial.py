"""Link and supply faults of the serial devices, as the project's drivers experience them.

The Alicat-style gas dispenser and the ASCII electroporator run on real ptys;
drivers.alicat_gas and drivers.ascii_electroporator talk to them unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.ascii_electroporator import AsciiElectroporator, AsciiElectroporatorConfig
from twin.clock import Clock
from twin.equipment import Gas
from twin.errors import CommunicationError
from twin.serve.alicat import AlicatServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.sim import Plant

pytestmark = pytest.mark.usefixtures("no_task_leaks")


@pytest.fixture
async def gas_server(plant: Plant, clock: Clock) -> AsyncIterator[AlicatServer]:
    srv = AlicatServer(plant, clock)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def gas(gas_server: AlicatServer, clock: Clock) -> AsyncIterator[AlicatGasDispenser]:
    cfg = AlicatGasConfig(port=gas_server.path, timeout_s=0.5, retries=2)
    drv = AlicatGasDispenser("GAS-1", cfg, clock)
    await drv.connect()
    yield drv
    await drv.close()


@pytest.fixture
async def ep_server(plant: Plant, clock: Clock) -> AsyncIterator[ElectroporatorServer]:
    srv = ElectroporatorServer(plant, clock)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def ep(ep_server: ElectroporatorServer, clock: Clock) -> AsyncIterator[AsciiElectroporator]:
    cfg = AsciiElectroporatorConfig(port=ep_server.path, timeout_s=1.0, retries=1)
    drv = AsciiElectroporator("EP-1", cfg, clock)
    await drv.connect()
    yield drv
    await drv.close()


async def test_silent_gas_line_times_out_on_every_try(
    gas: AlicatGasDispenser, gas_server: AlicatServer, clock: Clock
) -> None:
    gas_server.link.silent = True
    t0 = clock.now()
    with pytest.raises(CommunicationError, match=r"no reply within 0\.5 s"):
        await gas.poll(Gas.AIR)
    assert clock.now() - t0 == pytest.approx(1.5, abs=0.01)  # 0.5 s x 3 attempts
    gas_server.link.clear()
    assert (await gas.poll(Gas.AIR)).gas == "Air"


async def test_late_gas_reply_arrives_late(
    gas: AlicatGasDispenser, gas_server: AlicatServer, clock: Clock
) -> None:
    t0 = clock.now()
    await gas.poll(Gas.AIR)
    on_time = clock.now() - t0
    gas_server.link.delay_s = 0.3
    t0 = clock.now()
    await gas.poll(Gas.AIR)
    assert clock.now() - t0 == pytest.approx(on_time + 0.3, abs=1e-6)


async def test_garbled_gas_frame_is_refused_not_parsed(
    gas: AlicatGasDispenser, gas_server: AlicatServer
) -> None:
    gas_server.link.corrupt_every = 1
    with pytest.raises(CommunicationError, match=r"garbled|no data frame"):
        await gas.poll(Gas.O2)


async def test_empty_o2_supply_shows_zero_flow_then_vtm(
    gas: AlicatGasDispenser, plant: Plant, clock: Clock
) -> None:
    """Alicat BC manual: valve thermal management starts when a setpoint sees no flow."""
    await gas.set_flow(Gas.O2, 50.0)
    await clock.sleep(1.0)
    assert (await gas.poll(Gas.O2)).mass_flow_sccm == pytest.approx(50.0, abs=1.0)
    plant.gas.mfcs["B"].supply_available = False
    await clock.sleep(1.0)
    frame = await gas.poll(Gas.O2)
    assert frame.mass_flow_sccm == 0.0 and frame.setpoint_sccm == 50.0
    assert "VTM" not in frame.flags
    await clock.sleep(15.0)
    frame = await gas.poll(Gas.O2)
    assert "VTM" in frame.flags and frame.mass_flow_sccm == 0.0
    assert plant.gas.outlet_sccm()[Gas.O2] == pytest.approx(0.0, abs=1e-6)
    plant.gas.mfcs["B"].supply_available = True  # cylinder replaced
    await clock.sleep(1.0)
    frame = await gas.poll(Gas.O2)
    assert "VTM" not in frame.flags and frame.mass_flow_sccm == pytest.approx(50.0, abs=1.0)


async def test_silent_electroporator_fails_its_status_read(
    ep: AsciiElectroporator, ep_server: ElectroporatorServer
) -> None:
    ep_server.link.silent = True
    with pytest.raises(CommunicationError, match="after 2 attempt"):
        await ep.status()


async def test_garbled_electroporator_reply_is_a_communication_error(
    ep: AsciiElectroporator, ep_server: ElectroporatorServer
) -> None:
    ep_server.link.corrupt_every = 1
    with pytest.raises(CommunicationError, match=r"garbled|unexpected reply"):
        await ep.status()
    ep_server.link.clear()
    assert not (await ep.status()).armed


async def test_one_silent_unit_leaves_the_others_on_the_line_answering(
    gas: AlicatGasDispenser, gas_server: AlicatServer, clock: Clock
) -> None:
    """RS-485 multi-drop: a dead O2 controller (unit B) does not silence air (unit A)."""
    gas_server.unit_link("B").silent = True
    assert (await gas.poll(Gas.AIR)).gas == "Air"
    with pytest.raises(CommunicationError, match=r"no reply within 0\.5 s"):
        await gas.poll(Gas.O2)
    gas_server.unit_link("B").clear()
    assert (await gas.poll(Gas.O2)).gas == "O2"


async def test_one_garbling_unit_is_refused_while_the_others_parse(
    gas: AlicatGasDispenser, gas_server: AlicatServer
) -> None:
    gas_server.unit_link("C").corrupt_every = 1
    with pytest.raises(CommunicationError, match=r"garbled|no data frame"):
        await gas.poll(Gas.N2)
    assert (await gas.poll(Gas.CO2)).gas == "CO2"
    with pytest.raises(KeyError, match="no unit Q on this line"):
        gas_server.unit_link("Q")
