"""The twin's devices for outside clients: ``poc-twin twin serve``.

Same plant and same servers as a simulated bench (twin.serve.bench.TwinBench),
with what a person at a terminal needs on top: a fixed host and port for the
Modbus TCP devices (so a PLC or mbpoll can be pointed at it once), a seed of
their choosing, and a fault scenario running on the same clock. On the normal
event loop the clock is the real one, so clients see the plant in real time.
"""

from __future__ import annotations

from typing import Any

from twin.clock import Clock
from twin.serve.bench import SERVERS, TwinBench
from twin.serve.scenario import LoadedScenario
from twin.serve.scheduler import FaultScheduler, ScheduledEvent
from twin.sim import Inoculum, Plant

__all__ = ["LiveTwin", "endpoint_text"]


def endpoint_text(endpoint: dict[str, Any]) -> str:
    """``tcp://host:port`` or the serial device path a client opens."""
    if "host" in endpoint:
        return f"tcp://{endpoint['host']}:{endpoint['port']}"
    return str(endpoint["port"])


class LiveTwin(TwinBench):
    """A TwinBench with chosen TCP host/ports, an optional seed and an optional scenario."""

    def __init__(
        self,
        bench: Any,
        clock: Clock,
        *,
        seed: int | None = None,
        host: str = "127.0.0.1",
        modbus_port: int = 0,
        scenario: LoadedScenario | None = None,
        on_event: Any = None,
    ) -> None:
        super().__init__(bench, clock)
        if seed is not None:
            twin = bench.model.twin
            self.plant = Plant(
                seed=seed,
                inoculum=_inoculum(twin.inoculum),
                donor=twin.donor.profile(twin.inoculum.viability_pct),
            )
        self.host, self.modbus_port = host, modbus_port
        self.scenario = scenario
        self.on_event = on_event
        self.scheduler: FaultScheduler | None = None

    def device_types(self) -> dict[str, str]:
        """Equipment name -> equipment type of every device the twin serves."""
        equipment = self.bench.model.equipment
        return {n: b.type for n, b in equipment.items() if "twin" in b.config.values()}

    async def __aenter__(self) -> LiveTwin:
        if self.scenario is not None:
            self.scenario.check_devices(self.device_types())
        next_port = self.modbus_port
        try:
            for name, binding in self.bench.model.equipment.items():
                if "twin" not in binding.config.values():
                    continue
                device = SERVERS[binding.driver]
                server = device.factory(self.plant, self.clock, binding.config)
                if "host" in device.stand_in:  # a TCP device: listen where asked
                    server.host, server.port = self.host, next_port
                    next_port += 1 if next_port else 0
                await server.start()
                self.servers[name] = server
                self.endpoints[name] = device.endpoint(server)
            if self.scenario is not None:
                self.scheduler = FaultScheduler(
                    self.scenario.model,
                    plant=self.plant,
                    servers=self.servers,
                    clock=self.clock,
                    on_event=self._event,
                )
                self.scheduler.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    def _event(self, event: ScheduledEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    async def __aexit__(self, *exc: object) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
            self.scheduler = None
        await super().__aexit__(*exc)


def _inoculum(config: Any) -> Inoculum:
    return Inoculum(
        volume_ml=config.volume_ml,
        viable_cells_per_ml=config.viable_cells_per_ml,
        viability_pct=config.viability_pct,
    )
