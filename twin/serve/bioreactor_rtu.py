"""The twin's bioreactor controller over Modbus RTU (RS-485) on a pseudo-terminal.

Same controller, same register map (docs/devices/bioreactor-modbus.md) as the
TCP server: this subclass reuses every register rendering and write check of
:class:`BioreactorModbusServer` (its ``read``/``write``) and only swaps the
transport for pymodbus's ``ModbusSerialServer`` behind an :class:`RtuCable`,
which applies ``link`` (so the TCP server's own fault path is not used). On a multi-drop bus a
unit id nobody owns gets no answer at all (there is no gateway to say 0x0B).
"""

from __future__ import annotations

from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from twin.clock import Clock
from twin.serve import bioreactor_modbus as tcp
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.serve.faults import LinkFaults
from twin.serve.modbus_server import TABLE_OF_FUNCTION
from twin.serve.rtu_bus import RtuBus

__all__ = ["BioreactorRtuServer"]


class BioreactorRtuServer(BioreactorModbusServer):
    """One simulated bioreactor controller answering Modbus RTU; a driver opens ``.path``."""

    def __init__(
        self,
        plant: Any,
        clock: Clock,
        *,
        unit: int = 1,
        word_order: tcp.WordOrder = "big",
        baud: int = 19200,
        parity: str = "N",
        stopbits: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(plant, clock, unit=unit, word_order=word_order, **kwargs)
        self.baud, self.parity, self.stopbits = baud, parity, stopbits
        if not hasattr(self, "link"):  # the TCP server grows its own LinkFaults soon
            self.link = LinkFaults()
        self._bus = RtuBus(
            clock,
            self.link,
            baud=baud,
            parity=parity,
            stopbits=stopbits,
            functions=self.functions,
        )

    @property
    def path(self) -> str:
        """The serial port a driver opens."""
        if self._bus.driver_path is None:
            raise RuntimeError("bioreactor RTU server not started")
        return self._bus.driver_path

    def _sim_device(self) -> SimDevice:
        """pymodbus's SimDevice over the controller's own ``read``/``write`` (RegisterDevice)."""
        regs = DataType.REGISTERS
        return SimDevice(
            id=self.unit,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [
                    SimData(tcp.HR_TEMP_SP, count=tcp.HR_COMMAND + 1, datatype=regs),
                    SimData(tcp.HR_WORD_ORDER, datatype=regs),
                ],
                [
                    SimData(tcp.IR_PV_FLOATS, count=tcp.IR_PUMP_REMAINING + 1, datatype=regs),
                    SimData(tcp.IR_MIRRORS, count=8, datatype=regs),
                    SimData(tcp.IR_SAMPLE_SEQ, count=11, datatype=regs),
                    SimData(
                        tcp.IR_HARVEST_VOLUME,
                        count=tcp.IR_PUMP_RUNS + 1 - tcp.IR_HARVEST_VOLUME,
                        datatype=regs,
                    ),
                    SimData(tcp.IR_IDENTITY, count=4 * tcp.IDENTITY_REGS + 1, datatype=regs),
                ],
            ),
            action=self._rtu_action,
        )

    async def _rtu_action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        table = TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if values is not None:
            return self.write(table, address, [int(v) for v in values])
        result = self.read(table, address, count)
        if isinstance(result, ExcCodes):
            return result
        for i, value in enumerate(result):
            registers[address - start_address + i] = int(value)
        return None

    async def start(self) -> None:
        """Open the bus and answer requests for our unit id."""
        await self._bus.start([self._sim_device()])

    async def stop(self) -> None:
        """Stop answering and remove the port."""
        await self._bus.stop()
