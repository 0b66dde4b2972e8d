"""Start the twin for a simulated bench: one plant, one server per equipment item.

Each equipment item of the bench whose driver settings say ``twin`` gets the
twin device that speaks that driver's protocol, on a free loopback port or a
new pseudo-terminal; ``endpoints`` tells the bench what to put in their place.

A bench whose twin says ``transport: in_process`` gets the same devices on
null modems instead (pymodbus' in-process Modbus host, and ``memory://`` serial
ports, :mod:`drivers.null_modem`): the same drivers, protocols, framing and
wire time, no socket and no pty. That is how ensembles run thousands of batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymodbus.transport import NULLMODEM_HOST

from twin.clock import Clock
from twin.equipment import Gas
from twin.serve.alicat import AlicatServer
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.serve.bioreactor_rtu import BioreactorRtuServer
from twin.serve.bronkhorst_mfc import BronkhorstServer
from twin.serve.electroporator_ascii import ElectroporatorServer
from twin.serve.keeping import PlantKeeper, restore_plant
from twin.serve.memory_line import MemoryLineEndpoint
from twin.sim import Inoculum, Plant

__all__ = ["SERVERS", "TwinBench", "TwinDevice", "in_process"]

ServerFactory = Callable[[Plant, Clock, dict[str, Any]], Any]


def _modbus_bioreactor(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    return BioreactorModbusServer(
        plant,
        clock,
        host="127.0.0.1",
        port=0,
        unit=int(config.get("unit", 1)),
        word_order=str(config.get("word_order", "big")),
    )


_null_modem_ports = itertools.count(1)  # pymodbus' null-modem listeners are named by number


def _modbus_bioreactor_in_process(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    return BioreactorModbusServer(
        plant,
        clock,
        host=NULLMODEM_HOST,
        port=next(_null_modem_ports),
        unit=int(config.get("unit", 1)),
        word_order=str(config.get("word_order", "big")),
    )


def _line(config: dict[str, Any]) -> dict[str, Any]:
    """The serial line settings the bench asks for (the twin's port answers with the same)."""
    return {
        "baud": int(config.get("baud", 19200)),
        "parity": str(config.get("parity", "N")),
        "stopbits": int(config.get("stopbits", 1)),
    }


def _rtu_bioreactor(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    return BioreactorRtuServer(
        plant,
        clock,
        unit=int(config.get("unit", 1)),
        word_order=str(config.get("word_order", "big")),  # type: ignore[arg-type]
        **_line(config),
    )


def _bronkhorst(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    units = config.get("units") or {"air": 1, "o2": 2, "n2": 3, "co2": 4}
    mapped = {plant.gas.mfc_for(Gas[str(g).upper()]).unit_id: int(u) for g, u in units.items()}
    return BronkhorstServer(plant, clock, units=mapped, **_line(config))


def _framing(config: dict[str, Any]) -> str:
    """``8N1``-style framing of a bench's serial settings: the twin charges its wire time."""
    return f"8{config.get('parity', 'N')}{config.get('stopbits', 1)}"


def _alicat(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    return AlicatServer(plant, clock, baud=int(config.get("baud", 19200)), framing=_framing(config))


def _alicat_in_process(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    baud = int(config.get("baud", 19200))
    return AlicatServer(plant, clock, baud=baud, framing=_framing(config), line=MemoryLineEndpoint)


def _electroporator(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    return ElectroporatorServer(
        plant, clock, baud=int(config.get("baud", 9600)), framing=_framing(config)
    )


def _electroporator_in_process(plant: Plant, clock: Clock, config: dict[str, Any]) -> Any:
    baud = int(config.get("baud", 9600))
    return ElectroporatorServer(
        plant, clock, baud=baud, framing=_framing(config), line=MemoryLineEndpoint
    )


def _tcp_endpoint(server: Any) -> dict[str, Any]:
    return {"host": server.host, "port": server.port}


def _serial_endpoint(server: Any) -> dict[str, Any]:
    return {"port": server.path}


@dataclass(frozen=True)
class TwinDevice:
    """How the twin serves one driver's protocol, and where a driver then finds it."""

    factory: ServerFactory
    endpoint: Callable[[Any], dict[str, Any]]
    #: What the endpoint will look like, to validate a bench before the twin runs.
    stand_in: dict[str, Any]
    #: The same device on a null modem (``transport: in_process``); None: not offered.
    in_process: ServerFactory | None = None
    in_process_stand_in: dict[str, Any] | None = None


_TCP = {"host": "127.0.0.1", "port": 1}
_PTY = {"port": "/dev/pts/twin"}
_NULL_TCP = {"host": NULLMODEM_HOST, "port": 1}
_NULL_LINE = {"port": "memory://twin"}

#: For each driver name, the twin device that answers it.
SERVERS: dict[str, TwinDevice] = {
    "modbus_tcp_bioreactor": TwinDevice(
        _modbus_bioreactor, _tcp_endpoint, _TCP, _modbus_bioreactor_in_process, _NULL_TCP
    ),
    "modbus_rtu_bioreactor": TwinDevice(_rtu_bioreactor, _serial_endpoint, _PTY),
    "bronkhorst_gas": TwinDevice(_bronkhorst, _serial_endpoint, _PTY),
    "alicat_gas": TwinDevice(_alicat, _serial_endpoint, _PTY, _alicat_in_process, _NULL_LINE),
    "ascii_electroporator": TwinDevice(
        _electroporator, _serial_endpoint, _PTY, _electroporator_in_process, _NULL_LINE
    ),
}


def in_process(twin: Any) -> bool:
    """Whether a bench's twin section asks for its devices in this process (null modems)."""
    return getattr(twin, "transport", "loopback") == "in_process"


class TwinBench:
    """The running twin of a bench: its plant and its device servers."""

    def __init__(
        self, bench: Any, clock: Clock, *, keep: Path | None = None, restore: bool = False
    ) -> None:
        """``keep``: file the plant is kept in (see :mod:`twin.serve.keeping`); ``restore``:
        start from it (a resumed batch) instead of from the bench's inoculum."""
        twin = bench.model.twin
        self.bench = bench
        self.clock = clock
        if restore and keep is not None and keep.exists():
            self.plant = restore_plant(keep, twin.seed)
        else:
            self.plant = Plant(
                seed=twin.seed,
                inoculum=Inoculum(
                    volume_ml=twin.inoculum.volume_ml,
                    viable_cells_per_ml=twin.inoculum.viable_cells_per_ml,
                    viability_pct=twin.inoculum.viability_pct,
                ),
                donor=twin.donor.profile(twin.inoculum.viability_pct),
            )
        self.keeper = PlantKeeper(self.plant, keep, clock) if keep is not None else None
        self.servers: dict[str, Any] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> TwinBench:
        if self.keeper is not None:
            self.keeper.start()
        try:
            for name, binding in self.bench.model.equipment.items():
                if "twin" not in binding.config.values():
                    continue
                device = SERVERS[binding.driver]
                factory = device.in_process if in_process(self.bench.model.twin) else device.factory
                if factory is None:  # the bench validator refuses this before we get here
                    raise ValueError(f"the twin has no in-process {binding.driver} device")
                server = factory(self.plant, self.clock, binding.config)
                if self.keeper is not None and hasattr(server, "on_request"):
                    server.on_request = self.keeper.heard  # the bag's changes are kept
                await server.start()
                self.servers[name] = server
                self.endpoints[name] = device.endpoint(server)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in reversed(list(self.servers.values())):
            await server.stop()
        self.servers.clear()
        if self.keeper is not None:
            await self.keeper.stop()
