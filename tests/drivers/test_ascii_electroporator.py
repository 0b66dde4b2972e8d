"""AsciiElectroporator against the twin's electroporator server over a real pty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest_serial import MakeEp, ep_server, make_ep, serial_plant

from drivers.ascii_electroporator import AsciiElectroporator, AsciiElectroporatorConfig
from twin.clock import Clock
from twin.equipment import Electroporator, PulseProgram
from twin.errors import CommunicationError, DeviceRefused, EquipmentError
from twin.serve.pty import PtyEndpoint

__all__ = ["ep_server", "make_ep", "serial_plant"]  # fixtures, imported on purpose

PROGRAM = PulseProgram(voltage_v=500.0, pulse_width_us=20.0, pulse_count=1, gap_mm=2.0)


async def test_is_an_electroporator_and_identifies(make_ep: MakeEp) -> None:
    ep = await make_ep()
    assert isinstance(ep, Electroporator)
    ident = await ep.identify()
    assert (ident.vendor, ident.serial, ident.firmware) == ("poc-twin", "TW-EP-0001", "1.0.0")
    assert "electroporator" in ident.model


async def test_status_starts_empty_and_disarmed(make_ep: MakeEp) -> None:
    status = await (await make_ep()).status()
    assert (status.armed, status.loaded_ul, status.fault) == (False, 0.0, "")


async def test_program_is_read_back(make_ep: MakeEp, serial_plant: Any) -> None:
    ep = await make_ep()
    await ep.program(PulseProgram(1234.5, 100.0, 3, 4.0))
    assert ep._line is not None
    reply = await ep._ask("PROG?")
    assert reply == "PROG 1234.5 100.0 3 4.00"
    assert serial_plant.electroporator.programmed == PulseProgram(1234.5, 100.0, 3, 4.0)


async def test_fire_without_arm_is_refused_by_the_device(make_ep: MakeEp) -> None:
    ep = await make_ep()
    await ep.load(100.0)
    await ep.program(PROGRAM)
    with pytest.raises(DeviceRefused, match="FIRE refused: ERR 20 not armed"):
        await ep._ask("FIRE", retries=0)
    assert (await ep.status()).fault == "E20 not armed"


async def test_pulse_needs_a_loaded_chamber(make_ep: MakeEp) -> None:
    ep = await make_ep()
    await ep.program(PROGRAM)
    with pytest.raises(DeviceRefused, match="ARM refused: ERR 21 chamber not loaded"):
        await ep.pulse()


async def test_full_sequence_changes_the_cells(make_ep: MakeEp, serial_plant: Any) -> None:
    bag = serial_plant.bioreactor.state
    volume0, viable0, modified0 = bag.volume_ml, bag.viable_cells, bag.transduced_fraction
    ep = await make_ep()
    await ep.load(100.0)
    assert bag.volume_ml == pytest.approx(volume0 - 0.1)
    assert (await ep.status()).loaded_ul == pytest.approx(100.0)
    await ep.program(PROGRAM)
    result = await ep.pulse()
    assert result.field_v_per_cm == pytest.approx(2500.0)
    assert result.pulses_delivered == 1
    assert 0.0 < result.peak_current_a < 250.0
    status = await ep.status()
    assert not status.armed and status.fault == ""
    await ep.unload()  # into the recovery bag, not yet the culture
    assert (await ep.status()).loaded_ul == 0.0
    assert bag.volume_ml == pytest.approx(volume0 - 0.1)
    assert await ep.recover() == pytest.approx(0.1)
    assert await ep.recover() == 0.0  # idempotent: the recovery bag is empty
    assert bag.volume_ml == pytest.approx(volume0, abs=1e-6)
    assert bag.transient_fraction > 0.0  # cargo delivered to the chamber's cells
    assert bag.transduced_fraction > modified0  # a share of it integrated
    assert bag.viable_cells <= viable0


async def test_out_of_range_program_refused_by_the_driver(
    make_ep: MakeEp, serial_plant: Any
) -> None:
    ep = await make_ep()
    with pytest.raises(EquipmentError, match="voltage"):
        await ep.program(PulseProgram(5000.0, 20.0, 1, 2.0))
    assert serial_plant.electroporator.programmed is None  # nothing was sent


async def test_out_of_range_program_refused_by_the_device(make_ep: MakeEp) -> None:
    # A bench file with wider limits than the hardware: the device is the last word.
    ep = await make_ep(limits={"voltage_v": (0.0, 9000.0)})
    with pytest.raises(DeviceRefused, match=r"ERR 12 voltage 5000 V outside 0\.\.3500"):
        await ep.program(PulseProgram(5000.0, 20.0, 1, 2.0))
    with pytest.raises(DeviceRefused, match="ERR 12 gap 10 mm"):
        await ep.program(PulseProgram(500.0, 20.0, 1, 10.0))


async def test_overcurrent_aborts_the_pulse(make_ep: MakeEp) -> None:
    ep = await make_ep()
    await ep.load(5000.0)
    await ep.program(PulseProgram(3500.0, 20.0, 1, 0.5))
    with pytest.raises(DeviceRefused, match="ERR 31 pulse aborted: overcurrent"):
        await ep.pulse()
    status = await ep.status()
    assert not status.armed and status.fault.startswith("E31 pulse aborted")
    await ep.unload()


async def test_program_locked_while_armed(make_ep: MakeEp) -> None:
    ep = await make_ep()
    await ep.load(50.0)
    await ep.program(PROGRAM)
    await ep._ask("ARM")
    with pytest.raises(DeviceRefused, match="ERR 23 program locked while armed"):
        await ep.program(PulseProgram(600.0, 20.0, 1, 2.0))
    assert not (await ep.status()).armed  # the error disarmed it
    await ep.safe_state()
    await ep.unload()


class _MuteOnFire:
    """An electroporator that answers everything except FIRE (its reply is lost)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def __call__(self, line: bytes) -> bytes | None:
        self.received.append(line)
        if line == b"FIRE":
            return None
        return b"OK ARMED\r\n" if line == b"ARM" else b"OK DISARMED\r\n"


@pytest.fixture
async def mute_on_fire() -> AsyncIterator[tuple[_MuteOnFire, AsciiElectroporator]]:
    device = _MuteOnFire()
    endpoint = PtyEndpoint(device, baud=9600, name="mute")
    await endpoint.start()
    config = AsciiElectroporatorConfig(port=endpoint.path, retries=3, timeout_s=1.0)
    ep = AsciiElectroporator("EP-M", config, Clock())
    await ep.connect()
    yield device, ep
    await ep.close()
    await endpoint.close()


async def test_fire_is_never_retried_and_disarms_after(
    mute_on_fire: tuple[_MuteOnFire, AsciiElectroporator],
) -> None:
    device, ep = mute_on_fire
    device.received.clear()
    clock = Clock()
    t0 = clock.now()
    with pytest.raises(CommunicationError, match="1 attempt"):
        await ep.pulse()
    assert 1.0 <= clock.now() - t0 <= 1.1  # one 1 s timeout (plus ARM/DISARM on the wire)
    assert device.received == [b"ARM", b"FIRE", b"DISARM"]


async def test_config_defaults() -> None:
    cfg = AsciiElectroporatorConfig(port="/dev/x")
    assert (cfg.baud, cfg.timeout_s, cfg.retries) == (9600, 1.0, 1)
    assert cfg.limits.voltage_v == (0.0, 3500.0)
