"""docs/devices/gas-dispenser-alicat.md holds: checked byte for byte with plain pyserial."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from serial_terminal import Terminal, make_plant

from twin.clock import Clock
from twin.equipment import Gas
from twin.serve.alicat import AlicatServer

FRAME = re.compile(
    rb"^(?P<uid>[A-Z]) (?P<p>[+-]\d{3}\.\d{2}) (?P<t>[+-]\d{3}\.\d{2}) (?P<vol>[+-]\d{3}\.\d{2})"
    rb" (?P<mass>[+-]\d{3}\.\d{2}) (?P<sp>[+-]\d{3}\.\d{2}) (?P<gas>Air|CO2|N2|O2)"
    rb"(?P<flags>( [A-Z]{3})*)\r$"
)


@pytest.fixture
async def alicat() -> AsyncIterator[tuple[Any, AlicatServer]]:
    plant = make_plant()
    server = AlicatServer(plant, Clock())
    await server.start()
    yield plant, server
    await server.stop()


@pytest.fixture
async def term(alicat: tuple[Any, AlicatServer]) -> AsyncIterator[Terminal]:
    t = Terminal(alicat[1].path, 19200)
    yield t
    t.close()


def frame(raw: bytes) -> re.Match[bytes]:
    m = FRAME.match(raw)
    assert m, f"not a data frame: {raw!r}"
    return m


async def test_poll_every_default_unit(term: Terminal) -> None:
    for uid, gas in [("A", b"Air"), ("B", b"O2"), ("C", b"N2"), ("D", b"CO2")]:
        m = frame(await term.ask(f"{uid}\r".encode(), until=b"\r"))
        assert m["uid"] == uid.encode()
        assert m["gas"] == gas
        assert float(m["sp"]) == 0.0
        assert 13.0 < float(m["p"]) < 16.5  # about one atmosphere, psia


async def test_setpoint_echoed_in_the_frame_and_reached(
    alicat: tuple[Any, AlicatServer], term: Terminal
) -> None:
    m = frame(await term.ask(b"AS123.45\r", until=b"\r"))
    assert float(m["sp"]) == pytest.approx(123.45, abs=0.005)
    m = frame(await term.ask(b"BS 50\r", until=b"\r"))  # the spaced form too
    assert float(m["sp"]) == 50.0
    await Clock().sleep(1.0)  # ~7 ms time constant: settled long before
    m = frame(await term.ask(b"A\r", until=b"\r"))
    assert float(m["mass"]) == pytest.approx(123.45, abs=2.0)
    assert alicat[0].gas.mfcs["A"].setpoint_sccm == pytest.approx(123.45)


async def test_setpoint_above_full_scale_is_clamped(term: Terminal) -> None:
    m = frame(await term.ask(b"DS80\r", until=b"\r"))  # CO2 line is 50 sccm full scale
    assert float(m["sp"]) == 50.0


async def test_gas_select(alicat: tuple[Any, AlicatServer], term: Terminal) -> None:
    for n, name in [(8, b"N2"), (4, b"CO2"), (11, b"O2"), (0, b"Air")]:
        m = frame(await term.ask(f"AG{n}\r".encode(), until=b"\r"))
        assert m["gas"] == name
    assert alicat[0].gas.mfcs["A"].gas == Gas.AIR
    assert await term.ask(b"AG7\r", until=b"\r") == b"A ?\r"


async def test_hold_closes_the_valve_and_cancel_restores(
    alicat: tuple[Any, AlicatServer], term: Terminal
) -> None:
    await term.ask(b"AS200\r", until=b"\r")
    m = frame(await term.ask(b"AHC\r", until=b"\r"))
    assert m["flags"].split() == [b"HLD"]
    assert float(m["sp"]) == 200.0  # the commanded setpoint stays visible
    await Clock().sleep(1.0)
    m = frame(await term.ask(b"A\r", until=b"\r"))
    assert float(m["mass"]) == pytest.approx(0.0, abs=1.0)
    assert b"HLD" in m["flags"]
    m = frame(await term.ask(b"AS150\r", until=b"\r"))  # stored, valve stays held
    assert b"HLD" in m["flags"] and float(m["sp"]) == 150.0
    m = frame(await term.ask(b"AC\r", until=b"\r"))
    assert m["flags"] == b""
    await Clock().sleep(1.0)
    m = frame(await term.ask(b"A\r", until=b"\r"))
    assert float(m["mass"]) == pytest.approx(150.0, abs=2.0)


async def test_identity_is_four_m_lines(term: Terminal) -> None:
    raw = await term.ask(b"B??M*\r", until=b"\r", lines=4)
    lines = raw.split(b"\r")[:-1]
    assert [ln[:5] for ln in lines] == [b"B M00", b"B M01", b"B M02", b"B M03"]
    assert lines[0] == b"B M00 poc-twin"
    assert lines[1] == b"B M01 MC-200SCCM-D"


async def test_errors_and_silence(term: Terminal) -> None:
    assert await term.ask(b"AX\r", until=b"\r") == b"A ?\r"
    assert await term.ask(b"ASabc\r", until=b"\r") == b"A ?\r"
    with pytest.raises(TimeoutError):  # nobody owns unit Q: no answer at all
        await term.ask(b"Q\r", until=b"\r", timeout=0.5)
    with pytest.raises(TimeoutError):  # noise is dropped
        await term.ask(b"\xff\xfe\r", until=b"\r", timeout=0.5)
    frame(await term.ask(b"A\r\n", until=b"\r"))  # CR LF works: LF is dropped
    frame(await term.ask(b"\r\r\nA\r", until=b"\r"))  # empty lines are ignored


async def test_terminal_closing_does_not_break_the_port(
    alicat: tuple[Any, AlicatServer], term: Terminal
) -> None:
    term.close()
    again = Terminal(alicat[1].path, 19200)
    try:
        frame(await again.ask(b"C\r", until=b"\r"))
    finally:
        again.close()


async def test_stop_removes_the_pty() -> None:
    server = AlicatServer(make_plant(), Clock())
    await server.start()
    path = server.path
    assert os.path.exists(path)
    await server.stop()
    assert not os.path.exists(path) or not os.access(path, os.R_OK | os.W_OK)
    with pytest.raises(RuntimeError):
        _ = server.path


@pytest.mark.parametrize("seed", [1, 2])
def test_frame_numbers_are_written_alike_whether_met_before_or_not(seed: int) -> None:
    """A frame's numbers come from a table of values met before: each must be what the
    format writes (a signed zero, NaN and values past the table's size included)."""
    import math
    import random

    from twin.serve.alicat import _FIELDS_MAX, _field

    rng = random.Random(seed)
    values = [round(rng.uniform(-999.0, 999.0), 2) for _ in range(_FIELDS_MAX + 500)]
    values += [0.0, -0.0, -1e-9, 1e-9, math.nan, math.inf, 14.695, 1234.5]
    for _ in range(2):  # the second pass answers from the table
        for value in values:
            assert _field(value) == f"{value:+07.2f}"
