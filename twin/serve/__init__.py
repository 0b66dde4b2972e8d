"""The twin's devices on the wire: servers that speak each device's documented protocol."""

from twin.serve.bioreactor_modbus import (
    DEFAULT_BIOREACTOR_IDENTITY,
    BioreactorCommand,
    BioreactorModbusServer,
    BioreactorStatus,
)

__all__ = [
    "DEFAULT_BIOREACTOR_IDENTITY",
    "BioreactorCommand",
    "BioreactorModbusServer",
    "BioreactorStatus",
]
