"""Scenario files: validated with line numbers, and run on the clock against a running twin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.modbus_bioreactor import ModbusBioreactor, ModbusBioreactorConfig
from twin.clock import Clock
from twin.equipment import Gas
from twin.errors import CommunicationError, InvalidInput
from twin.serve.alicat import AlicatServer
from twin.serve.bioreactor_modbus import BioreactorModbusServer, BioreactorStatus
from twin.serve.scenario import load_scenario, parse_duration
from twin.serve.scheduler import FaultScheduler
from twin.sim import Plant

SCENARIOS = Path(__file__).resolve().parents[2] / "hil_tests" / "scenarios"
SIM_DEVICES = {
    "bioreactor": "bioreactor",
    "gas": "gas_dispenser",
    "electroporator": "electroporator",
}

pytestmark = pytest.mark.usefixtures("no_task_leaks")


def test_durations_read_as_a_process_engineer_writes_them() -> None:
    assert parse_duration("1d 6h 30m 10s") == 86400 + 6 * 3600 + 1800 + 10
    assert parse_duration(90) == 90.0
    assert parse_duration("2.5h") == 9000.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("tomorrow")


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_are_valid_for_the_sim_bench(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.model.faults
    loaded.check_devices(SIM_DEVICES)


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "scenario: bad\n"
        "faults:\n"
        "  - {at: 1h, device: bioreactor, fault: heater_failure, until: 30m}\n"
        "  - {at: 2h, device: bioreactor, fault: meltdown}\n"
        "  - {at: 3h, device: gas, fault: supply_out, unit: b}\n"
        "  - {at: 4h, device: bioreactor, fault: contamination, until: 5h}\n"
        "  - {at: soon, device: gas, fault: silent}\n"
    )
    with pytest.raises(InvalidInput) as err:
        load_scenario(bad)
    lines = {p.line for p in err.value.problems}
    assert lines == {3, 4, 5, 6, 7}
    text = str(err.value)
    assert "until" in text and "unknown fault 'meltdown'" in text and "not a duration" in text


def test_devices_are_checked_against_the_bench(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "scenario: s\nfaults:\n"
        "  - {at: 0, device: bioreactor, fault: supply_out, unit: B}\n"
        "  - {at: 0, device: pump, fault: silent}\n"
        "  - {at: 0, device: bioreactor, fault: silent, unit: A}\n"
    )
    with pytest.raises(InvalidInput) as err:
        load_scenario(path).check_devices(SIM_DEVICES)
    assert [p.line for p in err.value.problems] == [3, 4, 5]
    assert "needs a gas_dispenser" in str(err.value) and "no device 'pump'" in str(err.value)
    assert "'unit' names one controller of a gas dispenser's shared line" in str(err.value)


@pytest.fixture
async def twin(plant: Plant, clock: Clock) -> AsyncIterator[dict[str, object]]:
    servers = {
        "bioreactor": BioreactorModbusServer(plant, clock),
        "gas": AlicatServer(plant, clock),
    }
    for server in servers.values():
        await server.start()
    yield servers
    for server in servers.values():
        await server.stop()  # type: ignore[attr-defined]


async def test_scenario_strikes_on_the_clock_and_drivers_see_only_the_wire(
    tmp_path: Path, twin: dict[str, object], plant: Plant, clock: Clock
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "scenario: day-one\nfaults:\n"
        "  - {at: 1h, device: bioreactor, fault: heater_failure, until: 3h}\n"
        "  - {at: 90m, device: gas, fault: supply_out, unit: B, until: 2h}\n"
        "  - {at: 4h, device: bioreactor, fault: silent, until: 4h 5m}\n"
        "  - {at: 5h, device: gas, fault: silent, unit: B, until: 5h 5m}\n"
    )
    loaded = load_scenario(path)
    loaded.check_devices({"bioreactor": "bioreactor", "gas": "gas_dispenser"})
    br_server, gas_server = twin["bioreactor"], twin["gas"]
    br = ModbusBioreactor(
        "BR-1",
        ModbusBioreactorConfig(host=br_server.host, port=br_server.port, retries=0),  # type: ignore[attr-defined]
        clock,
    )
    gas = AlicatGasDispenser("GAS-1", AlicatGasConfig(port=gas_server.path), clock)  # type: ignore[attr-defined]
    await br.connect()
    await gas.connect()
    scheduler = FaultScheduler(loaded.model, plant=plant, servers=twin, clock=clock)
    scheduler.start()
    try:
        await gas.set_flow(Gas.O2, 40.0)
        await clock.sleep_until(50 * 60)
        pv = await br.read()
        assert pv.status & BioreactorStatus.AT_SETPOINT
        assert not pv.status & BioreactorStatus.ALARM
        await clock.sleep_until(100 * 60)  # heater dead 40 min, O2 gone 10 min
        pv = await br.read()
        assert pv.status & BioreactorStatus.ALARM_HEATER and pv.status & BioreactorStatus.ALARM
        assert not pv.status & BioreactorStatus.AT_SETPOINT and pv.temperature_c < 35.0
        frame = await gas.poll(Gas.O2)
        assert frame.mass_flow_sccm == 0.0 and "VTM" in frame.flags
        await clock.sleep_until(200 * 60)
        assert (await gas.poll(Gas.O2)).mass_flow_sccm == pytest.approx(40.0, abs=1.0)
        await clock.sleep_until(4 * 3600 + 60)
        with pytest.raises(CommunicationError):
            await br.read()
        await clock.sleep_until(4 * 3600 + 6 * 60)
        pv = await br.read()
        assert not pv.status & BioreactorStatus.ALARM_HEATER
        assert pv.temperature_c == pytest.approx(37.0, abs=0.5)  # heater back since 3 h
        await clock.sleep_until(5 * 3600 + 60)  # the O2 controller alone is silent
        with pytest.raises(CommunicationError):
            await gas.poll(Gas.O2)
        assert (await gas.poll(Gas.AIR)).gas == "Air"
        await clock.sleep_until(5 * 3600 + 6 * 60)
        assert (await gas.poll(Gas.O2)).gas == "O2"
    finally:
        await scheduler.stop()
        await br.close()
        await gas.close()
    assert [(e.t, e.device, e.fault, e.edge) for e in scheduler.log] == [
        (3600.0, "bioreactor", "heater_failure", "start"),
        (5400.0, "gas", "supply_out", "start"),
        (7200.0, "gas", "supply_out", "end"),
        (10800.0, "bioreactor", "heater_failure", "end"),
        (14400.0, "bioreactor", "silent", "start"),
        (14700.0, "bioreactor", "silent", "end"),
        (18000.0, "gas", "silent", "start"),
        (18300.0, "gas", "silent", "end"),
    ]
