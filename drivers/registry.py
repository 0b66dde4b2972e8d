"""Which driver names a bench file may use, and what each one drives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from drivers.alicat_gas import AlicatGasConfig, AlicatGasDispenser
from drivers.ascii_electroporator import AsciiElectroporator, AsciiElectroporatorConfig
from drivers.bronkhorst_gas import BronkhorstGasConfig, BronkhorstGasDispenser
from drivers.modbus_bioreactor import (
    ModbusBioreactor,
    ModbusBioreactorConfig,
    ModbusRtuBioreactorConfig,
)

__all__ = ["DRIVERS", "DriverSpec"]


@dataclass(frozen=True)
class DriverSpec:
    """A driver class, its typed settings and the equipment interface it implements."""

    driver: Any
    config: type[BaseModel]
    equipment_type: str


DRIVERS: dict[str, DriverSpec] = {
    "modbus_tcp_bioreactor": DriverSpec(ModbusBioreactor, ModbusBioreactorConfig, "bioreactor"),
    "modbus_rtu_bioreactor": DriverSpec(ModbusBioreactor, ModbusRtuBioreactorConfig, "bioreactor"),
    "bronkhorst_gas": DriverSpec(BronkhorstGasDispenser, BronkhorstGasConfig, "gas_dispenser"),
    "alicat_gas": DriverSpec(AlicatGasDispenser, AlicatGasConfig, "gas_dispenser"),
    "ascii_electroporator": DriverSpec(
        AsciiElectroporator, AsciiElectroporatorConfig, "electroporator"
    ),
}
