"""Run the right kit on every device of a bench file: the twin's or a real bench, alike.

``device_factory`` opens one equipment item exactly as a batch would
(``twin.bench.open_bench``: the twin started if the bench has one, the driver
the bench names connected to its endpoint), only that item, so each check
starts from one connected device and nothing else on the bench is touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from twin.bench import LoadedBench, open_bench
from twin.clock import Clock
from twin.conformance.bioreactor import check_bioreactor
from twin.conformance.electroporator import check_electroporator
from twin.conformance.gas import check_gas_dispenser
from twin.conformance.kit import DeviceFactory
from twin.conformance.report import ConformanceReport

__all__ = ["KITS", "check_bench_equipment", "device_factory"]

KitFn = Callable[..., Awaitable[ConformanceReport]]

#: The kit for each equipment type a bench file can name.
KITS: dict[str, KitFn] = {
    "bioreactor": check_bioreactor,
    "gas_dispenser": check_gas_dispenser,
    "electroporator": check_electroporator,
}


def _only(bench: LoadedBench, name: str) -> LoadedBench:
    """The bench reduced to one equipment item (its twin, if any, serves only that one)."""
    equipment = {name: bench.model.equipment[name]}
    model = bench.model.model_copy(update={"equipment": equipment})
    return dataclasses.replace(bench, model=model, configs={name: bench.configs[name]})


def device_factory(bench: LoadedBench, name: str) -> DeviceFactory[Any]:
    """Opens equipment item ``name`` of ``bench`` (connected) and closes it on exit."""
    if name not in bench.model.equipment:
        known = ", ".join(sorted(bench.model.equipment))
        raise KeyError(f"bench {bench.model.bench} has no equipment '{name}' (has: {known})")
    single = _only(bench, name)

    @asynccontextmanager
    async def open_device() -> AsyncIterator[Any]:
        async with open_bench(single, Clock()) as opened:
            yield opened.equipment[name]

    return open_device


async def check_bench_equipment(bench: LoadedBench, name: str) -> ConformanceReport:
    """Run the kit of equipment item ``name``'s type against it."""
    kind = bench.model.equipment[name].type
    return await KITS[kind](device_factory(bench, name), device=name)
