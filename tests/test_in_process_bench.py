"""An in-process bench (``twin.transport: in_process``): the same drivers and protocols over
null modems, journalling what the same batch journals over loopback TCP and ptys."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bedside import BAG, PATIENT
from pymodbus.transport import NULLMODEM_HOST

from drivers import null_modem
from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.serial_line import open_line
from twin.bench import check_bench, load_bench, open_bench, with_donor_seed
from twin.clock import Clock, run_batch_loop
from twin.errors import CommunicationError, InvalidInput
from twin.journal import Event
from twin.recipe import load_recipe
from twin.runner import run_batch_async
from twin.serve.alicat import AlicatServer
from twin.serve.memory_line import MemoryLineEndpoint
from twin.serve.wire import wire_time_s
from twin.sim import Plant

ROOT = Path(__file__).resolve().parent.parent
IN_PROCESS = ROOT / "benches" / "sim-in-process.yaml"


def _run(recipe: Any, bench_path: Path, seed: int, donor_seed: int | None) -> list[Event]:
    bench = with_donor_seed(load_bench(bench_path), donor_seed)
    events: list[Event] = []
    run_batch_loop(
        lambda: run_batch_async(
            recipe,
            bench,
            None,
            batch_id="b",
            operator="x",
            seed=seed,
            subscribers=[events.append],
            patient_id=PATIENT,  # the product recipes confirm the chain of identity:
            bag_id=BAG,
            bedside_after_s=600.0,  # the twin's person at the bag scans 10 min after asked
        ),
        virtual=True,
        pace=None,
    )
    return events


def _by_instant(events: list[Event]) -> dict[float, Counter[tuple[str, str, str]]]:
    """What was journalled at each batch time: two tasks acting in one instant may take
    their turns in another order on another carrier; what they did may not differ."""
    out: dict[float, Counter[tuple[str, str, str]]] = {}
    for e in events:
        if e.kind == "batch_started":  # names its own bench file
            continue
        record = (e.kind, e.source, json.dumps(e.data, sort_keys=True))
        out.setdefault(e.batch_time, Counter())[record] += 1
    return out


@pytest.mark.parametrize(
    ("recipe", "donor_seed"),
    [("smoke.yaml", None), ("car_t_nonviral.yaml", None), ("car_t_autologous.yaml", 3)],
)
def test_in_process_batch_journals_what_the_wire_batch_journals(
    recipe: str, donor_seed: int | None
) -> None:
    """Same seed, same donor: every reading, setpoint, transition and outcome alike."""
    loaded = load_recipe(ROOT / "recipes" / recipe)
    wire = _run(loaded, ROOT / "benches" / "sim.yaml", seed=7, donor_seed=donor_seed)
    memory = _run(loaded, IN_PROCESS, seed=7, donor_seed=donor_seed)
    assert len(memory) == len(wire) > 500
    assert _by_instant(memory) == _by_instant(wire)
    assert memory[-1].kind == "batch_ended" and memory[-1].data == wire[-1].data


async def test_in_process_twin_opens_no_socket_and_no_pty() -> None:
    bench = load_bench(IN_PROCESS)
    before = set(os.listdir("/proc/self/fd"))
    async with open_bench(bench, Clock()) as opened:
        endpoints = opened.twin.endpoints
        during = set(os.listdir("/proc/self/fd"))
        assert await opened.equipment["gas"].read()
    assert endpoints["bioreactor"]["host"] == NULLMODEM_HOST
    assert endpoints["gas"]["port"].startswith("memory://")
    assert endpoints["electroporator"]["port"].startswith("memory://")
    assert during == before  # no file descriptor for any device


async def test_bench_check_reads_every_in_process_device() -> None:
    results = await check_bench(load_bench(IN_PROCESS))
    assert [r.ok for r in results] == [True, True, True], results
    assert "mass_flow_sccm" in results[1].reading


async def _gas_on_a_null_modem(clock: Clock) -> tuple[AlicatServer, AlicatGasDispenser]:
    """The twin's Alicat unit on a null modem and its driver, connected (9600 baud)."""
    server = AlicatServer(Plant(seed=1), clock, baud=9600, line=MemoryLineEndpoint)
    await server.start()
    config = AlicatGasConfig.model_validate({"port": server.path, "baud": 9600})
    gas = AlicatGasDispenser("gas", config, clock)
    await gas.connect()
    return server, gas


async def test_an_exchange_takes_its_wire_time_as_on_a_pty() -> None:
    clock = Clock()
    server, gas = await _gas_on_a_null_modem(clock)
    try:
        t0 = clock.now()
        line = gas.serial_line
        assert line is not None
        reply = await line.transact(b"A\r", device="gas", timeout=1.0)
        took = clock.now() - t0
    finally:
        await gas.close()
        await server.stop()
    assert reply.startswith(b"A ")
    assert took == pytest.approx(wire_time_s(2, len(reply), 9600, 10), rel=1e-9)


@pytest.mark.parametrize("late_by", [0.1, 0.0], ids=["after", "with"])
async def test_a_reply_due_after_or_with_the_timeout_times_out_as_on_a_pty(
    late_by: float,
) -> None:
    """The reply is handed over without a timer only when nothing comes first: the driver's
    deadline does, so a reply due after it, or at the deadline itself, is not taken (counted
    as a timeout), as when the driver's timer stood on the clock before the device's."""
    clock = Clock()
    server, gas = await _gas_on_a_null_modem(clock)
    try:
        line = gas.serial_line
        assert line is not None
        reply = await line.transact(b"A\r", device="gas", timeout=1.0)
        server.link.delay_s = 0.2 + late_by - wire_time_s(2, len(reply), 9600, 10)
        t0 = clock.now()
        with pytest.raises(CommunicationError, match=r"no reply within 0\.2 s"):
            await line.transact(b"A\r", device="gas", timeout=0.2)
        assert clock.now() - t0 == pytest.approx(0.2)
    finally:
        await gas.close()
        await server.stop()


async def test_a_reply_in_time_leaves_no_timer_on_the_clock() -> None:
    """The driver arms its deadline's timer only when the reply is not in by the end of its
    write: a null modem's answer in time costs no timer."""
    clock = Clock()
    server, gas = await _gas_on_a_null_modem(clock)
    loop = asyncio.get_running_loop()
    try:
        line = gas.serial_line
        assert line is not None
        armed = len(loop._scheduled)  # type: ignore[attr-defined]
        reply = await line.transact(b"A\r", device="gas", timeout=1.0)
        assert reply.startswith(b"A ")
        assert len(loop._scheduled) <= armed  # type: ignore[attr-defined]
    finally:
        await gas.close()
        await server.stop()


@pytest.mark.parametrize(("rest_after", "completes"), [(0.1, True), (0.3, False)])
async def test_a_reply_in_pieces_on_a_null_modem_completes_or_times_out(
    rest_after: float, completes: bool
) -> None:
    """Half the reply within the write, the rest later: the driver arms its timer after the
    write and takes the reply if the rest comes before its deadline (else a timeout that
    quotes the part that came)."""
    loop = asyncio.get_running_loop()
    clock = Clock()

    def answer(data: bytes) -> None:
        device.write(b"A +014")
        loop.call_later(rest_after, device.write, b".70\r")

    device = null_modem.listen("pieces", answer)
    config = AlicatGasConfig.model_validate({"port": device.path, "baud": 9600})
    line = open_line(config.port, baud=9600, clock=clock)
    try:
        t0 = clock.now()
        if completes:
            assert await line.transact(b"A\r", device="gas", timeout=0.2) == b"A +014.70\r"
            assert clock.now() - t0 == pytest.approx(rest_after)
        else:
            with pytest.raises(CommunicationError, match=r"within 0\.2 s \(partial b'A \+014'\)"):
                await line.transact(b"A\r", device="gas", timeout=0.2)
            assert clock.now() - t0 == pytest.approx(0.2)
    finally:
        line.release()
        device.close()


async def test_a_memory_port_nobody_serves_is_refused_like_a_missing_device() -> None:
    config = AlicatGasConfig.model_validate({"port": "memory://nothing-here"})
    with pytest.raises(CommunicationError, match="no device listens on memory://nothing-here"):
        await AlicatGasDispenser("gas", config, Clock()).connect()


async def test_a_memory_port_is_opened_by_one_driver_at_a_time() -> None:
    device = null_modem.listen("t", lambda data: None)
    try:
        null_modem.connect(device.path, lambda data: None)
        with pytest.raises(null_modem.NullModemError, match="already open"):
            null_modem.connect(device.path, lambda data: None)
    finally:
        device.close()


def test_a_device_the_twin_serves_only_over_the_wire_is_refused_in_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        "bench: t\nclock: virtual\ntwin: {transport: in_process}\nequipment:\n"
        "  bioreactor:\n    type: bioreactor\n    driver: modbus_rtu_bioreactor\n"
        "    config: {port: twin}\n"
    )
    with pytest.raises(InvalidInput) as err:
        load_bench(path)
    (problem,) = err.value.problems
    assert str(problem).startswith(f"{path}:7:")
    assert "serves 'modbus_rtu_bioreactor' only over the wire" in str(problem)
    assert "alicat_gas" in str(problem)  # what it does offer in process


def test_a_null_modem_line_splits_requests_as_a_pty_line_does() -> None:
    """The shortcut for a whole request line leaves the endpoint as the general splitter does."""
    rng = random.Random(3)
    pieces = [b"A", b"B", b"\r", b"\n", b"x", b"\x00"]
    for _ in range(3000):
        max_line = rng.choice([1, 2, 5, 64])
        fast, general = (MemoryLineEndpoint(lambda line: None, max_line=max_line) for _ in "ab")
        fast._answer_next = general._answer_next = lambda: None  # type: ignore[method-assign]
        ends = (fast, general)
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.5:
                data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            else:
                data = b"".join(rng.choice(pieces[:2]) for _ in range(rng.randint(0, 7))) + b"\r"
            fast._received(data)
            general._take(data)
            state = [(list(e._lines), bytes(e._inbuf), e._skipped, e._lead) for e in ends]
            assert state[0] == state[1], data
