"""The command line as people meet it: Ctrl-C at a running batch, commands to a batch that is over.

Real processes and real journals: `poc-twin run` is started as the operator starts it, signalled
as a terminal signals it, and read back only through its journal (CLI.md, turn 2).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from bedside import UNATTENDED
from rich.console import Console
from site_users import Site
from typer.testing import CliRunner

from twin.cli import app
from twin.cli.ctrl_c import WHY, CtrlC
from twin.clock import wall_monotonic, wall_sleep
from twin.engine.states import TABLE, Command, ProceduralState
from twin.errors import CommandRefused, JournalError
from twin.journal import Event, Journal, read_events

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
LONG = str(ROOT / "recipes" / "car_t_autologous.yaml")  # 10 days: ~20 s wall on the twin
SIM = str(ROOT / "benches" / "sim.yaml")
EXE = str(Path(sys.executable).with_name("poc-twin"))
cli = CliRunner()
S = ProceduralState


def _start_run(journal: Path, operator: str, *more: str) -> subprocess.Popen[str]:
    """`poc-twin run` in its own process, as an operator starts it at a terminal."""
    argv = [EXE, "run", LONG, "--bench", SIM, *UNATTENDED, "--journal", str(journal), *more]
    return subprocess.Popen(
        [*argv, "--operator", operator, "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
    )


def _procedure_states(events: list[Event]) -> list[str]:
    return [
        e.data["to"] for e in events if e.kind == "transition" and e.source.startswith("procedure:")
    ]


def _wait_for(
    journal: Path, until: Callable[[list[Event]], bool], proc: subprocess.Popen[str]
) -> list[Event]:
    """Poll the journal (the batch process writes it; a reader beside it is safe) until
    ``until`` holds; bounded, and failing at once if the batch process exits meanwhile."""
    deadline = wall_monotonic() + 60.0
    while True:
        try:
            events = list(read_events(journal))
        except JournalError:  # not created yet, or its table not yet
            events = []
        if until(events):
            return events
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"batch process exited {proc.returncode} too early: {err}")
        assert wall_monotonic() < deadline, f"timed out; states {_procedure_states(events)}"
        wall_sleep(0.05)


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[str]]]:
    """Batch processes a test starts; killed if the test leaves one behind."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- Ctrl-C at the terminal running the batch ----------------------------------------------


def test_ctrl_c_holds_then_a_second_ctrl_c_aborts(
    tmp_path: Path, running: list[subprocess.Popen[str]]
) -> None:
    journal = tmp_path / "cart.sqlite"
    proc = _start_run(journal, "eve")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)

    proc.send_signal(signal.SIGINT)
    events = _wait_for(journal, lambda ev: "Held" in _procedure_states(ev), proc)
    assert _procedure_states(events)[-3:] == ["Running", "Holding", "Held"]
    hold = [e.data for e in events if e.kind == "command"]
    assert [(c["command"], c["accepted"], c["operator"], c["reason"]) for c in hold] == [
        ("hold", True, "eve", WHY)
    ]
    assert proc.poll() is None  # held, waiting for a person: not ended, not killed

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "Traceback" not in out
    assert "Ctrl-C: batch held by eve; Ctrl-C again aborts it" in err
    assert "Ctrl-C: batch aborted by eve (it was Held)" in err
    assert "Aborted" in out  # the normal summary
    events = list(read_events(journal))
    commands = [e.data for e in events if e.kind == "command"]
    assert [(c["command"], c["accepted"], c["operator"], c["reason"]) for c in commands] == [
        ("hold", True, "eve", WHY),
        ("abort", True, "eve", WHY),  # no refused hold before it: the rule asked for abort
    ]
    assert _procedure_states(events)[-2:] == ["Aborting", "Aborted"]
    assert events[-1].kind == "batch_ended" and events[-1].data["state"] == "Aborted"
    verified = cli.invoke(app, ["verify", str(journal)])
    assert verified.exit_code == 0, verified.output


def test_ctrl_c_at_a_resumed_batch_holds_then_aborts(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site
) -> None:
    """After a kill and ``poc-twin resume``, the batch runs on in the resume's process: a
    Ctrl-C there holds it, journalled with the supervisor who resumed it, and a second one
    aborts it (exit 3), as at ``run``. Before, the first Ctrl-C ended the process with
    "the batch is left Held" while the journal said Running, and nothing was journalled."""
    journal = tmp_path / "resumed.sqlite"
    first = _start_run(journal, "eve")
    running.append(first)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), first)
    first.kill()  # the power goes
    first.communicate()
    died_at = list(read_events(journal))[-1].seq
    resumed = subprocess.Popen(
        [EXE, "resume", str(journal), *site.signed("sam"), "--reason", "power cut", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    running.append(resumed)

    def since_resume(ev: list[Event]) -> list[str]:
        return _procedure_states([e for e in ev if e.seq > died_at])

    _wait_for(journal, lambda ev: since_resume(ev)[-1:] == ["Held"], resumed)
    restart = _command("command", str(journal), "restart", *site.signed("kim"), "--reason", "ok")
    assert restart.returncode == 0, restart.stderr
    _wait_for(journal, lambda ev: since_resume(ev)[-1:] == ["Running"], resumed)

    resumed.send_signal(signal.SIGINT)
    _wait_for(journal, lambda ev: since_resume(ev)[-1:] == ["Held"], resumed)
    assert resumed.poll() is None  # held, waiting for a person: the process stays
    resumed.send_signal(signal.SIGINT)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 3, err
    assert "Traceback" not in err and "Traceback" not in out
    assert "Ctrl-C: batch held by sam; Ctrl-C again aborts it" in err
    assert "Ctrl-C: batch aborted by sam (it was Held)" in err
    events = [e for e in read_events(journal) if e.seq > died_at]
    by_ctrl_c = [(e.data["command"], e.data["operator"]) for e in events if e.kind == "command"]
    assert by_ctrl_c[-2:] == [("hold", "sam"), ("abort", "sam")]
    assert since_resume(events)[-2:] == ["Aborting", "Aborted"]
    assert events[-1].kind == "batch_ended" and events[-1].data["state"] == "Aborted"
    verified = cli.invoke(app, ["verify", str(journal)])
    assert verified.exit_code == 0, verified.output


def test_one_ctrl_c_never_aborts_a_batch_someone_else_held(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site
) -> None:
    """kim holds the batch from another terminal; eve's one Ctrl-C at the batch's terminal
    only says that a second press aborts (before, it aborted kim's held batch at once); the
    second press aborts (exit 3)."""
    journal = tmp_path / "held.sqlite"
    proc = _start_run(journal, "eve", "--pace", "600")  # a held minute in 0.1 s of wall
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    hold = _command("command", str(journal), "hold", *site.signed("kim"), "--reason", "look")
    assert hold.returncode == 0, hold.stderr
    events = _wait_for(journal, lambda ev: _procedure_states(ev)[-1:] == ["Held"], proc)
    reset = _command("command", str(journal), "reset", *site.signed("sam"), "--reason", "x")
    assert reset.returncode == 4 and "this batch is Held: stop or abort it first" in reset.stderr
    proc.send_signal(signal.SIGINT)
    readings = sum(1 for e in events if e.kind == "reading")
    # Two more scans (the clock follows the wall while Held): the press was long handled.
    events = _wait_for(
        journal, lambda ev: sum(1 for e in ev if e.kind == "reading") >= readings + 4, proc
    )
    assert _procedure_states(events)[-1] == "Held" and proc.poll() is None
    assert [e.data["command"] for e in events if e.kind == "command"] == ["hold"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "Ctrl-C: the batch is Held; Ctrl-C again aborts it" in err
    assert "Ctrl-C: batch aborted by eve (it was Held)" in err
    commands = [
        (e.data["command"], e.data["operator"]) for e in read_events(journal) if e.kind == "command"
    ]
    assert commands[-2:] == [("hold", "kim"), ("abort", "eve")]


def test_resume_of_a_batch_whose_process_runs_writes_nothing_and_is_refused(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site
) -> None:
    """``resume`` is for a batch whose process died. Given a journal whose batch still runs
    (held, say), it is refused before a password is checked or a byte written, and the
    batch goes on. Before, it appended an interruption that never happened and its own
    readings, and the real batch then died on the journal's next sequence number."""
    journal = tmp_path / "live.sqlite"
    proc = _start_run(journal, "eve")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    hold = _command("command", str(journal), "hold", *site.signed("kim"), "--reason", "check")
    assert hold.returncode == 0, hold.stderr
    _wait_for(journal, lambda ev: _procedure_states(ev)[-1:] == ["Held"], proc)
    before = [e.seq for e in read_events(journal)]

    for signed in (site.signed("sam"), ["--operator", "sam", "--password-file", "/nonexistent"]):
        resumed = _command("resume", str(journal), *signed, "--reason", "power cut?", "-q")
        assert resumed.returncode == 4, resumed.stderr
        assert "running in another process" in resumed.stderr
        assert "Nothing was written" in resumed.stderr
        assert "Traceback" not in resumed.stderr
    after = list(read_events(journal))
    assert not any(e.kind in ("deviation", "access_refused") for e in after)
    assert all(e.source != "resume" for e in after if e.seq > before[-1])
    assert proc.poll() is None  # the batch is untouched and still takes commands
    restart = _command("command", str(journal), "restart", *site.signed("kim"), "--reason", "ok")
    assert restart.returncode == 0, restart.stderr
    _wait_for(journal, lambda ev: _procedure_states(ev)[-1:] == ["Running"], proc)
    abort = _command("command", str(journal), "abort", *site.signed("sam"), "--reason", "done")
    assert abort.returncode == 0, abort.stderr
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    verified = cli.invoke(app, ["verify", str(journal)])
    assert verified.exit_code == 0, verified.output


def test_a_held_batchs_readings_reach_the_file_every_scan(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site
) -> None:
    """Held, the batch follows the wall (at --pace 60 here: a scan a second); each scan's
    readings are committed, so a reader of the file (report, export, the station) sees
    them and a kill keeps them. Before, they waited for 600 s of batch time (10 s here,
    10 min at the default pace) or the next command."""
    journal = tmp_path / "held.sqlite"
    proc = _start_run(journal, "eve", "--pace", "60")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    hold = _command("command", str(journal), "hold", *site.signed("kim"), "--reason", "overnight")
    assert hold.returncode == 0, hold.stderr
    held = _wait_for(journal, lambda ev: _procedure_states(ev)[-1:] == ["Held"], proc)
    held_seq, since = held[-1].seq, wall_monotonic()

    def readings_after(ev: list[Event]) -> list[Event]:
        return [e for e in ev if e.seq > held_seq and e.kind == "reading"]

    events = _wait_for(journal, lambda ev: len(readings_after(ev)) >= 4, proc)
    assert wall_monotonic() - since < 8.0  # 600 s of batch time would be 10 s
    assert not [e for e in events if e.seq > held_seq and e.kind == "command"]
    assert {e.source for e in readings_after(events)} == {"bioreactor", "gas"}
    proc.kill()  # the power goes: what was read while held is kept
    proc.communicate()
    assert len(readings_after(list(read_events(journal)))) >= 4


def test_replay_of_a_running_batch_says_it_is_still_running(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site
) -> None:
    """A validator replays a journal whose batch still runs (held overnight): identical so
    far, and the words say the batch is still running. Before, "the batch was interrupted
    there", as for a batch whose process died; that is said once it is killed."""
    journal = tmp_path / "live.sqlite"
    proc = _start_run(journal, "eve", "--pace", "60")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    hold = _command("command", str(journal), "hold", *site.signed("kim"), "--reason", "overnight")
    assert hold.returncode == 0, hold.stderr
    _wait_for(journal, lambda ev: _procedure_states(ev)[-1:] == ["Held"], proc)
    replayed = _command("replay", str(journal))
    assert replayed.returncode == 0, replayed.stderr
    assert "identical" in replayed.stdout and "the batch is still running" in replayed.stdout
    proc.kill()
    proc.communicate()
    replayed = _command("replay", str(journal))
    assert replayed.returncode == 0, replayed.stderr
    assert "the batch was interrupted there" in replayed.stdout


def test_a_run_whose_journal_another_process_claims_creates_no_file(tmp_path: Path) -> None:
    """The run claims its batch's command address before it creates the journal: while
    another process holds it (a resume starting on that path, say), the run writes nothing."""
    from twin.engine.inbox import claim_command_address

    journal = tmp_path / "claimed.sqlite"
    held = claim_command_address(journal)
    try:
        argv = [EXE, "run", SMOKE, "--bench", SIM, "-q", "--journal", str(journal)]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        held.close()
    assert done.returncode == 1, done.stderr
    assert "another batch process already writes" in done.stderr
    assert "Traceback" not in done.stderr
    assert not journal.exists()


def test_no_signed_entry_is_written_while_another_process_holds_the_journal(
    tmp_path: Path, completed: Path, site: Site
) -> None:
    """QA's review of an ended batch is written only while no other process holds the
    batch's journal (a resume replaying it, say): refused meanwhile, then written."""
    import shutil

    from twin.engine.inbox import claim_command_address

    journal = tmp_path / "ended.sqlite"
    shutil.copy(completed, journal)
    before = [e.seq for e in read_events(journal)]
    review = ["review", str(journal), *site.signed("quinn"), "--comment", "record read"]
    held = claim_command_address(journal)  # as `poc-twin resume` holds it while it replays
    try:
        refused = _command(*review)
    finally:
        held.close()
    assert refused.returncode != 0 and "being resumed" in " ".join(refused.stderr.split())
    assert [e.seq for e in read_events(journal)] == before
    written = _command(*review)
    assert written.returncode == 0, written.stderr
    assert [e.kind for e in read_events(journal)][len(before) :] == [
        "record_signature",
        "signature",
    ]


class _Batch:
    """Just what the handler uses of a Batch: its state and its commands, per the model."""

    def __init__(self, state: ProceduralState) -> None:
        self.state = state
        self.given: list[tuple[str, str, str]] = []

    def command(
        self, command: Command | str, *, who: str, why: str, via: str | None = None
    ) -> None:
        cmd = Command(command)
        to = next((dst for c, src, dst in TABLE if c is cmd and src is self.state), None)
        if to is None:
            raise CommandRefused("procedure:x", cmd.value, self.state.label, [])
        self.given.append((cmd.value, who, why))
        self.state = to


@pytest.mark.parametrize(
    ("state", "given", "says"),
    [
        (S.RUNNING, "hold", "held by dan"),
        (S.PAUSED, "hold", "held by dan"),
        (S.RESTARTING, "hold", "held by dan"),  # restarted from another terminal: holds again
        # held or stopped from elsewhere (or brought back Held by resume): one press says
        # what a second does, and never aborts
        (S.HOLDING, None, "the batch is Holding; Ctrl-C again aborts it"),
        (S.HELD, None, "the batch is Held; Ctrl-C again aborts it"),
        (S.STOPPING, None, "the batch is Stopping; Ctrl-C again aborts it"),
        (S.ABORTING, None, "neither hold nor abort is valid; it finishes on its own"),
        (S.STOPPED, None, "has ended Stopped"),  # over: not aborted after the fact
        (S.COMPLETE, None, "has ended Complete"),
    ],
)
def test_what_a_ctrl_c_means_in_each_state(
    state: ProceduralState, given: str | None, says: str, tmp_path: Path
) -> None:
    batch = _Batch(state)
    note = CtrlC("dan", tmp_path / "j.sqlite", Console(file=io.StringIO())).act(batch)  # type: ignore[arg-type]
    assert note.startswith("Ctrl-C: ") and "\n" not in note and says in note
    assert batch.given == ([(given, "dan", WHY)] if given else [])


@pytest.mark.parametrize("state", [S.RUNNING, S.HELD])
def test_without_site_users_a_ctrl_c_does_not_send_the_person_to_another_terminal(
    state: ProceduralState, tmp_path: Path
) -> None:
    """No site users file: no command can be signed from another terminal, so the note
    says so instead of naming a `poc-twin command ... restart` that would be refused."""
    batch = _Batch(state)
    ctrl_c = CtrlC("dan", tmp_path / "j.sqlite", Console(file=io.StringIO()), signable=False)
    note = ctrl_c.act(batch)  # type: ignore[arg-type]
    assert "Ctrl-C again aborts it" in note and "poc-twin command" not in note
    assert "no site users file" in note
    signable = CtrlC("dan", tmp_path / "j.sqlite", Console(file=io.StringIO()))
    assert "poc-twin command" in signable.act(_Batch(state))  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [S.RUNNING, S.HELD, S.STOPPING])
def test_a_second_ctrl_c_aborts_until_the_batch_runs_again(
    state: ProceduralState, tmp_path: Path
) -> None:
    """The second press aborts, whatever the first did; once the batch has run again (a
    restart from another terminal), a press is a first one again and holds."""
    batch = _Batch(state)
    ctrl_c = CtrlC("dan", tmp_path / "j.sqlite", Console(file=io.StringIO()))
    ctrl_c.act(batch)  # type: ignore[arg-type]
    assert "aborted by dan" in ctrl_c.act(batch)  # type: ignore[arg-type]
    assert batch.given[-1] == ("abort", "dan", WHY)
    again = _Batch(S.HELD)
    ctrl_c = CtrlC("dan", tmp_path / "j.sqlite", Console(file=io.StringIO()))
    ctrl_c.act(again)  # type: ignore[arg-type]
    restarted = Event(1, 0.0, "", "transition", "procedure:x", {"to": "Running"}, "", "")
    ctrl_c(restarted)
    again.state = S.HELD  # held again by someone else
    assert "Ctrl-C again aborts it" in ctrl_c.act(again)  # type: ignore[arg-type]
    assert again.given == []


def test_a_restart_that_fails_makes_the_next_ctrl_c_a_first_one_again(tmp_path: Path) -> None:
    """Held by someone else, a press here only says a second one aborts; someone restarts,
    the restart fails (a device still silent) and the engine holds again, the batch never
    reaching Running. A press now is a first one again (it says, it does not abort): the
    earlier "Ctrl-C again aborts it" was about the earlier hold. Before, it aborted."""
    batch = _Batch(S.HELD)
    ctrl_c = CtrlC("dan", tmp_path / "j.sqlite", Console(file=io.StringIO()))
    ctrl_c.act(batch)  # type: ignore[arg-type]
    restarting = Event(1, 0.0, "", "transition", "procedure:x", {"to": "Restarting"}, "", "")
    ctrl_c(restarting)
    held = Event(2, 0.0, "", "transition", "procedure:x", {"to": "Held"}, "", "")
    ctrl_c(held)  # the restart failed: held again by the engine
    assert "Ctrl-C again aborts it" in ctrl_c.act(batch)  # type: ignore[arg-type]
    assert batch.given == []
    assert "aborted by dan" in ctrl_c.act(batch)  # type: ignore[arg-type]


def test_after_the_batch_ended_a_ctrl_c_only_gets_a_note(tmp_path: Path) -> None:
    """One press too many while the summary is printed: a note, then the caller's handler back."""
    before = signal.getsignal(signal.SIGINT)
    notes = io.StringIO()
    ctrl_c = CtrlC("dan", tmp_path / "j.sqlite", Console(file=notes))
    with ctrl_c.ended(S.ABORTED):
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt), ctrl_c.allow_interrupt():
            signal.raise_signal(signal.SIGINT)  # a wait the user may cut short
    assert notes.getvalue().strip() == "Ctrl-C: the batch has ended Aborted; finishing up"
    assert signal.getsignal(signal.SIGINT) is before


def test_in_the_poc_twin_process_the_end_note_stays_to_the_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the console script's own process, a Ctrl-C after the summary (the exit code
    settled, the process closing down) only gets the note: it never turns exit 3 into death
    by SIGINT. Before, the default handler came back first, and a third press killed it."""
    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(CtrlC, "process_exits_after", True)
    notes = io.StringIO()
    ctrl_c = CtrlC("dan", tmp_path / "j.sqlite", Console(file=notes))
    try:
        with ctrl_c.ended(S.ABORTED):
            pass
        signal.raise_signal(signal.SIGINT)  # after the summary: still no KeyboardInterrupt
        assert notes.getvalue().strip() == "Ctrl-C: the batch has ended Aborted; finishing up"
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("late_by_s", [0.0, 0.1, 0.25])
def test_a_third_ctrl_c_as_the_process_closes_keeps_exit_3(
    tmp_path: Path, running: list[subprocess.Popen[str]], late_by_s: float
) -> None:
    """Hold, abort, then one press more while the process prints its summary and shuts
    down: exit 3 all the same. Before, a press in the last few hundred milliseconds (the
    interpreter's shutdown puts SIGINT back to the kernel's default) killed it: exit -2."""
    journal = tmp_path / "third.sqlite"
    proc = _start_run(journal, "eve", "--pace", "600")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    proc.send_signal(signal.SIGINT)
    _wait_for(journal, lambda ev: "Held" in _procedure_states(ev), proc)
    proc.send_signal(signal.SIGINT)
    _wait_for(journal, lambda ev: "Aborted" in _procedure_states(ev), proc)
    wall_sleep(late_by_s)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (proc.returncode, err)
    assert "Traceback" not in err


def test_a_ctrl_c_while_the_command_line_loads_is_no_traceback() -> None:
    """Pressed in the half second the command line takes to load: one line, exit 130."""
    proc = subprocess.Popen(
        [EXE, "run", SMOKE, "--bench", SIM, "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    wall_sleep(0.15)  # past the interpreter's start, inside the imports
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode in (130, 3), (proc.returncode, err)  # 3: it had begun, then held


# -- commands to a batch no process serves -------------------------------------------------


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke batch run to its end (Complete)."""
    journal = tmp_path_factory.mktemp("ended") / "smoke.sqlite"
    result = cli.invoke(
        app, ["run", SMOKE, "--bench", SIM, "--journal", str(journal), "--batch-id", "S-9", "-q"]
    )
    assert result.exit_code == 0, result.output
    return journal


def _command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


@pytest.mark.parametrize("action", ["start", "bogus", "HOLD"])  # reset: its own test
def test_a_command_no_person_gives_is_invalid_and_the_valid_ones_are_listed(
    completed: Path, action: str
) -> None:
    result = _command("command", str(completed), action, "--operator", "kim", "--reason", "x")
    assert result.returncode == 2
    assert (
        f"unknown command '{action}'; valid: pause, resume, hold, restart, stop, abort"
        in " ".join(result.stderr.split())
    )


def test_no_password_is_invalid_not_a_wrong_one(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site
) -> None:
    """Nothing (or an empty line) on standard input is no password: exit 2 before anything
    is sent, and no account counts a failure for it (six tries, one more than a lockout)."""
    journal = tmp_path / "nopass.sqlite"
    proc = _start_run(journal, "eve")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    argv = [EXE, "command", str(journal), "hold", "--operator", "kim", "--reason", "x"]
    for given in ["", "\n", "\r\n"] * 2:
        done = subprocess.run(argv, input=given, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "no password for kim from standard input" in " ".join(done.stderr.split())
    assert not [e for e in read_events(journal) if e.kind in ("access_refused", "command")]
    hold = _command("command", str(journal), "hold", *site.signed("kim"), "--reason", "x")
    assert hold.returncode == 0, hold.stderr  # kim is not locked out
    abort = _command("command", str(journal), "abort", *site.signed("sam"), "--reason", "end")
    assert abort.returncode == 0, abort.stderr
    proc.communicate(timeout=60)


def test_command_to_an_ended_batch_is_refused_naming_its_final_state(completed: Path) -> None:
    result = _command("command", str(completed), "hold", "--operator", "bob", "--reason", "late")
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [
        "hold: refused — batch S-9 has ended Complete; no command can change it "
        "(a new batch must be started)"
    ]
    assert "Traceback" not in result.stderr


def test_identity_scan_for_an_ended_batch_is_refused(completed: Path) -> None:
    result = cli.invoke(
        app,
        [
            "confirm-identity",
            str(completed),
            "--patient-id",
            "P-1",
            "--bag-id",
            "B-1",
            "--operator",
            "kim",
            "--reason",
            "scanned",
        ],
    )
    assert result.exit_code == 4
    assert "confirm-identity: refused — batch S-9 has ended Complete" in result.stderr


def test_reset_of_an_ended_batch_names_its_final_state_and_writes_nothing(
    completed: Path,
) -> None:
    """ISA-88's reset takes an ended batch to Idle: here the batch's process ended with it,
    so nothing is left to reset. Refused (exit 4) naming the final state, nothing written."""
    before = [e.seq for e in read_events(completed)]
    result = _command("command", str(completed), "reset", "--operator", "sam", "--reason", "next")
    assert result.returncode == 4, result.stderr
    assert "reset: refused — batch S-9 has ended Complete" in result.stderr
    assert "the unit is Idle for a new batch" in result.stderr
    assert [e.seq for e in read_events(completed)] == before


def test_command_to_a_batch_whose_process_died_points_to_resume(
    tmp_path: Path, running: list[subprocess.Popen[str]]
) -> None:
    journal = tmp_path / "died.sqlite"
    proc = _start_run(journal, "eve")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    proc.kill()  # SIGKILL: the process dies with the batch Running
    proc.communicate()
    result = _command("command", str(journal), "hold", "--operator", "bob", "--reason", "check")
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "which has not ended (last recorded state Running): its process died" in lines[0]
    assert f"poc-twin resume {journal} --operator NAME --reason TEXT" in lines[0]


def test_command_while_a_resume_re_runs_the_record_says_so_not_that_the_process_died(
    completed: Path, tmp_path: Path
) -> None:
    """A resume holds the batch's address while it re-runs the record (seconds for a long
    batch) before it takes commands: a command then is told so, and not to resume (which
    another process is doing; a second resume is refused)."""
    from twin.engine.inbox import claim_command_address

    journal = tmp_path / "resuming.sqlite"
    with sqlite3.connect(journal) as copy, sqlite3.connect(completed) as source:
        source.backup(copy)
        copy.execute("DELETE FROM events WHERE seq > 400")  # died Running; the chain whole
    with contextlib.closing(claim_command_address(journal)):  # what resume does first
        for action in ("hold", "restart"):
            result = cli.invoke(
                app, ["command", str(journal), action, "--operator", "sam", "--reason", "x"]
            )
            assert result.exit_code == 4, result.output
            assert "its process died" not in result.stderr
            assert "poc-twin resume" not in result.stderr.replace("(poc-twin resume re-", "")
            assert "another process holds batch S-9" in result.stderr
            assert "try again in a moment" in result.stderr
    args = ["command", str(journal), "hold", "--operator", "sam", "--reason", "x"]
    result = cli.invoke(app, args)
    assert result.exit_code == 4 and "its process died" in result.stderr  # released: it died


def test_command_to_a_journal_without_a_batch_yet(tmp_path: Path) -> None:
    journal = tmp_path / "starting.sqlite"
    Journal(journal, lambda: 0.0, signer=None).close()  # what a process leaves before it begins
    result = cli.invoke(app, ["command", str(journal), "hold", "--operator", "b", "--reason", "r"])
    assert result.exit_code == 4  # a refusal, the only failure CLI.md lists for command
    assert "hold: refused — " in result.stderr
    assert "records no batch that has begun" in result.stderr


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"", "no such table: events"), (b"not a journal\n" * 100, "file is not a database")],
)
def test_command_to_an_unreadable_journal_says_so_in_one_line(
    tmp_path: Path, content: bytes, why: str
) -> None:
    journal = tmp_path / "bad.sqlite"
    journal.write_bytes(content)
    result = _command("command", str(journal), "abort", "--operator", "b", "--reason", "r")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a readable journal" in lines[0] and why in lines[0], lines
    assert "Traceback" not in result.stderr


def test_a_sqlite_file_that_is_no_journal(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE t (x)")
        db.commit()
    result = cli.invoke(app, ["command", str(other), "stop", "--operator", "b", "--reason", "r"])
    assert result.exit_code == 2
    assert "not a readable journal" in result.stderr


@pytest.mark.parametrize(
    "batch_id",
    ["../../../tmp/x", "/tmp/x", "a/b", "..", ".hidden", "[/]x", "x" * 101, "", "a b", "é"],
)
def test_a_batch_id_that_could_name_another_path_is_refused(batch_id: str, tmp_path: Path) -> None:
    """The batch id names runs/<id>.sqlite and nothing else: nothing is written elsewhere."""
    result = cli.invoke(
        app, ["run", SMOKE, "--bench", SIM, "--batch-id", batch_id, "-q"], catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert "not a safe name" in result.output
    assert not (tmp_path / "x.sqlite").exists() and not Path("/tmp/x.sqlite").exists()
    sent = cli.invoke(
        app, ["command", batch_id or "''", "hold", "--operator", "a", "--reason", "b"]
    )
    assert sent.exit_code == 2


def test_a_recipe_id_or_version_that_could_name_a_path_is_an_invalid_recipe(
    tmp_path: Path,
) -> None:
    text = Path(SMOKE).read_text()
    for bad in ("../../../tmp/x", "/etc/x", "''"):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(text.replace("id: smoke", f"id: {bad}", 1))
        result = cli.invoke(app, ["validate", str(recipe)])
        assert result.exit_code == 2, (bad, result.output)
        assert "r.yaml:3:" in result.output and "is not a safe name" in result.output


@pytest.mark.parametrize("pace", ["0", "-1", "nan", "inf", "1e9", "fast"])
def test_a_pace_that_is_not_a_positive_finite_rate_is_refused(pace: str) -> None:
    result = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--pace", pace, "-q"])
    assert result.exit_code == 2, result.output
    assert "--pace" in result.output and "Batch smoke" not in result.output


# -- the twin's simulated person at the bag --------------------------------------------------


def test_the_twins_simulated_person_scans_unsigned_and_the_record_says_so(
    tmp_path: Path, site: Site
) -> None:
    """`run --simulated-operator 2` on the twin with a site's users: the identity the batch
    asks for is scanned 2 batch minutes later by `twin:bedside`, which signs nothing (it is
    no site user), the journal's signatures still check out, and the batch record names the
    simulated act as a major exception."""
    recipe = tmp_path / "identity.yaml"
    recipe.write_text(
        Path(SMOKE)
        .read_text()
        .replace(
            "          - {phase: add, material: activator",
            "          - {phase: confirm_identity, on_failure: abort}\n"
            "          - {phase: add, material: activator",
        )
    )
    journal = tmp_path / "b.sqlite"
    ran = subprocess.run(
        [
            *(EXE, "run", str(recipe), "--bench", SIM, "--journal", str(journal), "-q"),
            *("--patient-id", "P-7", "--bag-id", "BAG-7", "--simulated-operator", "2"),
            *("--pace", "600"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert ran.returncode == 0, ran.stderr
    events = list(read_events(journal))
    asked = next(e for e in events if e.kind == "identity_requested")
    (scan,) = [e for e in events if e.kind == "identity_confirmation"]
    assert scan.data["operator"] == "twin:bedside" and scan.data["match"]
    assert scan.batch_time - asked.batch_time == pytest.approx(120.0, abs=1.0)
    signed = {e.data["signed_seq"] for e in events if e.kind == "signature"}
    assert scan.seq not in signed
    verified = subprocess.run([EXE, "verify", str(journal)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    record = tmp_path / "record.html"
    done = subprocess.run([EXE, "report", str(journal), "-o", str(record)], capture_output=True)
    assert done.returncode == 0
    assert "by the twin&#x27;s simulated people (twin:bedside: identity confirmation)" in (
        record.read_text()
    )


@pytest.fixture
def production_bench(tmp_path: Path) -> Path:
    """benches/sim.yaml as a production bench, with the site's register of approved recipes."""
    bench = tmp_path / "production.yaml"
    text = (ROOT / "benches" / "sim.yaml").read_text()
    assert "\ndevelopment: true\n" in text
    bench.write_text(text.replace("\ndevelopment: true\n", "\ndevelopment: false\n"))
    register = ROOT / "benches" / "approved-recipes.yaml"
    (tmp_path / register.name).write_text(register.read_text())
    return bench


@pytest.mark.parametrize("who", ["ghost", "dan-disabled", "lee-locked"])
def test_a_production_batch_is_started_only_by_an_enabled_site_user(
    tmp_path: Path, production_bench: Path, who: str
) -> None:
    """Who starts a batch on a production bench signs nothing, but their name is on
    `batch_started` and on every Ctrl-C hold and abort: an id that is not an enabled,
    unlocked site user starts nothing (exit 4). Before, any name was taken."""
    from site_users import PEOPLE, make_site

    from twin.access.roles import Act, Role
    from twin.access.users import LOCK_AFTER, UserStore

    site = make_site(tmp_path / "site")
    store = UserStore.open(site.users)
    admin = store.sign("root", PEOPLE["root"][2], Act.MANAGE_USERS)
    store.add("dan-disabled", "Dan Gone", [Role.OPERATOR], "dan-pass-0001", by=admin)
    store.disable("dan-disabled", by=admin)
    store.add("lee-locked", "Lee Out", [Role.OPERATOR], "lee-pass-0001", by=admin)
    for _ in range(LOCK_AFTER):
        with contextlib.suppress(Exception):
            store.sign("lee-locked", "not-lee", Act.HOLD)
    assert store.get("lee-locked").locked  # type: ignore[union-attr]
    store.close()
    journal = tmp_path / "prod.sqlite"
    argv = ["run", str(ROOT / "recipes" / "car_t_nonviral.yaml"), "--bench"]
    argv += [str(production_bench), "--journal", str(journal), "--operator", who, "-q"]
    argv += ["--patient-id", "P-1", "--bag-id", "B-1", "--users", str(site.users)]
    result = cli.invoke(app, argv)
    assert result.exit_code == 4, result.output
    assert f"--operator '{who}': not a site user who may start a batch" in result.output
    assert "nothing started" in result.output
    assert not journal.exists()


def test_an_enabled_site_user_may_start_a_production_batch(
    tmp_path: Path, production_bench: Path
) -> None:
    """The same check lets kim (an operator) through on the production bench; without a
    users file (no site users in force) no id can be checked, and none is refused."""
    from site_users import make_site

    from twin.access.users import UserStore
    from twin.bench import load_bench
    from twin.cli.batch import _production_starter_or_exit

    site = make_site(tmp_path / "site")
    bench = load_bench(production_bench)
    store = UserStore.open(site.users)
    try:
        _production_starter_or_exit(store, bench, "kim")
        with pytest.raises(typer.Exit) as refused:
            _production_starter_or_exit(store, bench, "ghost")
        assert refused.value.exit_code == 4
    finally:
        store.close()
    _production_starter_or_exit(None, bench, "ghost")


def test_forecast_of_an_unreadable_journal_names_it_once(tmp_path: Path) -> None:
    """Before: 'bad.sqlite: bad.sqlite: not a readable journal (...)'."""
    journal = tmp_path / "bad.sqlite"
    journal.write_bytes(b"not a journal\n" * 100)
    spec = ROOT / "recipes" / "specs" / "release-spec.yaml"
    result = cli.invoke(app, ["forecast", str(journal), "--spec", str(spec)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count(str(journal)) == 1, result.stderr
    assert "not a readable journal" in result.stderr


# -- kill -9 while a person is awaited: the twin's bag as the batch last left it -----------

WAITS_FOR_A_SCAN = """\
recipe: {id: kept-bag, product: kept bag test, version: 1.0.0, status: draft, author: test,
         purpose: commissioning}
equipment:
  bioreactor: {type: bioreactor}
  gas: {type: gas_dispenser}
procedure:
  - unit_procedure: u
    operations:
      - operation: o
        phases:
          - {phase: set_rocking, rpm: 12}
          - {phase: set_gas, flows_sccm: {air: 190, co2: 10}}
          - {phase: add, material: medium, volume_ml: 60}
          - {phase: add, material: activator, volume_ml: 2.0, scan_lot: true}
          - {phase: culture, duration_h: 1}
"""


def test_a_kill_while_a_scan_is_awaited_resumes_the_twins_bag_as_it_was_left(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site
) -> None:
    """kill -9 of `run` while the batch waits for a lot scan, after it set rocking and gas
    and dosed 60 mL: the resumed twin's bag is the one the batch left (the dose in, rocking
    and gas on), as a real bag would be. Before, the twin came back as it was last
    pictured, at the batch's start: without the 60 mL, rocking and gas off."""
    recipe = tmp_path / "kept.yaml"
    recipe.write_text(WAITS_FOR_A_SCAN)
    journal = tmp_path / "kept.sqlite"
    argv = [EXE, "run", str(recipe), "--bench", SIM, "--journal", str(journal), "-q"]
    proc = subprocess.Popen(
        [*argv, "--lot", "activator=TA-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    running.append(proc)
    _wait_for(journal, lambda ev: any(e.kind == "lot_requested" for e in ev), proc)
    wall_sleep(0.5)  # a person's moment at the bag, the batch clock following the wall
    proc.kill()
    proc.wait(timeout=30)
    events = list(read_events(journal))
    dosed = [e for e in events if e.kind == "confirmed" and e.data["parameter"] == "add_medium"]
    assert dosed and events[-1].kind == "lot_requested"  # the dose was in before the wait
    bag = [e.data["values"] for e in events if e.kind == "reading" and e.source == "bioreactor"]
    expected_ml = bag[0]["volume_ml"] + 60.0
    resumed = subprocess.Popen(
        [EXE, "resume", str(journal), *site.signed("sam"), "--reason", "PC back", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    running.append(resumed)

    def reread(ev: list[Event]) -> bool:
        deviation = next((e.seq for e in ev if e.kind == "deviation"), None)
        read = {e.source for e in ev if e.kind == "reading" and e.seq > (deviation or 1e9)}
        return {"bioreactor", "gas"} <= read

    after = _wait_for(journal, reread, resumed)
    resumed.kill()
    deviation = next(e for e in after if e.kind == "deviation")
    first: dict[str, dict[str, Any]] = {}
    for e in after:
        if e.seq > deviation.seq and e.kind == "reading":
            first.setdefault(e.source, e.data["values"])
    assert abs(first["bioreactor"]["volume_ml"] - expected_ml) < 3.0, (first, expected_ml)
    assert first["bioreactor"]["rocking_rpm"] == 12.0
    assert first["gas"]["mass_flow_sccm"]["air"] > 150.0


def test_a_ctrl_c_while_the_command_line_is_built_is_one_line_not_a_traceback() -> None:
    """A Ctrl-C in the moment typer builds the command tree (before any command runs): one
    line and exit 130. Before, a traceback ending in KeyboardInterrupt."""
    script = (
        "import os, signal, sys, typer.main as t\n"
        "built = t.get_group\n"
        "def interrupted(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return built(*a, **k)\n"
        "t.get_group = interrupted\n"
        "sys.argv = ['poc-twin', 'verify', 'nothing.sqlite']\n"
        "from twin.console import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "poc-twin: interrupted while starting; nothing was started"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_holds_the_batch_and_ends_the_run_for_resume(
    tmp_path: Path, running: list[subprocess.Popen[str]], site: Site, signum: int
) -> None:
    """SIGTERM (a service stopped, `kill PID`) or SIGHUP (the terminal closed) at `run`:
    the batch is held (journalled, naming the signal), its equipment driven as the hold
    declares, and once Held the run ends with exit 4 and the summary, no traceback; the
    batch comes back with `poc-twin resume`. Before, the process died mid-step with
    nothing in the record."""
    journal = tmp_path / "stopped.sqlite"
    proc = _start_run(journal, "eve")
    running.append(proc)
    _wait_for(journal, lambda ev: "Running" in _procedure_states(ev), proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "Traceback" not in err and "Traceback" not in out
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGHUP"
    assert name in err and "holding it" in err and f"poc-twin resume {journal}" in err
    assert "Held" in out  # the summary
    events = list(read_events(journal))
    hold = [e.data for e in events if e.kind == "command"]
    assert [(c["command"], c["accepted"], c["operator"]) for c in hold] == [
        ("hold", True, "system")
    ]
    assert name in hold[0]["reason"] and hold[0]["via"] == "signal"
    assert _procedure_states(events)[-2:] == ["Holding", "Held"]
    assert any(e.kind == "safe_state" for e in events)  # driven before the run ended
    assert not any(e.kind == "batch_ended" for e in events)
    resumed = subprocess.Popen(
        [EXE, "resume", str(journal), *site.signed("sam"), "--reason", "service back", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running.append(resumed)

    def back_held(ev: list[Event]) -> bool:
        deviation = next((e.seq for e in ev if e.kind == "deviation"), None)
        return deviation is not None and any(  # its hold driven again (Held when it died)
            e.seq > deviation and e.kind in ("safe_state", "control_kept") for e in ev
        )

    _wait_for(journal, back_held, resumed)
    wall_sleep(1.0)  # the resumed batch takes commands (and signals) once it is back
    resumed.send_signal(signum)  # the resumed process is stopped the same way
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 4 and "Traceback" not in err, err
    assert "it is Held" in err and "Held" in out
    assert cli.invoke(app, ["replay", str(journal)]).exit_code == 0  # the signal's hold too
