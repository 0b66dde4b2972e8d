"""Every twin device conforms to its equipment interface, over the protocol its bench names.

The kits talk to the twin only through the drivers the bench file names:
Modbus TCP and Modbus RTU bioreactors, Alicat and Bronkhorst gas dispensers,
the ASCII electroporator. The same kits run against real benches in hil_tests/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conformance_rigs import ClampingGas, bench, twin_bench

from twin.bench import open_bench
from twin.clock import Clock
from twin.conformance import (
    Verdict,
    check_bench_equipment,
    check_bioreactor,
    check_gas_dispenser,
    conformance_table,
)
from twin.equipment import Gas

#: (bench file, equipment item, what it is): each protocol the twin serves, once.
DEVICES = [
    pytest.param("sim.yaml", "bioreactor", id="modbus-tcp-bioreactor"),
    pytest.param("sim-rtu.yaml", "bioreactor", id="modbus-rtu-bioreactor"),
    pytest.param("sim.yaml", "gas", id="alicat-gas"),
    pytest.param("sim-rtu.yaml", "gas", id="bronkhorst-gas"),
    pytest.param("sim.yaml", "electroporator", id="ascii-electroporator"),
]

#: Checks that do not apply to a device, by test id: a serial line has no MBAP header.
NOT_APPLICABLE = {"modbus-rtu-bioreactor": {"malformed MBAP header closes the connection"}}

#: The checks each interface's kit must run (a kit that silently drops one proves less).
CHECKS = {
    "bioreactor": {
        "identity",
        "process values",
        "heartbeat advances",
        "temperature setpoint read back",
        "rocking setpoint read back",
        "perfusion setpoint read back",
        "temperature setpoint outside limits refused",
        "rocking setpoint outside limits refused",
        "perfusion setpoint outside limits refused",
        "negative addition refused",
        "safe state",
        "bad quantity refused with 0x03",
        "unlisted function refused with 0x01",
        "malformed MBAP header closes the connection",
    },
    "gas_dispenser": {
        "identity",
        "process values",
        "air setpoint read back",
        "O2 setpoint read back",
        "N2 setpoint read back",
        "CO2 setpoint read back",
        "mass flow follows setpoint",
        "air outside full scale refused",
        "O2 outside full scale refused",
        "N2 outside full scale refused",
        "CO2 outside full scale refused",
        "O2 above cap refused",
        "safe state",
    },
    "electroporator": {
        "identity",
        "status",
        "opens disarmed",
        "program inside ranges accepted",
        "program outside ranges refused",
        "chamber load read back",
        "chamber volume outside range refused",
        "no pulse with an empty chamber",
        "safe state",
    },
}


@pytest.mark.parametrize(("bench_file", "name"), DEVICES)
async def test_twin_device_passes_its_kit(
    bench_file: str, name: str, request: pytest.FixtureRequest
) -> None:
    loaded = bench(bench_file)
    report = await check_bench_equipment(loaded, name)
    assert report.passed, report.text()
    assert report.device == name
    assert {c.name for c in report.checks} == CHECKS[loaded.model.equipment[name].type]
    skipped = {c.name for c in report.skipped}
    assert skipped == NOT_APPLICABLE.get(request.node.callspec.id, set()), report.text()
    assert report.identity.startswith("poc-twin "), report.identity  # vendor, model, s/n, fw


async def test_report_says_what_each_check_saw() -> None:
    report = await check_bench_equipment(bench("sim.yaml"), "bioreactor")
    lines = {c.name: c.detail for c in report.checks}
    assert lines["temperature setpoint read back"] == (
        "wrote and found in force 13, 4, 40 °C"  # inside, then both limits of 4-40 °C
    )
    assert "40.5, 3.5 and NaN °C refused" in lines["temperature setpoint outside limits refused"]
    assert "37 kept" in lines["temperature setpoint outside limits refused"]
    assert lines["safe state"].startswith("perfusion 500 -> 0 mL/day")
    table = conformance_table([report])
    assert "| bioreactor | Bioreactor | poc-twin RB-1000 twin s/n TWIN-RB-0001 fw 1.0.0 |" in table
    assert table.endswith("| 14 passed | - |")
    assert lines["bad quantity refused with 0x03"].startswith("10 requests refused with 0x03: ")
    assert lines["unlisted function refused with 0x01"].startswith("4 requests refused with 0x01")
    assert lines["malformed MBAP header closes the connection"] == (
        "closed after protocol id 1, length 0, length 1, length 300, 16 bytes 0xFF; still serving"
    )


async def test_kits_put_back_what_they_changed() -> None:
    """On a real bench the device stays connected between checks: the kit must leave it as it
    found it, even when the device misbehaves. Here one connection serves every check, as a
    long-lived bench device would."""
    loaded = bench("sim.yaml")
    async with open_bench(loaded, Clock()) as opened:
        reactor, gas = opened.equipment["bioreactor"], opened.equipment["gas"]
        await reactor.set_temperature(36.5)
        await reactor.set_rocking(12.0)
        for line, sccm in ((Gas.AIR, 190.0), (Gas.CO2, 10.0), (Gas.N2, 20.0), (Gas.O2, 5.0)):
            await gas.set_flow(line, sccm)

        def same(device: Any) -> Any:
            @asynccontextmanager
            async def keep_open() -> AsyncIterator[Any]:
                yield device

            return keep_open

        assert (await check_bioreactor(same(reactor))).passed
        assert (await check_gas_dispenser(same(gas))).passed
        # a dispenser that takes out-of-range values (clamped) is put back all the same
        assert not (await check_gas_dispenser(same(ClampingGas(gas)))).passed
        pv = await reactor.read()
        assert (pv.temperature_sp_c, pv.rocking_rpm, pv.perfusion_ml_per_day) == (36.5, 12.0, 0.0)
        setpoints = (await gas.read()).setpoint_sccm
        assert setpoints == {Gas.AIR: 190.0, Gas.O2: 5.0, Gas.N2: 20.0, Gas.CO2: 10.0}


async def test_o2_cap_check_is_skipped_when_the_cap_is_full_scale(tmp_path: Path) -> None:
    """A bench whose O2 cap is its full scale has no band for the interlock to guard."""
    loaded = twin_bench(
        tmp_path,
        "gas: {type: gas_dispenser, driver: alicat_gas, config: {port: twin, limits: "
        "{full_scale_sccm: {air: 500, o2: 200, n2: 500, co2: 50}, o2_cap_sccm: 200}}}",
    )
    report = await check_bench_equipment(loaded, "gas")
    assert report.passed, report.text()
    assert report.verdict_of("O2 above cap refused") is Verdict.SKIPPED
    assert [c.detail for c in report.skipped] == [
        "the O2 cap (200 sccm) is not below full scale (200)"
    ]
