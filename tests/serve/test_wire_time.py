"""Time on the wire: a serial exchange costs its character time on the batch clock."""

from __future__ import annotations

import pytest
from serial_terminal import Terminal

from twin.clock import Clock
from twin.serve.alicat import AlicatServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.serve.wire import bits_per_char, wire_time_s
from twin.sim import Plant

pytestmark = pytest.mark.usefixtures("no_task_leaks")


def test_ten_register_rtu_read_at_19200_8e1_takes_22_9_ms() -> None:
    """Issue 4: 8-byte request + 25-byte reply + two 3.5-character gaps at 11 bits/char."""
    assert wire_time_s(8, 25, 19200, 11, rtu=True) == pytest.approx(0.0229, abs=5e-5)
    assert wire_time_s(8, 25, 19200, 10) == pytest.approx(33 * 10 / 19200)


def test_framings_count_start_parity_and_stop_bits() -> None:
    assert [bits_per_char(f) for f in ("8N1", "8E1", "8O1", "8N2")] == [10, 11, 11, 11]
    with pytest.raises(ValueError, match="unknown serial framing"):
        bits_per_char("9X3")


def test_rtu_gap_is_fixed_above_19200_baud() -> None:
    """Modbus over Serial Line 2.5.1.1: t3.5 = 1.75 ms above 19200 baud."""
    assert wire_time_s(8, 25, 115200, 11, rtu=True) == pytest.approx(33 * 11 / 115200 + 2 * 0.00175)


@pytest.mark.parametrize("baud", [9600, 19200, 115200])
async def test_alicat_poll_costs_its_characters_at_the_configured_baud(
    plant: Plant, clock: Clock, baud: int
) -> None:
    server = AlicatServer(plant, clock, baud=baud)
    await server.start()
    term = Terminal(server.path, baud)
    try:
        t0 = clock.now()
        reply = await term.ask(b"A\r", until=b"\r")
        elapsed = clock.now() - t0
    finally:
        term.close()
        await server.stop()
    assert elapsed == pytest.approx((2 + len(reply)) * 10 / baud, rel=1e-9)
    assert elapsed > 0.002  # a ~50-character frame is never instant


async def test_8e1_line_is_a_tenth_slower_than_8n1(plant: Plant, clock: Clock) -> None:
    times = {}
    for framing in ("8N1", "8E1"):
        server = ElectroporatorServer(plant, clock, baud=9600, framing=framing)
        await server.start()
        term = Terminal(server.path, 9600)
        try:
            t0 = clock.now()
            await term.ask(b"*IDN?\r\n", until=b"\r\n")
            times[framing] = clock.now() - t0
        finally:
            term.close()
            await server.stop()
    assert times["8E1"] == pytest.approx(times["8N1"] * 1.1)
