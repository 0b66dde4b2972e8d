"""Every ASCII serial device of the bench survives garbage, overlong lines and missing
terminators (twin.conformance ``check_electroporator_line``, ``check_gas_line``).

Run on the twin or a real bench alike; a device that does not talk ASCII over a serial line
(Modbus) is skipped. Each report joins the conformance table of the HIL summary.
"""

from __future__ import annotations

import pytest
from test_conformance import with_seed

from twin.bench import LoadedBench
from twin.clock import run_batch_loop
from twin.conformance import ConformanceReport, device_factory
from twin.conformance.electroporator import check_electroporator_line
from twin.conformance.gas import check_gas_line

LINE_KITS = {"electroporator": check_electroporator_line, "gas_dispenser": check_gas_line}


def test_serial_line_survives_bad_input(
    equipment: str,
    bench: LoadedBench,
    seed: int | None,
    conformance_results: list[ConformanceReport],
) -> None:
    kit = LINE_KITS.get(bench.model.equipment[equipment].type)
    if kit is None:
        pytest.skip(f"{equipment}: no serial-line kit for its type")
    seeded = with_seed(bench, seed)
    report = run_batch_loop(
        lambda: kit(device_factory(seeded, equipment), device=equipment),
        virtual=bench.virtual_clock,
    )
    if report.skipped == report.checks:
        pytest.skip(f"{equipment}: {report.checks[0].detail}")
    conformance_results.append(report)
    print(report.text())
    assert report.passed, report.text()
