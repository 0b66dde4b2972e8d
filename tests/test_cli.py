"""The command line as users and CI call it: exit codes and messages of CLI.md."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from bedside import UNATTENDED
from site_users import PEOPLE
from typer.testing import CliRunner

from twin.cli import app
from twin.journal import read_events

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
SIM = str(ROOT / "benches" / "sim.yaml")
cli = CliRunner()


def test_validate_shipped_recipe() -> None:
    result = cli.invoke(
        app, ["validate", str(ROOT / "recipes" / "car_t_autologous.yaml"), "--bench", SIM]
    )
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "sha256" in result.output


def test_validate_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        Path(SMOKE)
        .read_text()
        .replace("setpoint_c: 37.0", "setpoint_c: 45.0")
        .replace("{air: 190, co2: 10}", "{air: 190, co2: 10, o2: 150}")
        .replace("rpm: 10", "rmp: 10")
    )
    result = cli.invoke(app, ["validate", str(bad), "--bench", SIM])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert any(":19:34: unknown key 'rmp' (did you mean 'rpm'?)" in line for line in lines), lines


def test_out_of_limit_setpoints_refused_before_start(tmp_path: Path) -> None:
    bad = tmp_path / "hot.yaml"
    bad.write_text(
        Path(SMOKE)
        .read_text()
        .replace("setpoint_c: 37.0", "setpoint_c: 45.0")
        .replace("{air: 190, co2: 10}", "{air: 190, co2: 10, o2: 150}")
    )
    result = cli.invoke(
        app, ["run", str(bad), "--bench", SIM, "--journal", str(tmp_path / "j.sqlite"), "-q"]
    )
    assert result.exit_code == 2
    text = result.stderr
    assert f"{bad}:21:50: temperature setpoint 45 °C is outside bioreactor's limits 4-40" in text
    assert f"{bad}:20:66: O2 flow 150 sccm exceeds the O2 cap 100 sccm" in text
    assert not (tmp_path / "j.sqlite").exists()  # nothing started


def test_run_smoke_then_verify_then_tamper(tmp_path: Path) -> None:
    journal = tmp_path / "smoke.sqlite"
    result = cli.invoke(
        app,
        [
            "run",
            SMOKE,
            "--bench",
            SIM,
            "--journal",
            str(journal),
            "--batch-id",
            "S-1",
            "--operator",
            "eve",  # the engineer who may run the development bench (tests/conftest.py)
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Complete" in result.output and str(journal) in result.output
    first = next(read_events(journal))
    assert first.kind == "batch_started" and first.data["operator"] == "eve"
    assert cli.invoke(app, ["verify", str(journal)]).exit_code == 0
    db = sqlite3.connect(journal)
    db.execute(
        'UPDATE events SET data = replace(data, \'"operator":"eve"\', \'"operator":"mal"\') '
        "WHERE seq = 1"
    )
    db.commit()
    db.close()
    broken = cli.invoke(app, ["verify", str(journal)])
    assert broken.exit_code == 1
    assert "BROKEN at event 1" in broken.stderr


def test_same_seed_same_journal(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> list[tuple[str, str, str]]:
        path = tmp_path / f"{name}.sqlite"
        result = cli.invoke(
            app,
            [
                "run",
                SMOKE,
                "--bench",
                SIM,
                "--journal",
                str(path),
                "--seed",
                str(seed),
                "--batch-id",
                "S",
                "-q",
            ],
        )
        assert result.exit_code == 0
        return [
            (e.kind, e.source, str(e.data))
            for e in read_events(path)
            if e.kind not in ("batch_started", "signature")  # both carry wall-clock stamps
        ] + [(str(e.batch_time), "", "") for e in read_events(path)]

    assert run("a", 7) == run("b", 7)
    assert run("c", 8) != run("a2", 7)


def test_bench_check_sim() -> None:
    result = cli.invoke(app, ["bench", "check", "--bench", SIM])
    assert result.exit_code == 0, result.output
    for name in ("bioreactor", "gas", "electroporator"):
        assert name in result.output


def _poc_twin(*args: str, **kw: object) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("poc-twin")
    return subprocess.Popen(
        [str(exe), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
        **kw,
    )


def _command(journal: Path, action: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("poc-twin")
    return subprocess.run(
        [
            str(exe),
            "command",
            str(journal),
            action,
            "--operator",
            "sam",
            "--reason",
            f"{action} from test",
        ],
        input=PEOPLE["sam"][2] + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_operator_commands_from_another_process(tmp_path: Path) -> None:
    """Two real processes: a 10-day batch, and an operator's terminal holding then stopping it."""
    journal = tmp_path / "cart.sqlite"
    batch = _poc_twin(
        "run", "recipes/car_t_autologous.yaml", *UNATTENDED, "--journal", str(journal), "-q"
    )
    try:
        for _ in range(200):  # until the batch listens (a few hundred ms)
            hold = _command(journal, "hold")
            if hold.returncode not in (1, 2):  # no journal yet, or not listening yet
                break
        assert hold.returncode == 0, hold.stderr
        assert "accepted" in hold.stdout
        refused = _command(journal, "pause")
        assert refused.returncode == 4
        assert "not valid in state" in refused.stderr and "restart, stop, abort" in refused.stderr
        stop = _command(journal, "stop")
        assert stop.returncode == 0
        out, err = batch.communicate(timeout=60)
    finally:
        batch.kill()
    assert batch.returncode == 3, err
    assert "Stopped" in out
    commands = [e.data for e in read_events(journal) if e.kind == "command"]
    assert [(c["command"], c["accepted"], c["operator"]) for c in commands] == [
        ("hold", True, "sam"),
        ("pause", False, "sam"),
        ("stop", True, "sam"),
    ]


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["command", "--help"]])
def test_help(args: list[str]) -> None:
    assert cli.invoke(app, args).exit_code == 0


def test_signed_batch_verifies_against_the_site_key(tmp_path: Path) -> None:
    assert cli.invoke(app, ["site", "keygen", "cleanroom-2", "--dir", str(tmp_path)]).exit_code == 0
    journal = tmp_path / "signed.sqlite"
    result = cli.invoke(
        app,
        [
            "run",
            SMOKE,
            "--bench",
            SIM,
            "--journal",
            str(journal),
            "-q",
            "--site-key",
            str(tmp_path / "cleanroom-2.key"),
        ],
    )
    assert result.exit_code == 0, result.output
    started = next(read_events(journal))
    assert started.data["site"] == "cleanroom-2" and started.data["site_key_id"]
    assert any(e.kind == "checkpoint" for e in read_events(journal))
    good = cli.invoke(
        app, ["verify", str(journal), "--public-key", str(tmp_path / "cleanroom-2.pub")]
    )
    assert good.exit_code == 0, good.output
    assert cli.invoke(app, ["site", "keygen", "other", "--dir", str(tmp_path)]).exit_code == 0
    wrong = cli.invoke(app, ["verify", str(journal), "--public-key", str(tmp_path / "other.pub")])
    assert wrong.exit_code == 1


def test_media_exchange_faster_than_the_perfusion_pump_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "mx.yaml"
    bad.write_text(
        Path(SMOKE)
        .read_text()
        .replace(
            "          - {phase: add, material: activator, volume_ml: 2.0}\n",
            "          - {phase: add, material: activator, volume_ml: 2.0}\n"
            "          - {phase: media_exchange, volume_ml: 100, rate_ml_per_h: 100}\n",
        )
    )
    result = cli.invoke(app, ["validate", str(bad), "--bench", SIM])
    assert result.exit_code == 2
    assert (
        "exchange rate 100 mL/h is outside bioreactor's perfusion limits 0-83.3333" in result.stderr
    )


def test_the_donor_is_drawn_by_its_seed_or_given_and_recorded(tmp_path: Path) -> None:
    """`run --donor-seed` draws the twin's donor; a bench gives a donor profile (its traits
    override the drawn donor's); the journal records whose cells the twin grew."""
    from twin.sim.donor import REFERENCE_DONOR, draw_donor

    profile_bench = tmp_path / "donor-bench.yaml"
    profile_bench.write_text(
        Path(SIM)
        .read_text(encoding="utf-8")
        .replace("  seed: 42\n", "  seed: 42\n  donor: {seed: 5, growth_potential: 0.6}\n")
    )

    def run(name: str, *extra: str) -> dict:
        journal = tmp_path / f"{name}.sqlite"
        argv = ["run", SMOKE, "--journal", str(journal), "-q", *extra]
        result = cli.invoke(app, argv)
        assert result.exit_code == 0, result.output
        return next(read_events(journal)).data["bench"]["donor"]

    reference = run("reference", "--bench", SIM)
    drawn = run("drawn", "--bench", SIM, "--donor-seed", "11")
    given = run("given", "--bench", str(profile_bench))
    assert reference == REFERENCE_DONOR.as_record()
    assert drawn == draw_donor(11).as_record() != reference
    assert given["growth_potential"] == 0.6
    assert given["cd4_fraction"] == draw_donor(5).as_record()["cd4_fraction"]


def _to_full_device(args: list[str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("poc-twin")
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [str(exe), *args], stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full device)")
@pytest.mark.parametrize(
    "args", [["validate", "recipes/smoke.yaml"], ["bench", "check", "--bench", SIM]]
)
def test_output_that_cannot_be_written_is_one_sentence_and_exit_1(args: list[str]) -> None:
    """Standard output on a full disk (``> /dev/full``): the command says so in one line on
    stderr and exits 1, as any failure; no traceback."""
    done = _to_full_device(args)
    assert done.returncode == 1
    assert done.stderr == "error: cannot write the output: No space left on device\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full device)")
def test_debug_keeps_the_traceback_of_output_that_cannot_be_written() -> None:
    done = _to_full_device(["bench", "check", "--bench", SIM, "--debug"])
    assert done.returncode == 1
    assert "Traceback" in done.stderr and done.stderr.rstrip().endswith("No space left on device")
