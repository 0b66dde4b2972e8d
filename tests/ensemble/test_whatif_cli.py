"""``poc-twin whatif`` as a user runs it: a real local Dask cluster, a killed run that
continues, a separate scheduler with two workers, and bad input refused before anything runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.clock import wall_monotonic, wall_sleep

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes" / "car_t_autologous.yaml")
SPEC = str(ROOT / "recipes" / "specs" / "release-spec.yaml")
BIN = Path(sys.executable).parent
VARY = ["--vary", "moi=uniform(2, 10)", "--vary", "donor.growth_potential=lognormal(1, 0.2)"]
cli = CliRunner()


def _whatif(tmp_path: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "poc-twin"), "whatif", RECIPE, "--spec", SPEC, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "160"},
        **kw,
    )


def _outcomes(results: Path) -> dict[int, dict]:
    """The results so far ({} while the ensemble has made the file but not yet its table: a
    reader polling as it starts found that moment on a busy machine)."""
    db = sqlite3.connect(results)
    try:
        rows = db.execute("SELECT idx, outcome FROM members").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return {}
    finally:
        db.close()
    return {i: json.loads(o) for i, o in rows}


def _wait(condition, what: str, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = wall_monotonic() + timeout_s
    while not condition():
        if wall_monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        wall_sleep(0.2)  # real time: another process (the ensemble, a Dask scheduler) works


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A Dask scheduler and two single-threaded workers, each its own process, on loopback."""
    info = tmp_path / "scheduler.json"
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    procs = [
        subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--port", "0", "--scheduler-file", str(info), *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _wait(info.exists, "the scheduler file", 60)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        "--scheduler-file",
                        str(info),
                        "--nthreads",
                        "1",
                        *common,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        address = json.loads(info.read_text())["address"]
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_the_same_ensemble_on_a_local_and_on_a_remote_cluster(
    tmp_path: Path, dask_cluster: str
) -> None:
    local = _whatif(
        tmp_path,
        "--batches",
        "4",
        "--workers",
        "2",
        *VARY,
        "--results",
        "l.sqlite",
        "--json",
        "l.json",
    )
    stdout, stderr = local.communicate(timeout=600)
    assert local.returncode == 0, stderr
    assert "P(release):" in stdout and "P(releasable by day 10):" in stdout
    figures = json.loads((tmp_path / "l.json").read_text())
    outcomes = _outcomes(tmp_path / "l.sqlite")
    assert figures["batches"] == len(outcomes) == 4
    # batch 2's fast donor outgrows the vector: MOI x cells needs more than 15 mL, the dose
    # is refused, the batch holds, three restarts later it is aborted (a finding, not a bug)
    assert outcomes[2]["state"] == "Aborted" and outcomes[2]["restarts"] == 3
    assert "outside 0-15 mL" in outcomes[2]["why_held"][0]
    assert figures["states"] == {"Complete": 3, "Aborted": 1}
    released = sum(
        o["state"] == "Complete"
        and o["viability"] >= 70
        and o["car_positive"] >= 20
        and o["dose_per_kg"] >= 2e6
        and o["vector_copies"] <= 10
        for o in outcomes.values()
    )
    assert figures["released"] == released
    assert figures["p_release"] == pytest.approx(released / 4)
    page = (tmp_path / "l.html").read_text()
    assert 'aria-label="histogram of dose_per_kg"' in page and "min 2e+06" in page
    assert page.count("<svg") >= 8 and "What drives failures" in page

    remote = _whatif(
        tmp_path, "--batches", "4", *VARY, "--scheduler", dask_cluster, "--results", "r.sqlite"
    )
    stdout, stderr = remote.communicate(timeout=600)
    assert remote.returncode == 0, stderr
    assert dask_cluster in stdout
    assert _outcomes(tmp_path / "r.sqlite") == outcomes  # batch i is batch i, wherever it ran


def test_a_killed_ensemble_continues_where_it_stopped(tmp_path: Path) -> None:
    args = ("--batches", "3", "--workers", "1", "--results", "k.sqlite")
    first = _whatif(tmp_path, *args, start_new_session=True)
    results = tmp_path / "k.sqlite"
    try:
        _wait(lambda: results.exists() and len(_outcomes(results)) >= 1, "a first result")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the command and its cluster, as kill -9 would
        first.communicate(timeout=60)
    kept = _outcomes(results)
    assert 1 <= len(kept) < 3
    again = _whatif(tmp_path, *args)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert f"{len(kept)} of 3 batches already there; running the other {3 - len(kept)}" in stdout
    after = _outcomes(results)
    assert sorted(after) == [0, 1, 2]
    assert {i: after[i] for i in kept} == kept  # kept results are not run again


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--vary", "moi=uniform(20, 30)"], "never falls inside the allowed [2, 10]"),
        (["--vary", "speed=uniform(1, 2)"], "the recipe has no parameter 'speed'"),
        (["--bench", str(ROOT / "benches" / "example-lab.yaml")], "has no twin section"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    os.chdir(tmp_path)
    result = cli.invoke(app, ["whatif", RECIPE, "--spec", SPEC, "--batches", "2", *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_a_bad_spec_is_named_by_file_and_line(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("spec: s\nlimits:\n  - {outcome: potency, min: 1}\n")
    result = cli.invoke(app, ["whatif", RECIPE, "--spec", str(spec), "--batches", "2"])
    assert result.exit_code == 2
    assert f"{spec}:3:" in result.output and "unknown outcome 'potency'" in result.output


def test_a_results_file_of_another_ensemble_is_not_mixed_in(tmp_path: Path) -> None:
    from twin.ensemble.results import EnsembleMismatch, ResultsFile

    ResultsFile(tmp_path / "x.sqlite", {"seed": 1, "vary": []}).close()
    with pytest.raises(EnsembleMismatch, match="differs in: vary"):
        ResultsFile(tmp_path / "x.sqlite", {"seed": 1, "vary": ["moi=uniform(3, 4)"]})
