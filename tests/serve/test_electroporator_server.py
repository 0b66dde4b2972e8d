"""docs/devices/electroporator-ascii.md holds: checked byte for byte with plain pyserial."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from serial_terminal import Terminal, make_plant

from twin.clock import Clock
from twin.serve.electroporator_ascii import ARM_TIMEOUT_S, ElectroporatorServer


@pytest.fixture
async def ep() -> AsyncIterator[tuple[Any, ElectroporatorServer]]:
    plant = make_plant()
    server = ElectroporatorServer(plant, Clock())
    await server.start()
    yield plant, server
    await server.stop()


@pytest.fixture
async def term(ep: tuple[Any, ElectroporatorServer]) -> AsyncIterator[Terminal]:
    t = Terminal(ep[1].path, 9600)
    yield t
    t.close()


async def say(term: Terminal, line: str) -> str:
    raw = await term.ask(line.encode() + b"\r\n", until=b"\r\n")
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == 1
    return raw[:-2].decode()


async def test_identity(term: Terminal) -> None:
    reply = await say(term, "*IDN?")
    assert reply == "OK poc-twin,EP-1 square-wave electroporator (twin),TW-EP-0001,1.0.0"
    assert await say(term, "*idn?") == reply  # command words are case-insensitive


async def test_documented_session(ep: tuple[Any, ElectroporatorServer], term: Terminal) -> None:
    plant = ep[0]
    assert await say(term, "STAT?") == "OK ARMED=0 LOADED=0.0 PROGRAMMED=0 FAULT=NONE"
    assert await say(term, "PROG?") == "OK PROG NONE"
    assert await say(term, "FIRE") == "ERR 20 not armed"
    assert await say(term, "ARM") == "ERR 21 chamber not loaded"
    assert await say(term, "LOAD 100") == "OK LOADED 100.0"
    assert plant.electroporator.loaded_ul == pytest.approx(100.0)
    assert await say(term, "LOAD 100") == "ERR 24 chamber not empty; UNLOAD first"
    assert await say(term, "ARM") == "ERR 22 no program set"
    assert await say(term, "PROG 500 20 1 2") == "OK PROG 500.0 20.0 1 2.00"
    assert await say(term, "PROG?") == "OK PROG 500.0 20.0 1 2.00"
    assert await say(term, "ARM") == "OK ARMED"
    assert (
        await say(term, "STAT?") == "OK ARMED=1 LOADED=100.0 PROGRAMMED=1 FAULT=E22 no program set"
    )
    assert await say(term, "PROG 600 20 1 2") == "ERR 23 program locked while armed"
    assert (
        await say(term, "STAT?")
        == "OK ARMED=0 LOADED=100.0 PROGRAMMED=1 FAULT=E23 program locked while armed"
    )
    assert await say(term, "PROG?") == "OK PROG 500.0 20.0 1 2.00"  # unchanged
    assert await say(term, "ARM") == "OK ARMED"
    assert await say(term, "UNLOAD") == "ERR 23 chamber locked while armed"
    assert await say(term, "ARM") == "OK ARMED"
    fired = await say(term, "FIRE")
    m = re.fullmatch(r"OK FIRED FIELD=(\d+\.\d) CURRENT=(\d+\.\d\d) PULSES=(\d+)", fired)
    assert m, fired
    assert float(m[1]) == pytest.approx(2500.0, rel=0.01)  # 500 V over 0.2 cm
    assert int(m[3]) == 1
    assert await say(term, "FIRE") == "ERR 20 not armed"  # one arm, one shot
    assert await say(term, "CLR") == "OK CLEARED"
    assert await say(term, "STAT?") == "OK ARMED=0 LOADED=100.0 PROGRAMMED=1 FAULT=NONE"
    assert await say(term, "UNLOAD") == "OK UNLOADED 100.0"
    assert await say(term, "UNLOAD") == "OK UNLOADED 0.0"
    assert await say(term, "DISARM") == "OK DISARMED"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("FOO", "ERR 10 unknown command FOO"),
        ("PROG 500 20 1", "ERR 11 PROG takes 4 argument(s)"),
        ("PROG 500 20 1.5 2", "ERR 11 pulse count must be an integer: 1.5"),
        ("PROG abc 20 1 2", "ERR 11 voltage is not a number: abc"),
        ("PROG 5000 20 1 2", "ERR 12 voltage 5000 V outside 0..3500"),
        ("PROG 0 20 1 2", "ERR 12 voltage 0 V must be above 0"),
        ("PROG 500 2 1 2", "ERR 12 pulse width 2 us outside 3..10000"),
        ("PROG 500 20 11 2", "ERR 12 pulse count 11  outside 1..10"),
        ("PROG 500 20 1 9", "ERR 12 gap 9 mm outside 0.5..4"),
        ("LOAD 5", "ERR 12 volume 5 uL outside 10..5000"),
        ("LOAD", "ERR 11 LOAD takes 1 argument(s)"),
        ("X" * 81, "ERR 11 line longer than 80 characters"),
    ],
)
async def test_refusals(term: Terminal, line: str, reply: str) -> None:
    assert await say(term, line) == reply


async def test_error_disarms_and_arm_lapses(term: Terminal) -> None:
    await say(term, "LOAD 50")
    await say(term, "PROG 500 20 1 2")
    assert await say(term, "ARM") == "OK ARMED"
    assert (await say(term, "BOGUS")).startswith("ERR 10")
    assert await say(term, "FIRE") == "ERR 20 not armed"
    assert await say(term, "ARM") == "OK ARMED"
    await Clock().sleep(ARM_TIMEOUT_S + 1.0)
    assert (await say(term, "STAT?")).startswith("OK ARMED=0 ")
    assert await say(term, "ARM") == "OK ARMED"
    await Clock().sleep(ARM_TIMEOUT_S + 1.0)
    assert await say(term, "FIRE") == "ERR 25 arm expired after 60 s"


async def test_bare_cr_is_accepted(term: Terminal) -> None:
    raw = await term.ask(b"DISARM\r", until=b"\r\n")
    assert raw == b"OK DISARMED\r\n"


async def test_overcurrent_aborts_and_latches(term: Terminal) -> None:
    await say(term, "LOAD 5000")
    await say(term, "PROG 3500 20 1 0.5")
    assert await say(term, "ARM") == "OK ARMED"
    reply = await say(term, "FIRE")
    assert reply.startswith("ERR 31 pulse aborted: overcurrent")
    stat = await say(term, "STAT?")
    assert stat.startswith("OK ARMED=0 LOADED=5000.0 PROGRAMMED=1 FAULT=E31 pulse aborted")
