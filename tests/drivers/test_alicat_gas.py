"""AlicatGasDispenser against the twin's Alicat server over a real pty."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest
from conftest_serial import MakeGas, alicat_server, make_gas, serial_plant

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from twin.clock import Clock
from twin.equipment import Gas, GasDispenser
from twin.errors import CommunicationError, DeviceRefused, EquipmentError, InterlockTripped
from twin.serve.alicat import AlicatServer
from twin.sim import Plant

__all__ = ["alicat_server", "make_gas", "serial_plant"]  # fixtures, imported on purpose


async def test_is_a_gas_dispenser(make_gas: MakeGas) -> None:
    gas = await make_gas()
    assert isinstance(gas, GasDispenser)
    assert gas.limits.full_scale_sccm == {
        Gas.AIR: 500.0,
        Gas.O2: 200.0,
        Gas.N2: 500.0,
        Gas.CO2: 50.0,
    }
    assert gas.limits.o2_cap_sccm == 100.0


async def test_identify_names_every_unit(make_gas: MakeGas) -> None:
    ident = await (await make_gas()).identify()
    assert ident.vendor == "poc-twin"
    assert ident.model == "A:MC-500SCCM-D,B:MC-200SCCM-D,C:MC-500SCCM-D,D:MC-50SCCM-D"
    assert ident.serial.startswith("A:") and ident.serial.count(",") == 3


async def test_poll_every_mfc(make_gas: MakeGas) -> None:
    pv = await (await make_gas()).read()
    assert set(pv.mass_flow_sccm) == set(pv.setpoint_sccm) == {Gas.AIR, Gas.O2, Gas.N2, Gas.CO2}
    assert all(v == 0.0 for v in pv.setpoint_sccm.values())


async def test_setpoints_written_verified_and_reached(make_gas: MakeGas, serial_plant: Any) -> None:
    gas = await make_gas()
    await gas.set_flow(Gas.AIR, 250.0)
    await gas.set_flow(Gas.CO2, 12.5)
    await gas.set_flow(Gas.O2, 42.42)
    assert serial_plant.gas.mfcs["A"].setpoint_sccm == pytest.approx(250.0)
    assert serial_plant.gas.mfcs["B"].setpoint_sccm == pytest.approx(42.42)
    await Clock().sleep(1.0)
    pv = await gas.read()
    assert pv.setpoint_sccm == {Gas.AIR: 250.0, Gas.O2: 42.42, Gas.N2: 0.0, Gas.CO2: 12.5}
    assert pv.mass_flow_sccm[Gas.AIR] == pytest.approx(250.0, abs=2.5)
    assert pv.mass_flow_sccm[Gas.CO2] == pytest.approx(12.5, abs=0.5)
    assert serial_plant.gas.outlet_sccm()[Gas.AIR] == pytest.approx(250.0, rel=1e-3)


async def test_readback_mismatch_is_refused(make_gas: MakeGas) -> None:
    # The bench claims a 100 sccm CO2 controller; the unit is 50 sccm and clamps.
    gas = await make_gas(limits={"full_scale_sccm": {"air": 500, "o2": 200, "n2": 500, "co2": 100}})
    with pytest.raises(
        DeviceRefused, match=r"unit D \(CO2\) setpoint not accepted: sent 80.00, reads back 50.00"
    ):
        await gas.set_flow(Gas.CO2, 80.0)


async def test_o2_cap_is_an_interlock(make_gas: MakeGas, serial_plant: Any) -> None:
    gas = await make_gas(limits={"o2_cap_sccm": 60.0})
    await gas.set_flow(Gas.O2, 60.0)
    with pytest.raises(InterlockTripped, match="O2 cap"):
        await gas.set_flow(Gas.O2, 60.5)
    assert serial_plant.gas.mfcs["B"].setpoint_sccm == pytest.approx(60.0)  # nothing sent


async def test_out_of_range_is_refused_before_sending(make_gas: MakeGas, serial_plant: Any) -> None:
    gas = await make_gas()
    for g, v in [(Gas.AIR, 500.5), (Gas.N2, -1.0)]:
        with pytest.raises(EquipmentError, match="outside"):
            await gas.set_flow(g, v)
    assert serial_plant.gas.mfcs["A"].setpoint_sccm == 0.0


async def test_connect_selects_the_configured_gas(make_gas: MakeGas, serial_plant: Any) -> None:
    serial_plant.gas.mfcs["C"].gas = Gas.O2  # someone left unit C on O2
    await make_gas()
    assert serial_plant.gas.mfcs["C"].gas == Gas.N2


async def test_unit_on_another_gas_line_layout(make_gas: MakeGas, serial_plant: Any) -> None:
    # A bench may wire the lines differently: unit A meters N2 here.
    gas = await make_gas(units={"n2": "A", "air": "C"})
    assert serial_plant.gas.mfcs["A"].gas == Gas.N2
    assert serial_plant.gas.mfcs["C"].gas == Gas.AIR
    with pytest.raises(EquipmentError, match="no O2 line"):
        await gas.set_flow(Gas.O2, 1.0)


async def test_unknown_command_is_refused(make_gas: MakeGas) -> None:
    gas = await make_gas()
    with pytest.raises(DeviceRefused, match=r"unit A refused AX: replied '\?'"):
        await gas._ask("A", "X")


async def test_silent_unit_is_a_communication_error(make_gas: MakeGas, alicat_server: Any) -> None:
    clock = Clock()
    t0 = clock.now()
    with pytest.raises(CommunicationError) as err:
        await make_gas(units={"air": "A", "co2": "Q"}, timeout_s=0.25, retries=2)
    assert 0.75 <= clock.now() - t0 <= 0.8  # Q x3 timeouts, plus A's few ms on the wire
    assert "unit Q" in str(err.value) and alicat_server.path in str(err.value)


async def test_hold_and_cancel(make_gas: MakeGas, serial_plant: Any) -> None:
    gas = await make_gas()
    await gas.set_flow(Gas.AIR, 100.0)
    frame = await gas.hold_closed(Gas.AIR)
    assert "HLD" in frame.flags and frame.setpoint_sccm == 100.0
    await Clock().sleep(1.0)
    assert (await gas.poll(Gas.AIR)).mass_flow_sccm == 0.0  # the poll brings the plant to now
    assert serial_plant.gas.outlet_sccm()[Gas.AIR] == pytest.approx(0.0, abs=1e-6)
    frame = await gas.cancel_hold(Gas.AIR)
    assert "HLD" not in frame.flags


async def test_safe_state_closes_o2_and_n2_only(make_gas: MakeGas) -> None:
    gas = await make_gas()
    for g, v in [(Gas.AIR, 200.0), (Gas.O2, 50.0), (Gas.N2, 100.0), (Gas.CO2, 10.0)]:
        await gas.set_flow(g, v)
    await gas.safe_state()
    sp = (await gas.read()).setpoint_sccm
    assert sp == {Gas.AIR: 200.0, Gas.O2: 0.0, Gas.N2: 0.0, Gas.CO2: 10.0}


async def test_two_dispensers_on_one_line_do_not_interleave(
    make_gas: MakeGas, serial_plant: Any
) -> None:
    left = await make_gas("GAS-L", units={"air": "A", "o2": "B"})
    right = await make_gas("GAS-R", units={"n2": "C", "co2": "D"})
    assert left._line is right._line  # one port, one lock

    async def drive(disp: Any, gases: list[Gas], base: float) -> None:
        for i in range(15):
            for k, g in enumerate(gases):
                await disp.set_flow(g, base + i + k)
            await disp.read()

    await asyncio.gather(
        drive(left, [Gas.AIR, Gas.O2], 10.0),
        drive(right, [Gas.N2, Gas.CO2], 20.0),
        drive(left, [Gas.AIR], 30.0),
    )
    mfcs = serial_plant.gas.mfcs
    assert mfcs["B"].setpoint_sccm == pytest.approx(25.0)
    assert mfcs["C"].setpoint_sccm == pytest.approx(34.0)
    assert mfcs["D"].setpoint_sccm == pytest.approx(35.0)


async def test_config_is_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        AlicatGasConfig(port="/dev/x", units={"air": "a"})
    with pytest.raises(pydantic.ValidationError):
        AlicatGasConfig(port="/dev/x", units={"air": "A", "o2": "A"})
    with pytest.raises(pydantic.ValidationError):
        AlicatGasConfig(port="/dev/x", units={"argon": "E"})
    with pytest.raises(pydantic.ValidationError):
        AlicatGasConfig(port="/dev/x", baudrate=9600)  # extra="forbid"
    cfg = AlicatGasConfig(port="/dev/x")
    assert cfg.units == {"air": "A", "o2": "B", "n2": "C", "co2": "D"}
    assert (cfg.baud, cfg.timeout_s, cfg.retries) == (19200, 0.5, 2)


async def test_not_connected_is_a_communication_error() -> None:
    from drivers.alicat_gas import AlicatGasDispenser

    gas = AlicatGasDispenser("GAS-X", AlicatGasConfig(port="/dev/null"), Clock())
    with pytest.raises(CommunicationError, match="not connected"):
        await gas.read()


async def test_parity_and_stop_bits_from_the_bench(clock: Clock) -> None:
    """An 8E1 line is opened 8E1, charged 11 bits per character by the twin, and a second
    device asking for the same port at 8N1 is refused (one line, one framing)."""
    plant = Plant(seed=3)
    server = AlicatServer(plant, clock, baud=19200, framing="8E1")
    await server.start()
    gas = AlicatGasDispenser("gas", AlicatGasConfig(port=server.path, parity="E"), clock)
    other = AlicatGasDispenser("gas2", AlicatGasConfig(port=server.path), clock)
    try:
        await gas.connect()
        assert gas._line is not None and gas._line._serial is not None
        assert gas._line._serial.parity == "E"
        with pytest.raises(CommunicationError, match=r"already open at 19200 8E1"):
            await other.connect()
        start = clock.now()
        await gas.read()
        # 4 polls (request + 49-char frame each) at 11 bits/char, 19200 baud: about 0.13 s
        assert 0.10 < clock.now() - start < 0.2
    finally:
        await gas.close()
        await server.stop()
