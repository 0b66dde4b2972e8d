"""A device that answers with no number where a number belongs: NaN or an infinity in a
reading (a failed probe; IEEE float registers carry both), or a driver that fails on what
came back. Each is an equipment fault: alarmed once, naming the value and keeping the rest
of the reading in the record, and the batch is held, while the other devices are still read
and the clock keeps going; when the device reads true again the alarm clears and a person
restarts. Before: the journal refused the NaN, the scan died and was restarted at once, over
and over, with the clock standing still (a spinning process, an alarm per turn).
Virtual time, the twin's Modbus bioreactor and Alicat dispenser."""

from __future__ import annotations

import math
from typing import Any

import pytest
from batch_harness import S, finished
from test_pump_cut_short import RECIPE, _replays_identically, running  # noqa: F401

from twin.sim.faults import SensorFault

CULTURE = RECIPE.replace(
    "          - {phase: add, material: il2, volume_ml: 100.0}\n",
    "          - {phase: culture, duration_h: 3, ph_setpoint: 7.2}\n",
)


async def _held_after(run: Any, start_s: float) -> None:
    async with run.clock.timeout(start_s + 600.0):
        while run.batch.state is not S.HELD:
            await run.clock.sleep(10.0)


def _device_alarms(run: Any, source: str) -> list[Any]:
    return [e for e in run.kinds("alarm") if e.source == source and e.data["alarm"] == "device"]


@pytest.mark.parametrize(
    ("sensor", "value", "field"),
    [
        ("ph", math.nan, "ph nan"),
        ("temperature", math.inf, "temperature_c inf"),
        ("do", -math.inf, "do_pct -inf"),
        ("vcd", math.nan, "viable_cells_per_ml nan"),
    ],
)
async def test_a_probe_that_reads_no_number_holds_the_batch_and_monitoring_goes_on(
    running: Any,  # noqa: F811 (the fixture of test_pump_cut_short)
    sensor: str,
    value: float,
    field: str,
) -> None:
    run = await running(CULTURE)
    await run.until_phase_running("culture")
    await run.clock.sleep(600.0)
    plant = run.bench.twin.plant.bioreactor
    plant.set_sensor_fault(sensor, SensorFault("stuck", 0.0, value=value))
    failed_at = run.clock.now()
    await _held_after(run, 120.0)

    (alarm,) = _device_alarms(run, "bioreactor")
    message = alarm.data["message"]
    assert field in message and "no number" in message
    assert "the rest read" in message and "volume_ml" in message  # what still read true
    assert alarm.batch_time - failed_at <= 60.0  # found at the next scan

    # Held for an hour with the probe still failed: the clock keeps pace, the gas
    # dispenser is read every scan, the bioreactor's failure is recorded each scan, once
    # alarmed.
    held_from, gas_before = run.clock.now(), len(_readings(run, "gas"))
    await run.clock.sleep(3600.0)
    assert run.clock.now() - held_from == pytest.approx(3600.0, abs=1.0)
    assert len(_readings(run, "gas")) - gas_before >= 59
    silent = [e for e in run.kinds("no_answer") if e.source == "bioreactor"]
    assert len(silent) >= 59 and all(field in e.data["message"] for e in silent)
    assert len(_device_alarms(run, "bioreactor")) == 1

    plant.set_sensor_fault(sensor, None)  # the probe replaced: it reads true again
    await run.clock.sleep(120.0)
    (cleared,) = [e for e in run.kinds("alarm_cleared") if e.source == "bioreactor"]
    assert cleared.data["alarm"] == "device"
    run.batch.command("restart", who="sam", why="probe replaced")
    assert await finished(run) is S.COMPLETE
    _replays_identically(run)


def _readings(run: Any, source: str) -> list[Any]:
    return [e for e in run.kinds("reading") if e.source == source]


async def test_a_driver_that_fails_on_an_answer_holds_the_batch_and_the_scan_goes_on(
    running: Any,  # noqa: F811 (the fixture of test_pump_cut_short)
) -> None:
    """A driver's own fault on a reading (not an EquipmentError: a decoding bug) loses that
    device's reading only: the gas dispenser is still read, the clock runs on."""
    run = await running(CULTURE)
    await run.until_phase_running("culture")
    driver = run.bench.equipment["bioreactor"]
    healthy = driver.read

    async def broken() -> Any:
        raise struct_error("unpack requires a buffer of 4 bytes")

    driver.read = broken  # a driver bug: nothing on the wire can make one on purpose
    await _held_after(run, 120.0)
    (alarm,) = _device_alarms(run, "bioreactor")
    assert "pv reading failed in the driver" in alarm.data["message"]
    gas_before, start = len(_readings(run, "gas")), run.clock.now()
    await run.clock.sleep(1800.0)
    assert run.clock.now() - start == pytest.approx(1800.0, abs=1.0)
    assert len(_readings(run, "gas")) - gas_before >= 29
    assert len(run.kinds("alarm")) == 1
    driver.read = healthy
    await run.clock.sleep(120.0)
    run.batch.command("restart", who="sam", why="driver fixed")
    assert await finished(run) is S.COMPLETE


def struct_error(message: str) -> Exception:
    import struct

    return struct.error(message)


def _fail_probe(run: Any, failed: bool) -> None:
    fault = SensorFault("stuck", 0.0, value=math.nan) if failed else None
    run.bench.twin.plant.bioreactor.set_sensor_fault("ph", fault)


async def test_a_restart_while_the_probe_still_fails_holds_the_batch_again(
    running: Any,  # noqa: F811 (the fixture of test_pump_cut_short)
) -> None:
    """A person restarts before the failed probe is replaced: the controller takes the
    restart's setpoints, but the first read after it still holds no number, and that raises
    the alarm again and holds, at each such restart. Before: the batch ran on with the
    bioreactor unread and only a ``no_answer`` per scan (no loop, no monitor on it). Once
    the probe reads true, a restart runs on. (A controller that stops answering is held
    by the restart itself: its setpoints cannot be re-established.)"""
    run = await running(CULTURE)
    await run.until_phase_running("culture")
    await run.clock.sleep(600.0)
    _fail_probe(run, True)
    await _held_after(run, 120.0)
    for attempt in (2, 3):
        await run.clock.sleep(300.0)
        run.batch.command("restart", who="sam", why="try it")
        async with run.clock.timeout(60.0):
            await run.until_state(S.RUNNING)
        await _held_after(run, 120.0)
        alarms = _device_alarms(run, "bioreactor")
        assert len(alarms) == attempt and "ph nan" in alarms[-1].data["message"]
    _fail_probe(run, False)
    await run.clock.sleep(120.0)
    (cleared,) = [e for e in run.kinds("alarm_cleared") if e.source == "bioreactor"]
    assert cleared.data["alarm"] == "device"
    run.batch.command("restart", who="sam", why="probe replaced")
    assert await finished(run) is S.COMPLETE
    assert len(_device_alarms(run, "bioreactor")) == 3
    _replays_identically(run)
