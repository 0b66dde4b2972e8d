"""The serial-line kits (garbage, overlong lines, missing terminators) pass on the twin's ASCII
devices over the drivers the bench names, are skipped for a Modbus line, and fail a device that
answers noise, echoes it or goes silent on an overlong line (a kit that cannot fail proves
nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conformance_rigs import bench

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.ascii_electroporator import AsciiElectroporator, AsciiElectroporatorConfig
from twin.clock import Clock
from twin.conformance import Verdict, device_factory
from twin.conformance.electroporator import check_electroporator_line
from twin.conformance.gas import check_gas_line
from twin.serve.alicat import AlicatServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.sim import Plant

EP_CHECKS = [
    "garbage refused, next command answered",
    "overlong line refused, next command answered",
    "request waits for its terminator",
]
GAS_CHECKS = [
    "line noise unanswered, next poll answered",
    "overlong line unanswered, next poll answered",
    "request waits for its CR",
]


async def test_twin_electroporator_passes_the_line_kit() -> None:
    report = await check_electroporator_line(device_factory(bench("sim.yaml"), "electroporator"))
    assert report.passed and not report.skipped, report.text()
    assert [c.name for c in report.checks] == EP_CHECKS
    assert report.checks[1].detail == (
        "1000 characters: ERR 11 line longer than 80 characters; *IDN? answered after"
    )


async def test_twin_alicat_line_passes_the_line_kit() -> None:
    report = await check_gas_line(device_factory(bench("sim.yaml"), "gas"))
    assert report.passed and not report.skipped, report.text()
    assert [c.name for c in report.checks] == GAS_CHECKS


async def test_a_modbus_gas_line_skips_the_line_kit() -> None:
    report = await check_gas_line(device_factory(bench("sim-rtu.yaml"), "gas"))
    assert report.skipped == report.checks
    assert {c.detail for c in report.checks} == {
        "the device does not talk ASCII over a serial line"
    }


# --- devices that misbehave on the line ----------------------------------------------------


class AnswersNoise(AlicatServer):
    """An Alicat line whose unit A answers '?' to whatever it cannot parse, noise included."""

    def _handle(self, line: bytes) -> bytes | None:
        reply = super()._handle(line)
        return reply if reply is not None else b"A ?\r"


class EchoesGarbage(ElectroporatorServer):
    """An electroporator that echoes a bad line back in its error (bytes no reply may hold)."""

    def _handle(self, line: bytes) -> bytes | None:
        if any(not 0x20 <= b < 0x7F for b in line):
            return b"ERR 10 unknown command " + line + b"\r\n"
        return super()._handle(line)


class SilentOnOverlong(ElectroporatorServer):
    """An electroporator that drops an overlong line without the ERR 11 the doc asks for."""

    def _handle(self, line: bytes) -> bytes | None:
        return None if len(line) > 80 else super()._handle(line)


def _opener(server_type: type, driver: Callable[[str], Any]) -> Any:
    @asynccontextmanager
    async def open_device() -> AsyncIterator[Any]:
        server = server_type(Plant(seed=5), Clock())
        await server.start()
        device = driver(server.path)
        try:
            await device.connect()
            yield device
        finally:
            await device.close()
            await server.stop()

    return open_device


def _ep(path: str) -> AsciiElectroporator:
    return AsciiElectroporator("EP-X", AsciiElectroporatorConfig(port=path), Clock())


def _gas(path: str) -> AlicatGasDispenser:
    return AlicatGasDispenser("GAS-X", AlicatGasConfig(port=path), Clock())


async def test_a_line_that_answers_noise_fails_the_noise_checks() -> None:
    report = await check_gas_line(_opener(AnswersNoise, _gas), device="GAS-X")
    assert [c.name for c in report.failures] == GAS_CHECKS[:2]
    assert report.failures[0].detail == "answered line noise b'\\x00\\xff\\r' with b'A ?\\r'"
    assert report.verdict_of("request waits for its CR") is Verdict.PASSED


@pytest.mark.parametrize(
    ("server", "failed", "detail"),
    [
        pytest.param(
            EchoesGarbage,
            EP_CHECKS[0],
            "b'\\x00\\xff' answered b'ERR 10 unknown command \\x00\\xff\\r\\n', "
            "expected ERR 11 <text>",
            id="echoes-garbage",
        ),
        pytest.param(
            SilentOnOverlong,
            EP_CHECKS[1],
            "no answer to b'XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX': every request gets one "
            "reply (ERR 11)",
            id="silent-on-overlong",
        ),
    ],
)
async def test_an_electroporator_that_mishandles_bad_lines_fails_that_check(
    server: type, failed: str, detail: str
) -> None:
    report = await check_electroporator_line(_opener(server, _ep), device="EP-X")
    assert [(c.name, c.detail) for c in report.failures] == [(failed, detail)], report.text()
