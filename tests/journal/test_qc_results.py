"""QC lab results entered into an ended batch's journal: judged in the batch record, signed,
on the same chain, refused while the batch still runs, and left out of replay's comparison."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest
from site_users import PEOPLE
from typer.testing import CliRunner

from twin.bench import load_bench
from twin.cli import app
from twin.engine.inbox import serve_commands
from twin.journal import read_events, verify
from twin.recipe import load_recipe
from twin.replay import replay
from twin.report.record import build_record
from twin.runner import run_batch
from twin.signing import check_journal_signatures, generate_site_key

ROOT = Path(__file__).resolve().parents[2]
cli = CliRunner()


@pytest.fixture(scope="module")
def ended(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("qc")
    journal = tmp / "batch.sqlite"
    product = tmp / "smoke-product.yaml"  # judged against release criteria, unlike smoke's
    smoke = (ROOT / "recipes" / "smoke.yaml").read_text(encoding="utf-8")
    product.write_text(smoke.replace("  purpose: commissioning\n", ""), encoding="utf-8")
    run_batch(
        load_recipe(product),
        load_bench(ROOT / "benches" / "sim.yaml"),
        journal,
        batch_id="QC-1",
        operator="alice",
    )
    return journal


def release(journal: Path) -> dict[str, tuple[str, str]]:
    return {r.name: (r.verdict, r.source) for r in build_record(journal).release}


def test_results_entered_are_judged_in_the_batch_record(ended: Path, tmp_path: Path) -> None:
    journal = tmp_path / "b.sqlite"
    shutil.copy(ended, journal)
    assert release(journal)["Endotoxin"][0] == "pending"
    keys = tmp_path / "keys"
    private, _ = generate_site_key("qc-site", keys)
    out = cli.invoke(
        app,
        [
            "qc",
            str(journal),
            "--result",
            "cd3=92.5",
            "--result",
            "endotoxin=0.8",
            "--result",
            "vcn=2.1",
            "--operator",
            "quinn",
            "--reason",
            "QC lab release testing",
            "--lab-ref",
            "QC-2026-1187",
            "--site-key",
            str(private),
        ],
        input=PEOPLE["quinn"][2] + "\n",
    )
    assert out.exit_code == 0, out.output
    assert "Endotoxin: 0.8 EU/mL (≤ 0.5 EU/mL) — fail" in out.output
    verdicts = release(journal)
    assert verdicts["CD3+"][0] == "pass" and verdicts["Vector copy number"][0] == "pass"
    assert verdicts["Endotoxin"][0] == "fail" and verdicts["Endotoxin"][1].startswith("QC, event")
    assert verify(journal).ok and check_journal_signatures(journal).ok
    record = build_record(journal)
    assert any(a.who == "quinn" for a in record.actions), "entries are signed actions"
    assert any(sev == "critical" and "Endotoxin" in text for sev, text in record.exceptions)
    # A re-test supersedes the failed one; both stay on record.
    out = cli.invoke(
        app,
        [
            "qc",
            str(journal),
            "--result",
            "endotoxin=0.2",
            "--operator",
            "quinn",
            "--reason",
            "re-test of retained sample",
        ],
        input=PEOPLE["quinn"][2] + "\n",
    )
    assert out.exit_code == 0, out.output
    assert release(journal)["Endotoxin"][0] == "pass"
    assert sum(e.kind == "qc_result" for e in read_events(journal)) == 4
    assert replay(journal).identical, "QC entries are not the engine's decisions"


def test_bad_entries_are_refused_and_nothing_is_written(ended: Path, tmp_path: Path) -> None:
    journal = tmp_path / "b.sqlite"
    shutil.copy(ended, journal)
    before = len(list(read_events(journal)))
    out = cli.invoke(
        app,
        [
            "qc",
            str(journal),
            "--result",
            "cd4=80",
            "--result",
            "endotoxin=low",
            "--result",
            "vcn",
            "--operator",
            "qa",
            "--reason",
            "r",
        ],
    )
    assert out.exit_code == 2
    assert "unknown test 'cd4'" in out.output and "'low' is not a number" in out.output
    assert "write TEST=VALUE" in out.output
    assert len(list(read_events(journal))) == before


def test_a_test_entered_twice_in_one_entry_is_refused(ended: Path, tmp_path: Path) -> None:
    """cd3=90 and cd3=10 at once: the record would judge release by the last one alone."""
    journal = tmp_path / "b.sqlite"
    shutil.copy(ended, journal)
    before = len(list(read_events(journal)))
    twice = ["--result", "cd3=90", "--result", "CD3 = 10"]
    out = cli.invoke(app, ["qc", str(journal), *twice, "--operator", "qa", "--reason", "r"])
    assert out.exit_code == 2 and "cd3 given twice" in out.output, out.output
    assert len(list(read_events(journal))) == before


def test_refused_while_a_batch_process_writes_the_journal(ended: Path, tmp_path: Path) -> None:
    journal = tmp_path / "b.sqlite"
    shutil.copy(ended, journal)
    ready, stop = threading.Event(), threading.Event()

    def batch_process() -> None:
        async def main() -> None:
            server = await serve_commands(object(), journal)  # type: ignore[arg-type]
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.01)
            server.close()

        asyncio.run(main())

    thread = threading.Thread(target=batch_process)
    thread.start()
    try:
        assert ready.wait(10)
        out = cli.invoke(
            app, ["qc", str(journal), "--result", "cd3=90", "--operator", "q", "--reason", "r"]
        )
    finally:
        stop.set()
        thread.join()
    assert out.exit_code == 1
    assert "still writing this journal" in out.output


@pytest.mark.parametrize(
    "result", ["cd3=7_0", "cd3=\u0669\u0660", "cd3=92.5 95", "cd3=92.5 mg", "cd3=", "vcn=0x1"]
)
def test_a_result_that_is_not_one_plain_number_is_refused_and_nothing_recorded(
    ended: Path, tmp_path: Path, result: str
) -> None:
    """One number in ASCII digits, optionally its unit. Before, '7_0' was 70 and Arabic-Indic
    '90' was 90 (Python's float takes both), '92.5 95' was 92.5 (the first word taken)."""
    journal = tmp_path / "b.sqlite"
    shutil.copy(ended, journal)
    before = journal.read_bytes()
    out = cli.invoke(
        app,
        ["qc", str(journal), "--result", result, "--operator", "qa", "--reason", "release"],
        catch_exceptions=False,
    )
    assert out.exit_code == 2, out.output
    assert "is not a number in %" in out.output or "is not a number in copies" in out.output
    assert journal.read_bytes() == before


def test_results_are_read_with_or_without_their_unit_and_minus_zero_is_zero() -> None:
    from twin.report.qc import parse_results

    entries = parse_results(["cd3=92.5 %", "endotoxin = 0.25 EU/mL", "vcn=1.5e0", "car=-0"])
    assert [(e.test, e.value) for e in entries] == [
        ("cd3", 92.5),
        ("endotoxin", 0.25),
        ("vcn", 1.5),
        ("car", 0.0),
    ]
    assert str(entries[-1].value) == "0.0"


@pytest.mark.parametrize(
    "result",
    ["cd3=nan", "cd3=inf", "cd3=-1", "cd3=101", "car=1e999", "endotoxin=-0.1", "vcn=1e9"],
)
def test_a_result_outside_its_physical_range_is_refused_and_nothing_recorded(
    ended: Path, tmp_path: Path, result: str
) -> None:
    journal = tmp_path / "b.sqlite"
    shutil.copy(ended, journal)
    before = journal.read_bytes()
    out = cli.invoke(
        app,
        ["qc", str(journal), "--result", result, "--operator", "qa", "--reason", "release"],
        catch_exceptions=False,
    )
    assert out.exit_code == 2, out.output
    assert "--result:1:1:" in out.output and "Traceback" not in out.output
    assert journal.read_bytes() == before
