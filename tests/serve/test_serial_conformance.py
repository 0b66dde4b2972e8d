"""The serial servers keep answering correctly after garbage, overlong lines, missing terminators
and floods (issue 18), over real ptys with plain pyserial, as their device docs say:

- electroporator (docs/devices/electroporator-ascii.md): a line with a byte outside printable
  ASCII, or longer than 80 characters, gets ``ERR 11`` (never an echo of the bytes); a blank
  line gets nothing;
- Alicat (docs/devices/gas-dispenser-alicat.md): such a line (limit 64) is line noise, and on
  a multi-drop bus nobody answers line noise;
- Bronkhorst (docs/devices/gas-dispenser-bronkhorst.md) speaks Modbus RTU, not lines: garbage
  on the bus is dropped and the next good frame is answered.

Then Hypothesis throws generated lines at each ASCII server (bounded: see ``FUZZ``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import string
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serial_terminal import Terminal, make_plant

from twin.clock import Clock
from twin.serve.alicat import AlicatServer
from twin.serve.bronkhorst_mfc import BronkhorstServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.serve.pty import MAX_OUTPUT, MAX_QUEUED

EP_CHAR_S = 10 / 9600  # 8N1: seconds per character on the wire
GAS_CHAR_S = 10 / 19200
IDN = b"OK poc-twin,EP-1 square-wave electroporator (twin),TW-EP-0001,1.0.0\r\n"
TOO_LONG = b"ERR 11 line longer than 80 characters\r\n"
A_IDENTITY = b"A M00 poc-twin\rA M01 MC-500SCCM-D\rA M02 TWA00500\rA M03 10v05-twin\r"

#: Every reply the electroporator may send: OK and data, or a documented error code and text.
EP_REPLY = re.compile(rb"(OK( [ -~]+)?|ERR (10|11|12|20|21|22|23|24|25|30|31) [ -~]+)\r\n")
#: Every reply an Alicat unit may send: its data frame, its ``?``, or an identity line.
GAS_REPLY = re.compile(
    rb"[A-D] (\?|M0[0-3] [ -~]+|([+-]\d{3}\.\d{2} ){5}(Air|CO2|N2|O2)( [A-Z]{3})*)\r"
)

#: CI runs a fixed, derandomized 300 cases per property (about 2 s for both servers);
#: FUZZ_EXAMPLES=5000 FUZZ_RANDOM=1 for a longer hunt.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=2000,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def send(term: Terminal, data: bytes) -> None:
    """Write everything, waiting whenever the pty is full (a 1 MB write must not block the
    loop the server runs on)."""
    loop = asyncio.get_running_loop()
    fd = term.serial.fileno()
    view = memoryview(data)
    while view:
        with contextlib.suppress(BlockingIOError):
            view = view[os.write(fd, view) :]
        if view:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


async def read_bytes(term: Terminal, n: int, timeout: float) -> bytes:
    """Exactly ``n`` bytes (a binary frame has no terminator to wait for)."""
    loop = asyncio.get_running_loop()
    fd = term.serial.fileno()
    out = b""
    async with asyncio.timeout(timeout):
        while len(out) < n:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            out += term.serial.read(n - len(out))
    return out


async def nothing_more(term: Terminal, until: bytes, timeout: float = 0.5) -> None:
    """No further reply arrives within ``timeout`` (batch seconds)."""
    with pytest.raises(TimeoutError):
        extra = await term.read(until=until, timeout=timeout)
        pytest.fail(f"unexpected reply {extra!r}")


@pytest.fixture
async def ep() -> AsyncIterator[tuple[ElectroporatorServer, Terminal]]:
    server = ElectroporatorServer(make_plant(), Clock())
    await server.start()
    term = Terminal(server.path, 9600)
    yield server, term
    term.close()
    await server.stop()


@pytest.fixture
async def gas() -> AsyncIterator[tuple[Any, AlicatServer, Terminal]]:
    plant = make_plant()
    server = AlicatServer(plant, Clock())
    await server.start()
    term = Terminal(server.path, 19200)
    yield plant, server, term
    term.close()
    await server.stop()


# --- electroporator ------------------------------------------------------------------------

GARBAGE = [
    pytest.param(b"\x00", 1, id="NUL"),
    pytest.param(b"\xff\xfe", 1, id="0xFF"),
    pytest.param("DISARMÉ".encode(), 7, id="non-ASCII"),
    pytest.param(b"ARMX\x08\x08", 5, id="backspace"),  # a terminal's erase is not an edit
    pytest.param(b"*IDN?\x00", 6, id="command-then-NUL"),
    pytest.param(b"\x1b[A", 1, id="escape-sequence"),
    pytest.param(b"PROG?\nFIRE", 6, id="LF-inside-a-line"),
    pytest.param(b"\x7f", 1, id="DEL"),
]


@pytest.mark.parametrize(("garbage", "column"), GARBAGE)
async def test_ep_garbage_gets_err_11_and_the_next_command_its_answer(
    ep: tuple[ElectroporatorServer, Terminal], garbage: bytes, column: int
) -> None:
    _, term = ep
    raw = await term.ask(garbage + b"\r\n*IDN?\r\n", until=b"\r\n", lines=2)
    bad = next(b for b in garbage if not 0x20 <= b < 0x7F)
    assert raw == (
        f"ERR 11 character 0x{bad:02X} at column {column} is not printable ASCII\r\n".encode() + IDN
    )
    stat = await term.ask(b"STAT?\r\n", until=b"\r\n")  # the fault names it, printable
    assert stat.endswith(
        f"FAULT=E11 character 0x{bad:02X} at column {column} is not printable ASCII\r\n".encode()
    )


async def test_ep_blank_lines_get_no_reply(ep: tuple[ElectroporatorServer, Terminal]) -> None:
    """Lone CR, LF, CR LF and lines of spaces are not requests: only *IDN? is answered."""
    _, term = ep
    blank = b"\r" + b"\n" + b"\r\n\r\n" + b"\n\r" + b"   \r\n" + b" \r"
    assert await term.ask(blank + b"*IDN?\r\n", until=b"\r\n") == IDN
    await nothing_more(term, b"\r\n")


@pytest.mark.parametrize("length", [81, 10_000, 1_000_000])
async def test_ep_overlong_line_is_discarded_with_err_11(
    ep: tuple[ElectroporatorServer, Terminal], length: int
) -> None:
    """Up to its terminator, however long, in pieces as a pty delivers it; the server keeps
    at most 81 bytes of it."""
    server, term = ep
    await send(term, b"X" * length)
    await nothing_more(term, b"\r\n")  # not answered before its terminator
    assert len(server._endpoint._inbuf) <= 81
    await send(term, b"\r\n*IDN?\r\n")
    wire = (length + 2 + len(TOO_LONG)) * EP_CHAR_S
    assert await term.read(until=b"\r\n", lines=2, timeout=wire + 2.0) == TOO_LONG + IDN


async def test_ep_an_overlong_line_of_spaces_is_overlong_not_blank(
    ep: tuple[ElectroporatorServer, Terminal],
) -> None:
    _, term = ep
    assert await term.ask(b" " * 200 + b"\r\n*IDN?\r\n", until=b"\r\n", lines=2) == TOO_LONG + IDN


async def test_ep_the_tail_of_an_overlong_line_is_not_a_command(
    ep: tuple[ElectroporatorServer, Terminal],
) -> None:
    """A command that follows 2,000 bytes without a terminator is still part of that line."""
    _, term = ep
    await send(term, b"Y" * 2000)
    await nothing_more(term, b"\r\n")
    await send(term, b"*IDN?\r\n")
    assert await term.read(until=b"\r\n", timeout=5.0) == TOO_LONG
    assert await term.ask(b"*IDN?\r\n", until=b"\r\n") == IDN


async def test_ep_a_request_waits_for_its_terminator(
    ep: tuple[ElectroporatorServer, Terminal],
) -> None:
    """Not answered early, not answered twice; what follows a missing terminator joins it."""
    _, term = ep
    await send(term, b"*IDN?")
    await nothing_more(term, b"\r\n", timeout=2.0)
    await send(term, b"\r\n")
    assert await term.read(until=b"\r\n") == IDN
    await send(term, b"STAT?")
    await send(term, b"*IDN?\r\n")
    assert await term.read(until=b"\r\n") == b"ERR 10 unknown command STAT?*IDN?\r\n"
    await nothing_more(term, b"\r\n")
    assert await term.ask(b"*IDN?\r", until=b"\r\n") == IDN


async def test_ep_a_burst_is_answered_in_order_one_reply_each(
    ep: tuple[ElectroporatorServer, Terminal],
) -> None:
    _, term = ep
    requests = [b"*IDN?", b"PROG?", b"FOO", b"\x00", b"X" * 81, b"CLR"] * 40
    burst = b"".join(r + b"\r\n" for r in requests)
    raw = await term.ask(burst, until=b"\r\n", lines=len(requests), timeout=60.0)
    replies = raw.split(b"\r\n")[:-1]
    expected = [
        IDN[:-2],
        b"OK PROG NONE",
        b"ERR 10 unknown command FOO",
        b"ERR 11 character 0x00 at column 1 is not printable ASCII",
        TOO_LONG[:-2],
        b"OK CLEARED",
    ] * 40
    assert replies == expected


async def test_ep_a_flood_is_held_back_not_queued(
    ep: tuple[ElectroporatorServer, Terminal],
) -> None:
    """5,000 requests written while the host reads nothing: the server stops reading (the
    writer waits, as behind flow control) instead of queueing them all and their replies;
    once the host reads, every request is answered, in order."""
    server, term = ep
    endpoint = server._endpoint
    clock = Clock()
    writer = asyncio.create_task(send(term, b"*IDN?\r\n" * 5000))
    most_lines = most_out = 0
    for _ in range(200):  # 100 s of batch time, far longer than the replies need to pile up
        await clock.sleep(0.5)
        most_lines = max(most_lines, len(endpoint._lines))
        most_out = max(most_out, len(endpoint._outbuf))
    assert not writer.done()  # held back
    assert most_lines <= MAX_QUEUED + 4096 // 7  # what waited, plus one read
    assert most_out <= MAX_OUTPUT + len(IDN)
    raw = await term.read(until=b"\r\n", lines=5000, timeout=5000 * 80 * EP_CHAR_S + 10.0)
    await writer
    assert raw == IDN * 5000


# --- Alicat --------------------------------------------------------------------------------

NOISE = [
    pytest.param(b"A\x00", id="NUL"),
    pytest.param(b"AS\xff50", id="0xFF"),
    pytest.param("AS5é".encode(), id="non-ASCII"),
    pytest.param(b"AS99\x08\x08", id="backspace"),
    pytest.param(b"A\nS5", id="LF-inside-a-line"),  # once set air to 5 sccm
    pytest.param(b"AS" + b"1" * 70, id="overlong-setpoint"),  # once set air to full scale
    pytest.param(b"A" + b" " * 64, id="overlong-poll"),
    pytest.param(b"\x1b[A", id="escape-sequence"),
]


@pytest.mark.parametrize("noise", NOISE)
async def test_alicat_line_noise_gets_no_reply_and_changes_nothing(
    gas: tuple[Any, AlicatServer, Terminal], noise: bytes
) -> None:
    plant, _, term = gas
    raw = await term.ask(noise + b"\rA\r", until=b"\r")
    assert GAS_REPLY.fullmatch(raw) and raw.startswith(b"A +")
    assert raw.split()[5] == b"+000.00"  # the setpoint is untouched
    await nothing_more(term, b"\r")
    assert plant.gas.mfcs["A"].setpoint_sccm == 0.0


@pytest.mark.parametrize("length", [65, 9_000, 1_000_000])
async def test_alicat_overlong_line_is_discarded_unanswered(
    gas: tuple[Any, AlicatServer, Terminal], length: int
) -> None:
    """Not even its last few hundred bytes are taken for a request of unit A."""
    _, server, term = gas
    await send(term, b"A" * length)
    await nothing_more(term, b"\r")
    assert len(server._endpoint._inbuf) <= 65
    await send(term, b"\rA??M*\r")
    wire = (length + 7 + len(A_IDENTITY)) * GAS_CHAR_S
    assert await term.read(until=b"\r", lines=4, timeout=wire + 2.0) == A_IDENTITY
    await nothing_more(term, b"\r")


async def test_alicat_the_tail_of_an_overlong_line_is_not_a_command(
    gas: tuple[Any, AlicatServer, Terminal],
) -> None:
    _, _, term = gas
    await send(term, b"Z" * 2000)
    await nothing_more(term, b"\r")
    await send(term, b"A??M*\r")  # ends the 2,005-byte line: noise, unanswered
    await nothing_more(term, b"\r", timeout=2.0)
    assert await term.ask(b"A??M*\r", until=b"\r", lines=4) == A_IDENTITY


async def test_alicat_a_request_waits_for_its_cr(gas: tuple[Any, AlicatServer, Terminal]) -> None:
    _, _, term = gas
    await send(term, b"A??M*")
    await nothing_more(term, b"\r", timeout=2.0)
    await send(term, b"\r")
    assert await term.read(until=b"\r", lines=4) == A_IDENTITY
    await send(term, b"B")  # a poll of B without its CR becomes the start of the next line
    await send(term, b"A\r")
    assert await term.read(until=b"\r") == b"B ?\r"
    await nothing_more(term, b"\r")


async def test_alicat_a_burst_is_answered_in_order_one_reply_each(
    gas: tuple[Any, AlicatServer, Terminal],
) -> None:
    _, _, term = gas
    requests = [b"A", b"B\x00", b"C", b"Q", b"DX", b"A" * 65, b"B"] * 40
    raw = await term.ask(b"\r".join(requests) + b"\r", until=b"\r", lines=4 * 40, timeout=60.0)
    replies = raw.split(b"\r")[:-1]
    assert [r[:1] + (r[1:3] if r.endswith(b"?") else b"") for r in replies] == [
        b"A",
        b"C",
        b"D ?",
        b"B",
    ] * 40
    assert all(GAS_REPLY.fullmatch(r + b"\r") for r in replies)


# --- Bronkhorst (Modbus RTU) ---------------------------------------------------------------


def _crc(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def _read_fluid(unit: int) -> bytes:
    body = bytes([unit, 3, 0x00, 0x22, 0x00, 0x01])  # FLUID, one register
    return body + _crc(body)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\xff\r\n*IDN?\r\n", id="ascii-and-binary"),
        pytest.param(bytes(range(256)) * 4, id="every-byte"),
        pytest.param(b"\x01\x03" * 3000, id="6000-byte-frame-heads"),
        pytest.param(b"X" * 10_000, id="10kB"),
    ],
)
async def test_bronkhorst_garbage_on_the_bus_then_a_good_frame_is_answered(garbage: bytes) -> None:
    """RTU frames end with 3.5 silent characters; after garbage and that gap, the next frame
    is answered by its unit (Air 0 on unit 1, O2 11 on unit 2)."""
    server = BronkhorstServer(make_plant(), Clock())
    await server.start()
    term = Terminal(server.path, 19200)
    clock = Clock()
    try:
        await send(term, garbage)
        await clock.sleep(len(garbage) * GAS_CHAR_S + 0.05)  # the garbage's own wire time
        term.serial.reset_input_buffer()
        for unit, fluid in ((1, 0), (2, 11)):
            await send(term, _read_fluid(unit))
            body = bytes([unit, 3, 2, 0, fluid])
            assert await read_bytes(term, 7, timeout=1.0) == body + _crc(body)
    finally:
        term.close()
        await server.stop()


# --- fuzzing -------------------------------------------------------------------------------

_WORDS = [
    b"*IDN?", b"STAT?", b"PROG", b"PROG?", b"LOAD", b"UNLOAD", b"ARM", b"FIRE", b"DISARM",
    b"CLR", b"500", b"20", b"1", b"2", b"1e308", b"nan", b"-0", b"A", b"B", b"S", b"G8", b"HC",
    b"C", b"??M*", b"?", b" ", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\x08", b"\x1b[A",
    "é".encode(),
]  # fmt: skip

#: A fuzzed input: command words, numbers, terminators, control and non-ASCII bytes, random
#: bytes and text, and overlong runs, in any order.
fuzz_bytes = st.lists(
    st.one_of(
        st.sampled_from(_WORDS),
        st.sampled_from([b"\r", b"\r\n", b"\n"]),  # many lines per example
        st.binary(max_size=24),
        st.text(alphabet=string.printable, max_size=24).map(str.encode),
        st.integers(60, 3000).map(lambda n: b"X" * n),
    ),
    max_size=12,
).map(b"".join)


async def _drain(term: Terminal, until: bytes, within: float) -> list[bytes]:
    """Every reply that arrives within ``within`` batch seconds."""
    replies = []
    while True:
        try:
            replies.append(await term.read(until=until, timeout=within))
        except TimeoutError:
            return replies


@FUZZ
@given(data=fuzz_bytes)
async def test_fuzzed_lines_never_break_the_electroporator(
    ep: tuple[ElectroporatorServer, Terminal], data: bytes
) -> None:
    """At most one well-formed reply per line, and *IDN? answered right afterwards."""
    _, term = ep
    term.serial.reset_input_buffer()
    term._buf.clear()
    await send(term, data + b"\r\n")
    replies = await _drain(term, b"\r\n", within=(len(data) + 200) * EP_CHAR_S + 0.5)
    assert len(replies) <= data.count(b"\r") + 1
    assert all(EP_REPLY.fullmatch(r) for r in replies), replies
    assert term._buf == b""  # nothing but whole lines
    assert await term.ask(b"*IDN?\r\n", until=b"\r\n") == IDN


@FUZZ
@given(data=fuzz_bytes)
async def test_fuzzed_lines_never_break_the_alicat_line(
    gas: tuple[Any, AlicatServer, Terminal], data: bytes
) -> None:
    """Only well-formed replies (frames, ``?``, identity lines), and A??M* answered after."""
    _, _, term = gas
    term.serial.reset_input_buffer()
    term._buf.clear()
    await send(term, data + b"\r")
    replies = await _drain(term, b"\r", within=(len(data) + 200) * GAS_CHAR_S + 0.5)
    assert len(replies) <= 4 * (data.count(b"\r") + 1)
    assert all(GAS_REPLY.fullmatch(r) for r in replies), replies
    assert term._buf == b""
    assert await term.ask(b"A??M*\r", until=b"\r", lines=4) == A_IDENTITY
