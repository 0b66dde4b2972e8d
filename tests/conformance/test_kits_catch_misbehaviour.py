"""A kit that cannot fail proves nothing: each misbehaving device fails exactly the check that
covers its misbehaviour, names the device, and says what it did."""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance_rigs import (
    ClampingChamber,
    ClampingGas,
    Hung,
    LaxModbus,
    SilentOnBadValues,
    StaleReadBack,
    twin_bench,
    unreachable,
    wrapped,
)

from twin.conformance import (
    NonConforming,
    Verdict,
    check_bench_equipment,
    check_bioreactor,
    check_electroporator,
    check_gas_dispenser,
    conformance_table,
)
from twin.errors import EquipmentError


async def test_a_read_back_that_lies_fails_the_read_back() -> None:
    report = await check_bioreactor(wrapped("sim.yaml", "bioreactor", StaleReadBack))
    assert [c.name for c in report.failures] == ["temperature setpoint read back"]
    assert report.failures[0].detail == "wrote 13 °C, the device shows 37"
    assert not report.passed


async def test_silence_is_not_a_refusal() -> None:
    """The device hangs on the bad value, so putting the old setpoint back fails too; the
    report still names the silence, not the failed clean-up."""
    report = await check_bioreactor(wrapped("sim.yaml", "bioreactor", SilentOnBadValues))
    assert [c.name for c in report.failures] == ["temperature setpoint outside limits refused"]
    assert report.failures[0].detail.startswith(
        "no answer to temperature setpoint 40.5 °C (limits 4-40)"
    )
    assert report.failures[0].detail.endswith("a refusal must be an answer")


async def test_a_dispenser_that_clamps_instead_of_refusing_fails_every_limit_check() -> None:
    report = await check_gas_dispenser(wrapped("sim.yaml", "gas", ClampingGas), device="gas")
    assert [c.name for c in report.failures] == [
        "air outside full scale refused",
        "CO2 outside full scale refused",
        "N2 outside full scale refused",
        "O2 outside full scale refused",
        "O2 above cap refused",
    ]
    details = {c.name: c.detail for c in report.failures}
    assert details["air outside full scale refused"] == "accepted air 505 sccm (full scale 500)"
    assert details["O2 above cap refused"] == (
        "accepted O2 102 sccm above the cap of 100 (full scale 200)"
    )
    assert report.verdict_of("safe state") is Verdict.PASSED  # the rest of it still conforms


async def test_a_chamber_that_takes_any_volume_fails_the_chamber_range() -> None:
    report = await check_electroporator(
        wrapped("sim.yaml", "electroporator", ClampingChamber), device="electroporator"
    )
    assert [c.name for c in report.failures] == ["chamber volume outside range refused"]
    assert report.failures[0].detail == "accepted a load of 5051 uL (chamber 10-5000)"


async def test_a_controller_lax_on_the_protocol_fails_the_protocol_checks() -> None:
    """A controller that answers as pymodbus' defaults did (0x01 for a bad quantity, FC 8
    and 43 served, a connection left open after a bad MBAP header) fails those three checks
    and nothing else."""
    report = await check_bioreactor(wrapped("sim.yaml", "bioreactor", LaxModbus))
    details = {c.name: c.detail for c in report.failures}
    assert set(details) == {
        "bad quantity refused with 0x03",
        "unlisted function refused with 0x01",
        "malformed MBAP header closes the connection",
    }
    quantity = details["bad quantity refused with 0x03"]
    assert quantity.startswith(
        "expected exception 0x03, got FC4 count 0: exception 0x01; FC4 count 126: exception 0x01"
    )
    assert "FC4 count 126 at unmapped 30: exception 0x02" in quantity  # address before quantity
    assert details["unlisted function refused with 0x01"] == (
        "expected exception 0x01, got FC8 diagnostics (return query data): answered; "
        "FC43 read device identification: answered"
    )
    assert details["malformed MBAP header closes the connection"].startswith(
        "protocol id 1: neither answered nor closed; length 0: neither answered nor closed"
    )


async def test_a_hung_device_fails_by_the_deadline_instead_of_hanging_the_suite() -> None:
    report = await check_bioreactor(wrapped("sim.yaml", "bioreactor", Hung))
    no_reading = {
        "identity",
        "negative addition refused",
        "bad quantity refused with 0x03",
        "unlisted function refused with 0x01",
    }
    reading = [c for c in report.checks if c.name not in no_reading]
    assert all(c.verdict is Verdict.FAILED for c in reading), report.text()
    assert reading[0].detail == "not finished within 600 s"
    assert report.verdict_of("identity") is Verdict.PASSED


async def test_an_unreachable_device_fails_every_check_and_raises_naming_it() -> None:
    report = await check_bioreactor(unreachable("bioreactor"))
    assert report.failures == report.checks
    assert report.checks[0].detail == "CommunicationError: bioreactor: no answer from 192.0.2.1:502"
    # one attempt to open, not eleven: on a real bench each costs the driver's timeouts
    assert {c.detail for c in report.checks[1:]} == {
        "not run: the device could not be opened (identity)"
    }
    assert conformance_table([report]).splitlines()[-1] == (
        "| bioreactor | Bioreactor | - | 14 failed | failed identity: CommunicationError: "
        "bioreactor: no answer from 192.0.2.1:502; process values, heartbeat advances, "
        "temperature setpoint read back, rocking setpoint read back, perfusion setpoint read "
        "back, temperature setpoint outside limits refused, rocking setpoint outside limits "
        "refused, perfusion setpoint outside limits refused, negative addition refused, safe "
        "state, bad quantity refused with 0x03, unlisted function refused with 0x01, "
        "malformed MBAP header closes the connection: not run: the device could not be "
        "opened (identity) |"
    )
    with pytest.raises(NonConforming) as caught:
        report.raise_on_failure()
    assert isinstance(caught.value, EquipmentError)
    assert caught.value.device == "bioreactor"
    assert str(caught.value).startswith(
        "bioreactor: does not conform to the Bioreactor interface (14 of 14 checks failed): "
        "identity: CommunicationError"
    )


async def test_bioreactor_refuses_setpoints_beyond_the_bench_limits(tmp_path: Path) -> None:
    """A bench may narrow a controller's range (a cleanroom allows 30-38.5 °C of the device's
    4-40 °C); a driver must then refuse 39 °C itself, whoever asks."""
    limits = "{temperature_c: [30.0, 38.5], rocking_rpm: [0.0, 30.0]}"
    loaded = twin_bench(
        tmp_path,
        "bioreactor: {type: bioreactor, driver: modbus_tcp_bioreactor, "
        f"config: {{host: twin, port: twin, limits: {limits}}}}}",
    )
    report = await check_bench_equipment(loaded, "bioreactor")
    assert report.verdict_of("temperature setpoint outside limits refused") is Verdict.PASSED, (
        report.text()
    )
