"""Broker passwords from a file or the environment, never on a command line (issue 19)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from twin.clock import wall_sleep
from twin.telemetry.broker import BrokerConfig
from twin.telemetry.credentials import PASSWORD_FILE_ENV, resolve_broker
from twin.telemetry.topics import TelemetryError

REPO = Path(__file__).resolve().parents[2]


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "broker.pass"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_password_comes_from_a_file_only_its_owner_can_read(tmp_path: Path):
    env = {PASSWORD_FILE_ENV: str(secret_file(tmp_path, "s3cret word\n"))}
    broker = resolve_broker("mqtts://site-a@broker.example:8883/?unit=u1", env)
    assert (broker.username, broker.password, broker.site) == ("site-a", "s3cret word", "site-a")
    assert resolve_broker("mqtt://site-a:pw@h/", {}).password == "pw"  # still accepted


@pytest.mark.parametrize(
    ("url", "mode", "why"),
    [
        ("mqtt://site-a@h/", 0o644, "can be read by others"),
        ("mqtt://site-a:pw@h/", 0o600, "give only one"),
        ("mqtt://h/", 0o600, "names no user"),
    ],
)
def test_a_doubtful_password_source_is_refused(tmp_path: Path, url: str, mode: int, why: str):
    env = {PASSWORD_FILE_ENV: str(secret_file(tmp_path, "pw\n", mode))}
    with pytest.raises(TelemetryError, match=why):
        resolve_broker(url, env)


@pytest.mark.parametrize(
    "url", ["http://site-a:hunter2@h/", "mqtt://site-a:hunter2@h:99999/", "mqtt://site-a:hunter2@/"]
)
def test_errors_never_repeat_the_password(url: str):
    with pytest.raises(TelemetryError) as caught:
        resolve_broker(url, {})
    assert "hunter2" not in str(caught.value)


def test_a_batch_forwards_with_the_password_in_a_file_and_never_in_argv(
    broker: BrokerConfig, tmp_path: Path
):
    password = broker.sites["site-a"]
    env = {
        **os.environ,
        PASSWORD_FILE_ENV: str(secret_file(tmp_path, password + "\n")),
        "POC_TWIN_BROKER": f"mqtt://site-a@127.0.0.1:{broker.port}/?unit=cleanroom-5",
        "POC_TWIN_TELEMETRY_GIVE_UP_S": "45",
        "POC_TWIN_TELEMETRY_CONFIRM_S": "0",  # no control site here to confirm delivery
    }
    journal = tmp_path / "pf1.sqlite"
    argv = ["run", "recipes/smoke.yaml", "--journal", str(journal), "--batch-id", "pf1", "-q"]
    code = "from twin.cli import main; main()"
    run = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen_in_argv = []
    while run.poll() is None:  # every process's command line, while the batch and its forwarder run
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if password.encode() in cmdline.read_bytes():
                    seen_in_argv.append(cmdline)
            except OSError:
                continue  # a process that ended meanwhile
        wall_sleep(0.05)  # real time: sampling the process table of a running batch
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "every event delivered" in out
    assert seen_in_argv == []


def test_without_a_control_site_the_forwarder_does_not_wait_out_its_confirmation(
    broker: BrokerConfig, tmp_path: Path
):
    """No control site has ever acknowledged the batch: its forwarder waits a few seconds
    for one, not the whole confirmation wait (300 s by default) after every batch, and
    `run` says plainly that no control site confirmed it. Before, the forwarder stayed
    detached for 5 minutes ("a background forwarder keeps trying"), holding the site's
    one MQTT session while the next batch's forwarder needed it."""
    env = {
        **os.environ,
        PASSWORD_FILE_ENV: str(secret_file(tmp_path, broker.sites["site-a"] + "\n")),
        "POC_TWIN_BROKER": f"mqtt://site-a@127.0.0.1:{broker.port}/?unit=cleanroom-5",
        "POC_TWIN_TELEMETRY_GIVE_UP_S": "45",
    }
    env.pop("POC_TWIN_TELEMETRY_CONFIRM_S", None)  # the default wait
    journal = tmp_path / "nc1.sqlite"
    argv = ["run", "recipes/smoke.yaml", "--journal", str(journal), "--batch-id", "nc1", "-q"]
    done = subprocess.run(
        [sys.executable, "-c", "from twin.cli import main; main()", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no control site has acknowledged any of it" in done.stderr, done.stderr
    assert "are not confirmed" in done.stderr
    assert "a background forwarder keeps trying" not in done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POC_TWIN_TELEMETRY_RESEND_S", "30s"),
        ("POC_TWIN_TELEMETRY_RESEND_S", "0"),  # a resend every poll: a flood
        ("POC_TWIN_TELEMETRY_CONFIRM_S", "inf"),  # a forwarder that never ends
        ("POC_TWIN_TELEMETRY_CONFIRM_S", "nan"),
        ("POC_TWIN_TELEMETRY_GIVE_UP_S", "-1"),
    ],
)
def test_a_forwarder_timing_no_one_can_mean_is_refused_before_the_batch_starts(
    tmp_path: Path, name: str, value: str
):
    """Before, the forwarder child died on '30s' in the background (the batch ran on with
    no telemetry), and took 0 as a resend every 0.2 s."""
    from typer.testing import CliRunner

    from twin.cli import app

    journal = tmp_path / "t.sqlite"
    env = {name: value, "POC_TWIN_BROKER": "mqtt://site-a@127.0.0.1:1/"}
    argv = ["run", str(REPO / "recipes" / "smoke.yaml"), "--journal", str(journal), "-q"]
    result = CliRunner().invoke(app, argv, env=env)
    assert result.exit_code == 2, result.output
    assert f"{name}={value!r}" in result.output
    assert not journal.exists()
