"""Every device of the bench conforms to its equipment interface (twin.conformance kits).

The kits that the unit tests run against the twin run here against whatever the
bench names: on a real bench they read, write back and refuse on the real
devices (putting back every setpoint they found), before any recipe is trusted
to them. One test per equipment item; the report of each appears in the HIL
summary and in the ``--hil-report`` file.
"""

from __future__ import annotations

import dataclasses

from twin.bench import LoadedBench
from twin.clock import run_batch_loop
from twin.conformance import ConformanceReport, check_bench_equipment


def with_seed(bench: LoadedBench, seed: int | None) -> LoadedBench:
    """The bench with the run's seed for its twin (a real bench has none to set)."""
    twin = bench.model.twin
    if twin is None or seed is None:
        return bench
    model = bench.model.model_copy(update={"twin": twin.model_copy(update={"seed": seed})})
    return dataclasses.replace(bench, model=model)


def test_equipment_conforms_to_its_interface(
    equipment: str,
    bench: LoadedBench,
    seed: int | None,
    conformance_results: list[ConformanceReport],
) -> None:
    seeded = with_seed(bench, seed)
    report = run_batch_loop(
        lambda: check_bench_equipment(seeded, equipment), virtual=bench.virtual_clock
    )
    conformance_results.append(report)
    print(report.text())
    assert report.passed, report.text()
