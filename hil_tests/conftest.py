"""Hardware-in-the-loop suite: the same tests against the twin or a bench of real devices.

    pytest hil_tests                           # the simulated bench (benches/sim.yaml)
    pytest hil_tests --bench benches/lab.yaml  # a real bench

Nothing in the tests knows which: the bench file says whether to start the twin.
At the end of a run the conformance of every device and the fault matrix are
printed as Markdown tables, and written to ``--hil-report`` for CI to keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twin.bench import LoadedBench, load_bench
from twin.conformance import ConformanceReport, conformance_table

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
        help="write the conformance and fault-matrix tables (Markdown) to this file",
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


def shown(path: str) -> str:
    """A bench path as a reader types it: relative to the project when it lies inside."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def effective_seed(config: pytest.Config) -> int | None:
    """The seed this run uses: ``--seed``, else the bench's twin seed; None on a real bench."""
    value: int | None = config.getoption("--seed")
    if value is None:
        twin = load_bench(config.getoption("--bench")).model.twin
        value = twin.seed if twin is not None else None
    return value


@pytest.fixture(scope="session")
def seed(request: pytest.FixtureRequest) -> int | None:
    return effective_seed(request.config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        seed = effective_seed(config)
    except Exception as exc:  # a broken bench file is reported by the tests, in full
        return [f"poc-twin bench: {shown(config.getoption('--bench'))} (does not load: {exc})"]
    return [f"poc-twin bench: {shown(config.getoption('--bench'))}  seed: {seed}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``equipment``: one test per equipment item of the bench, named after it."""
    if "equipment" in metafunc.fixturenames:
        names = list(load_bench(metafunc.config.getoption("--bench")).model.equipment)
        metafunc.parametrize("equipment", names)


#: One row per fault-matrix scenario run (filled by test_fault_matrix.py).
MATRIX_RESULTS: list[dict[str, str]] = []
#: One report per device the conformance kits ran against (filled by test_conformance.py).
CONFORMANCE_RESULTS: list[ConformanceReport] = []


@pytest.fixture(scope="session")
def matrix_results() -> list[dict[str, str]]:
    return MATRIX_RESULTS


@pytest.fixture(scope="session")
def conformance_results() -> list[ConformanceReport]:
    return CONFORMANCE_RESULTS


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
    if not (MATRIX_RESULTS or CONFORMANCE_RESULTS):
        return
    sections = []
    if CONFORMANCE_RESULTS:
        sections.append(("conformance", conformance_table(CONFORMANCE_RESULTS)))
    if MATRIX_RESULTS:
        sections.append(("fault matrix", matrix_table(MATRIX_RESULTS)))
    for title, table in sections:
        terminalreporter.write_sep("-", title)
        terminalreporter.write_line(table)
    report = config.getoption("--hil-report")
    if report:
        bench = shown(config.getoption("--bench"))
        try:
            seed = effective_seed(config)
        except Exception:
            seed = None
        body = "\n\n".join(f"## {title.capitalize()}\n\n{table}" for title, table in sections)
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(f"# HIL report ({bench}, seed {seed})\n\n{body}\n")
