"""The in-process Modbus carrier (drivers.modbus_null_modem) answers as the wire does.

Two plants alike, one served on loopback TCP, one on pymodbus' null modem where the driver
hands PDUs over: every reading, write, refusal and batch time must be the same, and a
faulty link must behave as on the wire (it goes as bytes).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from pymodbus.pdu import ModbusPDU

from drivers import modbus_null_modem
from drivers.modbus_bioreactor import ModbusBioreactor, ModbusBioreactorConfig
from drivers.modbus_link import ModbusRefused
from twin.clock import Clock
from twin.errors import CommunicationError
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.serve.modbus_server import PduEnd
from twin.sim import Plant

pytestmark = pytest.mark.usefixtures("no_task_leaks")

_ports = itertools.count(7001)

#: Raw request PDUs a conformance kit sends: valid, out-of-range quantity, unlisted function,
#: an address outside the map, a length that disagrees with its byte count.
PROBES = [
    bytes.fromhex("04 0000 0013"),
    bytes.fromhex("04 0000 0000"),
    bytes.fromhex("04 0000 007e"),
    bytes.fromhex("08 0000 0000"),
    bytes.fromhex("03 0fff 0002"),
    bytes.fromhex("10 0000 0002 03 0000 0000"),
]


def server_address(server: BioreactorModbusServer) -> str:
    return f"{server.host}:{server.port}"


Pair = tuple[tuple[BioreactorModbusServer, ModbusBioreactor], ...]


@pytest.fixture
async def pair(clock: Clock) -> AsyncIterator[Pair]:
    """(server, driver) on loopback TCP, then the same on the in-process null modem."""
    made = []
    for host, port in (("127.0.0.1", 0), (modbus_null_modem.NULLMODEM_HOST, next(_ports))):
        server = BioreactorModbusServer(Plant(seed=5), clock, host=host, port=port)
        await server.start()
        config = ModbusBioreactorConfig(
            host=server.host, port=server.port, timeout_s=1.0, retries=2
        )
        driver = ModbusBioreactor("BR-1", config, clock)
        await driver.connect()
        made.append((server, driver))
    yield tuple(made)
    for server, driver in made:
        await driver.close()
        await server.stop()


async def test_every_reading_write_and_refusal_is_the_wires(pair: Pair, clock: Clock) -> None:
    (_, wire), (_, memory) = pair
    for driver in (wire, memory):
        await driver.set_temperature(36.5)
        await driver.set_perfusion(250.0)
    await clock.sleep(3600.0)
    readings = [await d.read() for d in (wire, memory)]
    assert readings[0] == readings[1]
    assert readings[1].temperature_sp_c == pytest.approx(36.5)
    for table, address, count in [("holding", 0, 10), ("input", 0, 19), ("input", 100, 32)]:
        registers = [await d.read_registers(table, address, count) for d in (wire, memory)]  # type: ignore[arg-type]
        assert registers[0] == registers[1]
    codes = [[await d.probe_request(pdu) for pdu in PROBES] for d in (wire, memory)]
    assert codes[0] == codes[1]
    assert codes[1][0] == 0 and set(codes[1][1:]) <= {1, 2, 3}  # refused, as the spec says
    assert wire.counters == memory.counters


async def test_another_unit_id_is_refused_as_on_the_wire(pair: Pair, clock: Clock) -> None:
    codes = []
    for server, _ in pair:
        config = ModbusBioreactorConfig(host=server.host, port=server.port, unit=9)
        driver = ModbusBioreactor("BR-9", config, clock)
        try:
            with pytest.raises(ModbusRefused) as refused:
                await driver.connect()
            codes.append(refused.value.code)
        finally:
            await driver.close()
    assert codes == [0x0B, 0x0B]


@pytest.mark.parametrize("fault", ["silent", "late", "too late", "garble", "short", "tid"])
async def test_a_faulty_link_fails_and_recovers_as_on_the_wire(
    pair: Pair, clock: Clock, fault: str
) -> None:
    outcomes = []
    for server, driver in pair:
        link = server.link
        if fault == "silent":
            link.silent = True
        elif fault in ("late", "too late"):
            link.delay_s = 0.4 if fault == "late" else 1.5
        else:
            link.corrupt_every, link.corrupt_mode = 1, fault  # type: ignore[assignment]
        t0 = clock.now()
        try:
            outcome = (await driver.read()).temperature_sp_c
        except CommunicationError as exc:
            outcome = str(exc).replace(server_address(server), "ADDRESS")
        took = clock.now() - t0
        link.clear()
        outcomes.append((outcome, took, (await driver.read()).temperature_sp_c))
    assert outcomes[0] == outcomes[1]
    assert pair[0][1].counters == pair[1][1].counters


async def test_a_stopped_device_cannot_be_reached(clock: Clock) -> None:
    port = next(_ports)
    server = BioreactorModbusServer(
        Plant(seed=5), clock, host=modbus_null_modem.NULLMODEM_HOST, port=port
    )
    await server.start()
    with pytest.raises(ValueError, match="already has a device end"):
        modbus_null_modem.listen(port, server._server._pdu_end._end)  # type: ignore[union-attr]
    await server.stop()
    config = ModbusBioreactorConfig(host=server.host, port=port, timeout_s=0.5, retries=0)
    driver = ModbusBioreactor("BR-1", config, clock)
    try:
        with pytest.raises(CommunicationError, match="cannot connect"):
            await driver.connect()
    finally:
        await driver.close()


async def test_a_sound_link_hands_pdus_over_and_a_faulty_one_sends_bytes(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The speed of an in-process batch comes from the PDU path: a sound link takes it, a
    faulty one (here late) goes as bytes and still reads right."""
    (server, driver) = pair[1]
    answered: list[int] = []
    original = PduEnd.answer

    def spied(end: PduEnd, request: ModbusPDU) -> ModbusPDU:
        answered.append(request.function_code)
        return original(end, request)

    monkeypatch.setattr(PduEnd, "answer", spied)
    await driver.read()
    assert answered == [4]
    server.link.delay_s = 0.1
    assert (await driver.read()).temperature_sp_c == pytest.approx(37.0)
    assert answered == [4]
    server.link.clear()
    await driver.read()
    assert answered == [4, 4]


async def test_a_corruption_set_mid_run_hits_the_replies_the_wire_would(
    pair: Pair, clock: Clock
) -> None:
    """Every Nth reply is garbled, counted from the device's first reply: a sound in-process
    link counts its replies too, so a fault set later breaks the same one as on the wire."""
    outcomes = []
    for server, driver in pair:
        for _ in range(2):
            await driver.read()
        server.link.corrupt_every, server.link.corrupt_mode = 4, "tid"
        t0 = clock.now()
        await driver.read()
        outcomes.append((clock.now() - t0, driver.counters.timeouts, driver.counters.retries))
        server.link.clear()
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][1] == 1  # the 4th reply counted, as sent: lost, retried


async def test_bits_read_in_process_come_in_whole_bytes_as_on_the_wire(pair: Pair) -> None:
    bits = []
    for _, driver in pair:
        response = await driver._call(  # no driver call reads discrete inputs yet
            "reading 3 discrete inputs",
            lambda c: c.read_discrete_inputs(0, count=3, device_id=1),
        )
        bits.append(list(response.bits))
    assert bits[0] == bits[1] and len(bits[1]) == 8


async def test_a_stopped_server_leaves_no_device_end(clock: Clock) -> None:
    port = next(_ports)
    server = BioreactorModbusServer(
        Plant(seed=5), clock, host=modbus_null_modem.NULLMODEM_HOST, port=port
    )
    await server.start()
    key = (id(asyncio.get_running_loop()), port)
    assert key in modbus_null_modem._ends
    await server.stop()
    assert key not in modbus_null_modem._ends
