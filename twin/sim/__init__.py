"""The twin's physical models: pure Python, no I/O, no clock reads, deterministic per seed.

A :class:`Plant` couples the gas dispenser, the rocking-bag bioreactor and the
electroporator; device servers call :meth:`Plant.advance_to` with the batch
clock's time before they read or write any model value.
"""

from twin.sim.bioreactor import BioreactorModel, BioreactorReading
from twin.sim.electroporator import (
    ElectroporatorModel,
    PulseOutcome,
    delivery_efficiency,
    pulse_survival,
)
from twin.sim.gas import GasDispenserModel, MassFlowController, MfcReading
from twin.sim.params import (
    BioreactorParams,
    ElectroporatorParams,
    GasParams,
    MfcSpec,
    PlantParams,
    SensorSpec,
)
from twin.sim.plant import Plant
from twin.sim.population import BioreactorState, CellSuspension, HarvestRecord, Inoculum
from twin.sim.reference import ReferenceRun, gas_mix, run_reference_process

__all__ = [
    "BioreactorModel",
    "BioreactorParams",
    "BioreactorReading",
    "BioreactorState",
    "CellSuspension",
    "ElectroporatorModel",
    "ElectroporatorParams",
    "GasDispenserModel",
    "GasParams",
    "HarvestRecord",
    "Inoculum",
    "MassFlowController",
    "MfcReading",
    "MfcSpec",
    "Plant",
    "PlantParams",
    "PulseOutcome",
    "ReferenceRun",
    "SensorSpec",
    "delivery_efficiency",
    "gas_mix",
    "pulse_survival",
    "run_reference_process",
]
