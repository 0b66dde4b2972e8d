"""Hardware-in-the-loop suite: the same tests against the twin or a bench of real devices.

    pytest hil_tests                           # the simulated bench (benches/sim.yaml)
    pytest hil_tests --bench benches/lab.yaml  # a real bench

Nothing in the tests knows which: the bench file says whether to start the twin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twin.bench import LoadedBench, load_bench

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("poc-twin hardware-in-the-loop")
    group.addoption(
        "--bench",
        default=str(ROOT / "benches" / "sim.yaml"),
        help="bench file to run the HIL suite against (default: the simulated bench)",
    )
    group.addoption(
        "--hil-report",
        default=None,
        help="write the fault-matrix summary table (Markdown) to this file",
    )
    group.addoption(
        "--seed",
        type=int,
        default=None,
        help="seed of the twin's noise (printed for every run, to replay a failure)",
    )


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest) -> LoadedBench:
    return load_bench(request.config.getoption("--bench"))


@pytest.fixture(scope="session")
def seed(request: pytest.FixtureRequest, bench: LoadedBench) -> int | None:
    value = request.config.getoption("--seed")
    if value is None and bench.model.twin is not None:
        value = bench.model.twin.seed
    return value


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"poc-twin bench: {config.getoption('--bench')}  seed: {config.getoption('--seed')}"]


#: One row per fault-matrix scenario run (filled by test_fault_matrix.py).
MATRIX_RESULTS: list[dict[str, str]] = []


@pytest.fixture(scope="session")
def matrix_results() -> list[dict[str, str]]:
    return MATRIX_RESULTS


def matrix_table(rows: list[dict[str, str]]) -> str:
    """The fault matrix as a Markdown table: expected vs seen, time to detect and to hold."""
    lines = [
        "| scenario | expected (alarm / hold / end) | seen | detect (s) | hold (s) | seed |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['scenario']} | {r['expected']} | {r['seen']} | {r['detect_s']} | "
        f"{r['hold_s']} | {r['seed']} |"
        for r in rows
    ]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not MATRIX_RESULTS:
        return
    table = matrix_table(MATRIX_RESULTS)
    terminalreporter.write_sep("-", "fault matrix")
    terminalreporter.write_line(table)
    report = config.getoption("--hil-report")
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(f"# Fault matrix ({config.getoption('--bench')})\n\n{table}\n")
