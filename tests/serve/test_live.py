"""`poc-twin twin serve`: the twin's devices for outside clients (pymodbus, a serial terminal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from serial_terminal import Terminal

from twin.bench import load_bench
from twin.clock import Clock
from twin.errors import InvalidInput
from twin.serve.live import LiveTwin
from twin.serve.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SIM_BENCH = ROOT / "benches" / "sim.yaml"


async def test_outside_clients_read_the_same_plant_and_see_a_scenario() -> None:
    clock = Clock()
    scenario = load_scenario(ROOT / "hil_tests" / "scenarios" / "heater_failure.yaml")
    async with LiveTwin(load_bench(SIM_BENCH), clock, seed=3, scenario=scenario) as twin:
        endpoint = twin.endpoints["bioreactor"]
        client = AsyncModbusTcpClient(endpoint["host"], port=endpoint["port"], timeout=1.0)
        assert await client.connect()
        term = Terminal(twin.endpoints["gas"]["port"], 19200)
        try:
            ident = (await client.read_input_registers(100, count=8)).registers
            assert b"".join(r.to_bytes(2, "big") for r in ident).rstrip(b"\0") == b"poc-twin"
            frame = await term.ask(b"A\r", until=b"\r")
            assert frame.startswith(b"A +") and b" Air" in frame
            await clock.sleep_until(2 * 86400 + 3600)  # heater failed at day 2
            status = (await client.read_input_registers(16)).registers[0]
            assert status & (1 << 11)  # ALARM_HEATER
            assert [e.fault for e in twin.scheduler.log] == ["heater_failure"]  # type: ignore[union-attr]
        finally:
            term.close()
            client.close()


async def test_scenario_naming_an_unknown_device_is_refused_before_serving(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scenario: s\nfaults:\n  - {at: 0, device: pump, fault: silent}\n")
    with pytest.raises(InvalidInput, match="no device 'pump'"):
        async with LiveTwin(load_bench(SIM_BENCH), Clock(), scenario=load_scenario(path)):
            pass


def test_cli_prints_endpoints_and_serves_pymodbus_in_real_time() -> None:
    """The worked example of docs/twin/serve.md, as a user would run it."""
    exe = Path(sys.executable).with_name("poc-twin")
    proc = subprocess.Popen(
        [str(exe), "twin", "serve", "--bench", str(SIM_BENCH), "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving"):
                break
        bioreactor = next(ln for ln in lines if ln.startswith("bioreactor"))
        host, port = bioreactor.split("tcp://")[1].strip().rsplit(":", 1)
        assert any(ln.startswith("gas") and "/dev/pts/" in ln for ln in lines)
        with ModbusTcpClient(host, port=int(port), timeout=2.0) as client:
            assert client.read_input_registers(132).registers == [2]  # map version
    finally:
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
