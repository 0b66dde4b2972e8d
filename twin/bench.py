"""Bench files: which device fills each equipment role, through which driver and endpoint.

A bench is the one place where the world is chosen. A bench with a ``twin``
section starts the twin's simulated devices on loopback ports and
pseudo-terminals and fills every config value written as ``twin`` with the
endpoint the twin actually serves; the same drivers then talk to them over
the same protocols as they would to real devices.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drivers.registry import DRIVERS, DriverSpec
from twin.clock import Clock
from twin.errors import EquipmentError, InvalidInput, Problem
from twin.sourcemap import SourceMap, load_yaml, problems_from_validation, validate_document

__all__ = [
    "Bench",
    "CheckResult",
    "EquipmentBinding",
    "LoadedBench",
    "OpenBench",
    "check_bench",
    "load_bench",
    "open_bench",
]

TWIN = "twin"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EquipmentBinding(_Strict):
    """One equipment item of the bench: its kind, its driver and the driver's settings."""

    type: Literal["bioreactor", "gas_dispenser", "electroporator"]
    driver: str
    config: dict[str, Any] = Field(default_factory=dict)


class Inoculum(_Strict):
    """The starting material the twin's bag holds (on a real bench, the patient's cells)."""

    #: Within a rocking bag's working volume (the bioreactor's 50-1000 mL by default).
    volume_ml: float = Field(100.0, gt=0, le=1000.0)
    #: Up to 1e8 cells/mL: far above any culture (a T-cell expansion ends near 1e7).
    viable_cells_per_ml: float = Field(1.0e6, gt=0, le=1.0e8)
    viability_pct: float = Field(95.0, gt=0, le=100)


class Donor(_Strict):
    """Whose cells the twin's bag holds: drawn by a donor seed (``seed``), or a donor
    profile from the apheresis data (any trait given overrides the drawn or reference
    donor's). Traits and their distributions: twin/sim/donor.py, docs/twin.md."""

    seed: int | None = None
    growth_potential: float | None = Field(None, gt=0, le=5.0)
    division_capacity: float | None = Field(None, gt=0, le=20.0)
    transduction_ceiling: float | None = Field(None, ge=0, le=1.0)
    death_factor: float | None = Field(None, gt=0, le=20.0)
    starting_viability_pct: float | None = Field(None, gt=0, le=100.0)
    cd4_fraction: float | None = Field(None, ge=0, le=1.0)

    def profile(self, inoculum_viability_pct: float | None = None) -> Any:
        """The :class:`twin.sim.donor.DonorProfile` these settings describe. Without a donor
        seed the reference donor starts at the inoculum's viability (the bench says it)."""
        from twin.sim.donor import REFERENCE_DONOR, draw_donor

        base = REFERENCE_DONOR if self.seed is None else draw_donor(self.seed)
        if self.seed is None and inoculum_viability_pct is not None:
            base = dataclasses.replace(base, starting_viability_pct=inoculum_viability_pct)
        given = {k: v for k, v in self.model_dump().items() if k != "seed" and v is not None}
        return dataclasses.replace(base, **given)


class TwinSection(_Strict):
    """Present on a simulated bench: start the twin and seed its noise."""

    seed: int = 0
    #: ``loopback``: the devices on loopback TCP ports and pseudo-terminals, as a real
    #: bench's devices are reached; ``in_process``: on null modems in this process (the
    #: same drivers, protocols and wire time; no socket or pty), for ensembles.
    transport: Literal["loopback", "in_process"] = "loopback"
    inoculum: Inoculum = Field(default_factory=Inoculum)
    #: The reference donor unless a donor seed or profile is given.
    donor: Donor = Field(default_factory=Donor)


class Bench(_Strict):
    """A bench file."""

    bench: str
    description: str = ""
    clock: Literal["virtual", "wall"] = "wall"
    #: The site's time zone (an IANA name): the day a lot's expiry date ends is the site's.
    timezone: str = "UTC"
    development: bool = False
    twin: TwinSection | None = None
    equipment: dict[str, EquipmentBinding] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name[:60]!r}: give an IANA name such as Europe/London"
            ) from None
        return name


@dataclass(frozen=True)
class LoadedBench:
    """A validated bench with its driver settings parsed."""

    path: Path
    model: Bench
    source: SourceMap
    configs: dict[str, BaseModel]

    @property
    def virtual_clock(self) -> bool:
        return self.model.clock == "virtual"

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone (dates on labels are the site's dates)."""
        return ZoneInfo(self.model.timezone)

    def spec(self, name: str) -> DriverSpec:
        return DRIVERS[self.model.equipment[name].driver]


def _placeholder(config: dict[str, Any], endpoint: dict[str, Any]) -> dict[str, Any]:
    """Fill values written as ``twin`` with the endpoint the twin serves (or will serve)."""
    return {
        key: endpoint.get(key, value) if value == TWIN else value for key, value in config.items()
    }


def _parse_configs(
    model: Bench, source: SourceMap, endpoints: dict[str, dict[str, Any]] | None
) -> dict[str, BaseModel]:
    problems: list[Problem] = []
    configs: dict[str, BaseModel] = {}
    for name, binding in model.equipment.items():
        spec = DRIVERS.get(binding.driver)
        if spec is None:
            known = ", ".join(sorted(DRIVERS))
            problems.append(
                source.problem(
                    ["equipment", name, "driver"],
                    f"unknown driver '{binding.driver}' (known: {known})",
                )
            )
            continue
        if spec.equipment_type != binding.type:
            problems.append(
                source.problem(
                    ["equipment", name, "driver"],
                    f"driver '{binding.driver}' drives a {spec.equipment_type}, "
                    f"not a {binding.type}",
                )
            )
            continue
        uses_twin = TWIN in binding.config.values()
        if uses_twin and model.twin is None:
            problems.append(
                source.problem(
                    ["equipment", name, "config"],
                    "config says 'twin' but the bench has no twin section",
                )
            )
            continue
        endpoint: dict[str, Any] = {}
        if uses_twin:
            from twin.serve.bench import SERVERS, in_process

            device = SERVERS.get(binding.driver)
            if device is None:
                problems.append(
                    source.problem(
                        ["equipment", name, "driver"],
                        f"the twin has no device that speaks '{binding.driver}'",
                    )
                )
                continue
            stand_in = device.stand_in
            if in_process(model.twin):
                offered = sorted(d for d, s in SERVERS.items() if s.in_process is not None)
                if device.in_process_stand_in is None:
                    problems.append(
                        source.problem(
                            ["equipment", name, "driver"],
                            f"the twin serves '{binding.driver}' only over the wire "
                            f"(transport: loopback); in process it offers {', '.join(offered)}",
                        )
                    )
                    continue
                stand_in = device.in_process_stand_in
            endpoint = endpoints[name] if endpoints is not None else stand_in
        try:
            configs[name] = spec.config.model_validate(_placeholder(binding.config, endpoint))
        except ValidationError as exc:
            inner = problems_from_validation(
                exc, _Shifted(source, ["equipment", name, "config"]), [spec.config]
            )
            problems.extend(inner)
    if not problems:
        problems.extend(_bus_problems(model, source, configs))
    if problems:
        raise InvalidInput(problems)
    return configs


def _bus_problems(model: Bench, source: SourceMap, configs: dict[str, BaseModel]) -> list[Problem]:
    """Two devices on one unit id of one bus, or one port opened with two line settings."""
    problems: list[Problem] = []
    seen: dict[str, tuple[str, tuple[object, ...]]] = {}  # bus -> (first user, line settings)
    units: dict[str, dict[object, str]] = {}  # bus -> unit -> its first user
    for name, config in configs.items():
        if TWIN in model.equipment[name].config.values():
            continue  # the twin serves every such device on an endpoint of its own
        claims = getattr(config, "claims", lambda: [])()
        for claim in claims:
            where = ["equipment", name, "config", *claim.loc]
            first = seen.setdefault(claim.bus, (name, claim.line))
            if first[1] != claim.line:
                problems.append(
                    source.problem(
                        ["equipment", name, "config"],
                        f"{claim.bus} is also used by '{first[0]}' with other line settings "
                        f"({_line(first[1])} here {_line(claim.line)}): one port, one setting",
                    )
                )
                break
            users = units.setdefault(claim.bus, {})
            if claim.unit is None:  # the device owns the whole port
                others = {n for n in users.values() if n != name}
            elif None in users:
                others = {users[None]} - {name}
            else:
                others = {users[claim.unit]} - {name} if claim.unit in users else set()
            if others:
                what = "the whole port" if claim.unit is None else f"unit {claim.unit}"
                problems.append(
                    source.problem(
                        where, f"{what} on {claim.bus} is already taken by '{min(others)}'"
                    )
                )
                continue
            users[claim.unit] = name
    return problems


def _line(line: tuple[object, ...]) -> str:
    return " ".join(str(x) for x in line)


class _Shifted(SourceMap):
    """A source map for a sub-document (a driver's config block)."""

    def __init__(self, base: SourceMap, prefix: list[str]) -> None:
        super().__init__(base.file, base.root)
        self._prefix = prefix

    def position(self, loc: Any, *, key: bool = False) -> tuple[int, int]:
        return super().position([*self._prefix, *loc], key=key)


def load_bench(path: Path | str) -> LoadedBench:
    """Parse and check a bench file; every problem as FILE:LINE:COL."""
    path = Path(path)
    data, source = load_yaml(path)
    model = validate_document(Bench, data, source, [Bench, EquipmentBinding, TwinSection, Inoculum])
    return LoadedBench(path, model, source, _parse_configs(model, source, None))


def with_donor_seed(bench: LoadedBench, donor_seed: int | None) -> LoadedBench:
    """The bench with its twin's donor drawn by ``donor_seed`` (``run --donor-seed``);
    traits the bench gives still override. Unchanged without a twin."""
    if donor_seed is None or bench.model.twin is None:
        return bench
    donor = bench.model.twin.donor.model_copy(update={"seed": donor_seed})
    twin = bench.model.twin.model_copy(update={"donor": donor})
    return dataclasses.replace(bench, model=bench.model.model_copy(update={"twin": twin}))


def with_seed(bench: LoadedBench, seed: int | None) -> LoadedBench:
    """The bench with its twin's seed replaced (``run --seed``); unchanged without a twin."""
    if seed is None or bench.model.twin is None or bench.model.twin.seed == seed:
        return bench
    twin = bench.model.twin.model_copy(update={"seed": seed})
    return dataclasses.replace(bench, model=bench.model.model_copy(update={"twin": twin}))


@dataclass
class OpenBench:
    """A bench whose devices are connected (and, on a twin bench, served)."""

    bench: LoadedBench
    equipment: dict[str, Any]
    twin: Any = None  # the running twin (plant and servers) on a simulated bench


@contextlib.asynccontextmanager
async def open_bench(
    bench: LoadedBench, clock: Clock, *, twin_keep: Path | None = None, twin_restore: bool = False
) -> AsyncIterator[OpenBench]:
    """Start the twin if the bench has one, connect every driver, close all on exit.

    ``twin_keep`` / ``twin_restore``: where the twin keeps its plant, and whether to start
    from it (a resumed batch); a real bench ignores both, its plant keeps itself.
    """
    async with contextlib.AsyncExitStack() as stack:
        configs = bench.configs
        twin = None
        if bench.model.twin is not None:
            from twin.serve.bench import TwinBench

            twin = await stack.enter_async_context(
                TwinBench(bench, clock, keep=twin_keep, restore=twin_restore)
            )
            configs = _parse_configs(bench.model, bench.source, twin.endpoints)
        equipment: dict[str, Any] = {}
        failures: list[str] = []
        for name, config in configs.items():
            spec = bench.spec(name)
            driver = spec.driver(name, config, clock)
            try:
                await driver.connect()
            except EquipmentError as exc:
                failures.append(str(exc))
                continue
            stack.push_async_callback(driver.close)
            equipment[name] = driver
        if failures:
            raise EquipmentError(
                "bench " + bench.model.bench, "could not connect: " + "; ".join(failures)
            )
        yield OpenBench(bench, equipment, twin)


@dataclass(frozen=True)
class CheckResult:
    """One device's answer to a bench check."""

    name: str
    ok: bool
    identity: str = ""
    status: str = ""
    reading: str = ""
    error: str = ""
    counters: dict[str, int] = field(default_factory=dict)  # the link's traffic during the check


async def _probe(name: str, driver: Any) -> CheckResult:
    def counters() -> dict[str, int]:
        c = getattr(driver, "counters", None)
        return c.as_dict() if c is not None else {}

    try:
        await driver.connect()
        try:
            ident = await driver.identify()
            status = getattr(driver, "status", None)
            state = _brief(await status()) if status is not None else "answering"
            reading = await driver.read() if hasattr(driver, "read") else None
        finally:
            await driver.close()
    except EquipmentError as exc:
        return CheckResult(name, False, status="no answer", error=str(exc), counters=counters())
    who = f"{ident.vendor} {ident.model} s/n {ident.serial} fw {ident.firmware}"
    return CheckResult(
        name,
        True,
        identity=who,
        status=state,
        reading=_brief(reading) if reading is not None else "",
        counters=counters(),
    )


def _brief(reading: Any) -> str:
    from twin.engine.context import as_record

    record = as_record(reading)
    if not isinstance(record, dict):
        return str(record)
    return ", ".join(f"{k}={v}" for k, v in record.items())


async def check_bench(bench: LoadedBench) -> list[CheckResult]:
    """Probe every device: identity, then one reading or status (commissioning)."""
    clock = Clock()
    async with contextlib.AsyncExitStack() as stack:
        configs = bench.configs
        if bench.model.twin is not None:
            from twin.serve.bench import TwinBench

            twin = await stack.enter_async_context(TwinBench(bench, clock))
            configs = _parse_configs(bench.model, bench.source, twin.endpoints)
        results = []
        for name, config in configs.items():
            results.append(await _probe(name, bench.spec(name).driver(name, config, clock)))
        return results
