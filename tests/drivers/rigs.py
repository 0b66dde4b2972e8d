"""Every driver with the twin server that speaks its protocol, built the same way for fault tests.

A rig is one protocol end to end: the twin's server (its ``link`` is the fault
switchboard), a connected driver and one cheap probe exchange. The fault tests
run every fault on every rig, so a new protocol gets the whole suite by adding
one entry here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.ascii_electroporator import AsciiElectroporator, AsciiElectroporatorConfig
from drivers.bronkhorst_gas import BronkhorstGasConfig, BronkhorstGasDispenser
from drivers.modbus_bioreactor import (
    ModbusBioreactor,
    ModbusBioreactorConfig,
    ModbusRtuBioreactorConfig,
)
from twin.clock import Clock
from twin.serve.alicat import AlicatServer
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.serve.bioreactor_rtu import BioreactorRtuServer
from twin.serve.bronkhorst_mfc import BronkhorstServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.sim import Plant

__all__ = ["RIGS", "Rig", "build"]

POLICY = {"timeout_s": 0.5, "retries": 2}


@dataclass
class Rig:
    """A running server, a connected driver and the probe a poll loop would make."""

    server: Any
    driver: Any
    probe: Callable[[], Awaitable[Any]]

    async def close(self) -> None:
        await self.driver.close()
        await self.server.stop()


def _probe(driver: Any) -> Callable[[], Awaitable[Any]]:
    return driver.read if hasattr(driver, "read") else driver.status


async def build(kind: str, plant: Plant, clock: Clock, **policy: Any) -> Rig:
    """Start the twin server of ``kind`` and connect its driver (policy overrides allowed)."""
    policy = {**POLICY, **policy}
    if kind == "bioreactor-tcp":
        server: Any = BioreactorModbusServer(plant, clock)
        await server.start()
        driver: Any = ModbusBioreactor(
            "BR-TCP", ModbusBioreactorConfig(host=server.host, port=server.port, **policy), clock
        )
    elif kind == "bioreactor-rtu":
        server = BioreactorRtuServer(plant, clock)
        await server.start()
        driver = ModbusBioreactor(
            "BR-RTU", ModbusRtuBioreactorConfig(port=server.path, **policy), clock
        )
    elif kind == "bronkhorst":
        server = BronkhorstServer(plant, clock)
        await server.start()
        driver = BronkhorstGasDispenser(
            "GAS-BH", BronkhorstGasConfig(port=server.path, **policy), clock
        )
    elif kind == "alicat":
        server = AlicatServer(plant, clock)
        await server.start()
        driver = AlicatGasDispenser("GAS-AL", AlicatGasConfig(port=server.path, **policy), clock)
    elif kind == "electroporator":
        server = ElectroporatorServer(plant, clock)
        await server.start()
        driver = AsciiElectroporator(
            "EP", AsciiElectroporatorConfig(port=server.path, **policy), clock
        )
    else:
        raise ValueError(kind)
    try:
        await driver.connect()
    except BaseException:
        await driver.close()
        await server.stop()
        raise
    return Rig(server, driver, _probe(driver))


RIGS = ["bioreactor-tcp", "bioreactor-rtu", "bronkhorst", "alicat", "electroporator"]
