"""People in the loop, as a real process: `poc-twin run` on the twin, commands from a terminal.

While a batch waits on a person (Held, Paused, an identity scan) its clock follows the wall
(at `--pace`), its unit keeps reading; every command takes effect within one poll period
(60 s of batch time) in every state, and the process ends when the batch does. Each
scenario is one batch process driven only through `poc-twin command` / `confirm-identity`
and read back only through its journal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bedside import UNATTENDED, scanned_smoke
from site_users import PEOPLE

from twin.clock import wall_monotonic, wall_sleep
from twin.errors import JournalError
from twin.journal import Event, read_events
from twin.replay import replay

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("poc-twin"))
SIM = str(ROOT / "benches" / "sim.yaml")
POLL_S = 60.0
#: Batch seconds per wall second while waiting on a person: quick, yet far from a free run.
PACE = 600.0


def kept_pace(batch_s: float, since: float) -> bool:
    """At most the batch time the wall allows since ``since`` (a wall_monotonic() taken
    before the waiting began as the test saw it) at PACE, with 2 s for the time it took to
    see it: a person's time, however slow the machine, and never a free-running clock."""
    return batch_s <= (wall_monotonic() - since + 2.0) * PACE * 1.1


class BatchProcess:
    """One `poc-twin run` and the terminal commands a person gives it."""

    def __init__(self, tmp: Path, recipe: str, *extra: str, bench: str = SIM) -> None:
        self.journal = tmp / "batch.sqlite"
        pace = ("--pace", str(PACE)) if bench == SIM else ()  # a wall clock has no pace
        self.proc = subprocess.Popen(
            [
                *(EXE, "run", str(ROOT / "recipes" / recipe), "--bench", bench, "-q"),
                *("--journal", str(self.journal), "--operator", "eve", *pace),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def events(self) -> list[Event]:
        try:
            return list(read_events(self.journal))
        except JournalError:
            return []

    def wait_for(self, until: Callable[[list[Event]], bool], what: str) -> list[Event]:
        deadline = wall_monotonic() + 60.0
        while True:
            events = self.events()
            if until(events):
                return events
            if self.proc.poll() is not None and not until(self.events()):
                pytest.fail(f"batch exited {self.proc.returncode} before {what}")
            assert wall_monotonic() < deadline, f"timed out waiting for {what}"
            wall_sleep(0.05)

    def state(self, events: list[Event]) -> str:
        states = procedure_states(events)
        return states[-1] if states else "Idle"

    def wait_state(self, state: str) -> list[Event]:
        return self.wait_for(lambda ev: self.state(ev) == state, f"procedure {state}")

    def command(self, action: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [EXE, "command", str(self.journal), action, "--operator", "sam", "--reason", "test"],
            input=PEOPLE["sam"][2] + "\n",  # the password on standard input, as a script gives it
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert done.returncode == expect, (action, done.stdout, done.stderr)
        return done

    def _at_the_bag(self, act: str, *args: str, reason: str) -> subprocess.CompletedProcess[str]:
        """Kim's signed scan at the bag: ``poc-twin ACT JOURNAL ARGS``, password on stdin."""
        return subprocess.run(
            [EXE, act, str(self.journal), *args, "--operator", "kim", "--reason", reason],
            input=PEOPLE["kim"][2] + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    def scan(self, patient: str, bag: str) -> None:
        ids = ("--patient-id", patient, "--bag-id", bag)
        done = self._at_the_bag("confirm-identity", *ids, reason="scanned at the bag")
        assert done.returncode == 0, done.stderr

    def scan_lot(self, *label: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        """``poc-twin scan-lot`` with the container's label (``--gs1 ...`` or ``--lot ...``)."""
        done = self._at_the_bag("scan-lot", *label, reason="container at the bedside")
        assert done.returncode == expect, (label, done.stdout, done.stderr)
        return done

    def ends(self, code: int) -> list[Event]:
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == code, err
        assert "Traceback" not in err
        return list(read_events(self.journal))


def procedure_states(events: list[Event]) -> list[str]:
    return [
        e.data["to"] for e in events if e.kind == "transition" and e.source.startswith("procedure:")
    ]


def took_effect(events: list[Event], action: str, state: str) -> float:
    """Batch seconds from the last accepted ``action`` to the procedure reaching ``state``."""
    command = [
        e
        for e in events
        if e.kind == "command" and e.data["command"] == action and e.data["accepted"]
    ][-1]
    reached = next(
        e
        for e in events
        if e.seq > command.seq
        and e.kind == "transition"
        and e.source.startswith("procedure:")
        and e.data["to"] == state
    )
    return reached.batch_time - command.batch_time


def in_culture(events: list[Event]) -> bool:
    return any(
        e.kind == "transition" and "culture" in e.source and e.data["to"] == "Running"
        for e in events
    )


@pytest.fixture
def batches(tmp_path: Path) -> Iterator[Callable[..., BatchProcess]]:
    started: list[BatchProcess] = []

    def start(recipe: str = "", *extra: str, bench: str = SIM) -> BatchProcess:
        """The lentiviral recipe by default, its day-1 identity scanned by the twin's person
        at the bag; another recipe (a path, or a name in recipes/) and bench as the test
        gives them (its people are the test's)."""
        if not recipe:
            recipe, extra = "car_t_autologous.yaml", (*UNATTENDED, *extra)
        batch = BatchProcess(tmp_path / str(len(started)), recipe, *extra, bench=bench)
        batch.journal.parent.mkdir()
        started.append(batch)
        return batch

    yield start
    for batch in started:
        if batch.proc.poll() is None:
            batch.proc.kill()
            batch.proc.communicate()


def test_a_held_batch_follows_the_wall_and_is_still_read(
    batches: Callable[..., BatchProcess],
) -> None:
    batch = batches()
    batch.wait_for(in_culture, "the first culture")
    batch.command("hold")
    events = batch.wait_state("Held")
    held_at, seen = events[-1].batch_time, wall_monotonic()
    wall_sleep(3.0)  # a person thinks for 3 s: 30 min of batch time at pace 600
    batch.command("pause", expect=4)  # refused in Held, committed with the journal
    events = batch.events()
    now = events[-1].batch_time
    assert now - held_at >= 0.6 * 3 * PACE and kept_pace(now - held_at, seen), now - held_at
    readings = [e for e in events if e.kind == "reading" and e.batch_time > held_at]
    assert {e.source for e in readings} == {"bioreactor", "gas"}
    assert len(readings) >= 2 * int(0.6 * 3 * PACE / POLL_S)
    checked = subprocess.run(  # a validator checks the journal of the batch that waits
        [EXE, "verify", str(batch.journal)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and "intact" in checked.stdout, checked.stderr
    assert "batch running: not ended yet" in checked.stdout
    batch.command("restart")
    batch.wait_for(lambda ev: ev[-1].batch_time > held_at + 86400, "a day of running")
    batch.command("abort")
    events = batch.ends(3)
    assert procedure_states(events)[-1] == "Aborted"
    assert took_effect(events, "abort", "Aborted") <= POLL_S


def test_pause_resume_hold_restart_stop_each_within_one_poll(
    batches: Callable[..., BatchProcess],
) -> None:
    batch = batches()
    batch.wait_for(in_culture, "the first culture")
    batch.command("pause")
    batch.wait_state("Paused")
    batch.command("restart", expect=4)  # not valid while Paused
    batch.command("resume")
    batch.wait_state("Running")
    batch.command("hold")
    batch.wait_state("Held")
    batch.command("resume", expect=4)  # a held batch restarts; it does not resume
    batch.command("restart")
    batch.wait_state("Running")
    batch.command("stop")
    events = batch.ends(3)
    assert procedure_states(events)[1:] == [
        "Pausing",
        "Paused",
        "Running",
        "Holding",
        "Held",
        "Restarting",
        "Running",
        "Stopping",
        "Stopped",
    ]
    for action, state in (
        ("pause", "Paused"),
        ("resume", "Running"),
        ("hold", "Held"),
        ("restart", "Running"),
        ("stop", "Stopped"),
    ):
        assert took_effect(events, action, state) <= POLL_S, action
    refused = [e for e in events if e.kind == "command" and not e.data["accepted"]]
    assert [(e.data["command"], e.data["state"]) for e in refused] == [
        ("restart", "Paused"),
        ("resume", "Held"),
    ]


WAITS = {"pause": "Paused", "hold": "Held"}
ENDS = {"stop": "Stopped", "abort": "Aborted"}


@pytest.mark.parametrize(
    ("first", "then"),
    [("pause", "hold"), ("pause", "stop"), ("pause", "abort"), ("hold", "stop")],
)
def test_commands_to_a_waiting_batch(
    batches: Callable[..., BatchProcess], first: str, then: str
) -> None:
    """Paused or Held (the clock following the wall), each command still takes effect
    within one poll period."""
    batch = batches()
    batch.wait_for(in_culture, "the first culture")
    batch.command(first)
    batch.wait_state(WAITS[first])
    batch.command(then)
    if then == "hold":
        batch.wait_state("Held")
        batch.command("abort")
        events = batch.ends(3)
        assert took_effect(events, "hold", "Held") <= POLL_S
        assert took_effect(events, "abort", "Aborted") <= POLL_S
    else:
        events = batch.ends(3)
        assert took_effect(events, then, ENDS[then]) <= POLL_S
    assert took_effect(events, first, WAITS[first]) <= POLL_S


def test_a_batch_waiting_for_the_identity_scan_follows_the_wall_and_obeys(
    batches: Callable[..., BatchProcess],
) -> None:
    """The non-viral recipe waits for the operator's scan before electroporation: time
    follows the wall meanwhile; a hold and restart there, then the scan, then an abort."""
    batch = batches(
        "car_t_nonviral.yaml",
        "--patient-id",
        "P-0042",
        "--bag-id",
        "BAG-7781",
        "--param",
        "pulse_voltage=700",
    )
    events = batch.wait_for(
        lambda ev: any(e.kind == "identity_requested" for e in ev), "the identity request"
    )
    asked_at, seen = (
        next(e for e in events if e.kind == "identity_requested").batch_time,
        (wall_monotonic()),
    )
    wall_sleep(2.0)
    batch.command("hold")
    events = batch.wait_state("Held")
    waited = events[-1].batch_time - asked_at
    assert waited >= 0.6 * 2 * PACE and kept_pace(waited, seen), waited  # a person's time
    assert took_effect(events, "hold", "Held") <= POLL_S
    # Held, the batch asks for no scan: one given now is refused, not kept for later.
    ids = ("--patient-id", "P-0042", "--bag-id", "BAG-7781")
    early = batch._at_the_bag("confirm-identity", *ids, reason="scanned while held")
    assert early.returncode == 4, early.stderr
    assert "no identity scan is asked for now" in early.stderr
    batch.command("restart")
    batch.wait_for(
        lambda ev: sum(e.kind == "identity_requested" for e in ev) == 2, "the request again"
    )
    batch.scan("P-0042", "BAG-7781")
    batch.wait_for(lambda ev: any(e.kind == "pulse" for e in ev), "the first pulse")
    batch.command("abort")
    events = batch.ends(3)
    confirmed = [e for e in events if e.kind == "identity_confirmation"]
    assert len(confirmed) == 1 and confirmed[0].data["match"] is True
    assert confirmed[0].data["reason"] == "scanned at the bag"  # the scan given when asked
    assert took_effect(events, "abort", "Aborted") <= POLL_S


def test_a_mismatched_identity_scan_is_told_to_the_person_at_the_bag(
    batches: Callable[..., BatchProcess],
) -> None:
    """A patient id typed with a look-alike letter (a Cyrillic "Р") is no barcode's: exit 2,
    nothing sent, the batch still asks. A real mismatch (two digits swapped) is recorded,
    signed, and the batch aborts as the recipe says; the person scanning is told so, with
    exit 4. Before, the look-alike aborted the batch as a mismatch, and either gave exit 0
    and "scan handed to the batch"."""
    batch = batches("car_t_nonviral.yaml", "--patient-id", "P-0042", "--bag-id", "BAG-7781")
    batch.wait_for(
        lambda ev: any(e.kind == "identity_requested" for e in ev), "the identity request"
    )
    typed = ("--patient-id", "\u0420-0042", "--bag-id", "BAG-7781")
    done = batch._at_the_bag("confirm-identity", *typed, reason="typed at the bag")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "U+0420" in done.stderr and "nothing sent" in done.stderr
    ids = ("--patient-id", "P-0024", "--bag-id", "BAG-7781")
    done = batch._at_the_bag("confirm-identity", *ids, reason="scanned at the bag")
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert "MISMATCH" in done.stderr and "P-0024" in done.stderr
    events = batch.ends(3)
    scans = [e for e in events if e.kind == "identity_confirmation"]
    assert [s.data["patient_id"] for s in scans] == ["P-0024"]
    assert scans[0].data["match"] is False and scans[0].data["meaning"] == "identity mismatch"
    assert procedure_states(events)[-1] == "Aborted"
    assert not [e for e in events if e.kind == "pulse"]


def test_an_addition_waits_for_its_container_scan_and_doses_only_the_right_lot(
    batches: Callable[..., BatchProcess], tmp_path: Path
) -> None:
    """The activator is dosed only after the operator scans its container: a wrong material,
    an expired label, a label with no expiry and a wrong lot are refused and journalled (the
    batch keeps waiting, its clock on the wall); a lot keyed in without its expiry or a label
    giving its lot twice never reaches it; a pause or a hold there is named when a scan comes,
    and a restart asks again; the right GS1 label doses that lot, and the record and its replay
    carry it."""
    recipe = scanned_smoke(tmp_path)
    batch = batches(str(recipe), "--lot", "activator=TA-2291")
    events = batch.wait_for(
        lambda ev: any(e.kind == "lot_requested" for e in ev), "the request for the scan"
    )
    asked, seen = next(e for e in events if e.kind == "lot_requested"), wall_monotonic()
    assert asked.data == {"material": "activator", "expected_lot": "TA-2291"}
    in_date = ("--expiry", "2030-12-31")
    wrong = batch.scan_lot("--material", "vector", "--lot", "TA-2291", *in_date, expect=4)
    assert "waits for activator" in wrong.stderr
    expired = "(01)09506000134352(17)200131(10)TA-2291"
    assert (
        "expired on 2020-01-31"
        in batch.scan_lot("--material", "activator", "--gs1", expired, expect=4).stderr
    )
    undated = "(01)09506000134352(10)TA-2291"  # a label with no expiry (AI 17): no dose
    assert (
        "without an expiry date"
        in batch.scan_lot("--material", "activator", "--gs1", undated, expect=4).stderr
    )
    other = batch.scan_lot("--material", "activator", "--lot", "TA-0001", *in_date, expect=4)
    assert "is to use lot TA-2291" in other.stderr
    bad = batch.scan_lot("--material", "activator", "--gs1", "(01)0950600013435(10)X", expect=2)
    assert "nothing sent" in bad.stderr  # malformed: refused here, never reaches the batch
    for malformed in (
        ("--gs1", "(01)09506000134352(17)301231(10)X(10)TA-2291"),  # which lot? not the last
        ("--lot", "TA-2291"),  # keyed in without the expiry the label prints
    ):
        bad = batch.scan_lot("--material", "activator", *malformed, expect=2)
        assert "nothing sent" in bad.stderr
    wall_sleep(1.0)
    batch.command("hold")
    events = batch.wait_state("Held")
    waited = events[-1].batch_time - asked.batch_time
    assert kept_pace(waited, seen), waited  # a person's time, not a free-running clock
    assert not any(e.kind == "setpoint" and e.data["parameter"] == "add_activator" for e in events)
    held = batch.scan_lot("--material", "activator", "--lot", "TA-2291", *in_date, expect=4)
    assert "the batch is Held: its addition of activator waits" in held.stderr
    batch.command("restart")
    batch.wait_for(
        lambda ev: sum(e.kind == "lot_requested" for e in ev) == 2, "the request after restart"
    )
    good = batch.scan_lot(
        "--material", "activator", "--gs1", "(01)09506000134352(17)301231(10)TA-2291"
    )
    assert "lot TA-2291 of activator verified" in good.stdout
    events = batch.ends(0)
    scans = [e for e in events if e.kind == "lot_scan"]
    assert [s.data["accepted"] for s in scans] == [False, False, False, False, True]
    assert scans[2].data["expiry"] is None and "without an expiry" in scans[2].data["refused"]
    assert scans[-1].data["expiry"] == "2030-12-31" and scans[-1].data["gtin"] == "09506000134352"
    signed = {e.data["signed_seq"] for e in events if e.kind == "signature"}
    assert {s.seq for s in scans} <= signed, "every scan is the operator's signed act"
    dose = next(
        e for e in events if e.kind == "setpoint" and e.data["parameter"] == "add_activator"
    )
    assert dose.data["lot"] == "TA-2291" and dose.seq > scans[-1].seq
    record = tmp_path / "record.html"
    done = subprocess.run(
        [EXE, "report", str(batch.journal), "-o", str(record)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    html = record.read_text()
    assert "TA-2291" in html and "4 material scan(s) refused" in html
    assert "; and 1 more (under Deviations)" in html  # the line lists three, counts four
    replayed = subprocess.run(
        [EXE, "replay", str(batch.journal)], capture_output=True, text=True, timeout=120
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    ended = batch.scan_lot("--material", "activator", "--lot", "TA-2291", *in_date, expect=4)
    assert "Complete" in ended.stderr


#: A short culture polled every second, for a bench whose clock is the wall's.
WALL_RECIPE = """\
recipe: {id: wall-hold, product: test, version: 1.0.0, status: draft, author: test,
         purpose: commissioning}
equipment:
  bioreactor: {type: bioreactor}
  gas: {type: gas_dispenser}
procedure:
  - unit_procedure: expansion
    operations:
      - operation: culture
        phases:
          - {phase: set_rocking, rpm: 10}
          - {phase: set_gas, flows_sccm: {air: 190, co2: 10}}
          - {phase: culture, duration_h: 0.5, do_setpoint_pct: 40, poll_s: 1}
"""


@pytest.fixture
def wall_bench(tmp_path: Path) -> Iterator[Path]:
    """A bench with ``clock: wall`` whose devices are the twin's, served in real time by
    ``poc-twin twin serve`` in its own process: to the batch, a bench of real devices."""
    serve = subprocess.Popen(
        [EXE, "twin", "serve", "--bench", SIM, "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert serve.stdout is not None
        lines = []
        for line in serve.stdout:
            lines.append(line)
            if line.startswith("serving"):
                break
        endpoint = {ln.split()[0]: ln.split()[2] for ln in lines if len(ln.split()) == 3}
        host, port = endpoint["bioreactor"].removeprefix("tcp://").rsplit(":", 1)
        bench = tmp_path / "wall.yaml"
        bench.write_text(
            "bench: wall\nclock: wall\ndevelopment: true\nequipment:\n"
            "  bioreactor:\n    type: bioreactor\n    driver: modbus_tcp_bioreactor\n"
            f"    config: {{host: {host}, port: {port}, unit: 1, word_order: big}}\n"
            "  gas:\n    type: gas_dispenser\n    driver: alicat_gas\n"
            f"    config: {{port: {endpoint['gas']}, baud: 19200, timeout_s: 0.5}}\n"
        )
        yield bench
    finally:
        serve.send_signal(signal.SIGINT)
        serve.communicate(timeout=10)


def test_people_on_a_wall_clock_bench_hold_restart_and_ctrl_c(
    batches: Callable[..., BatchProcess], wall_bench: Path, tmp_path: Path
) -> None:
    """The same acts on a bench whose clock is the wall's (devices reached over TCP and a
    pseudo-terminal, as real ones are): a person's hold is Held within a poll, every device
    is read each poll while Held, batch time is wall time, a restart runs on, and Ctrl-C
    twice aborts (exit 3) with every item driven to its abort state."""
    recipe = tmp_path / "wall-hold.yaml"
    recipe.write_text(WALL_RECIPE)
    batch = batches(str(recipe), bench=str(wall_bench))
    batch.wait_for(in_culture, "the culture")
    batch.command("hold")
    events = batch.wait_state("Held")
    held_at, seen = events[-1].batch_time, wall_monotonic()
    wall_sleep(4.0)  # a person looks at the bag for 4 s
    events = batch.events()
    waited = events[-1].batch_time - held_at
    # batch time is wall time; the last scan is in the file within its poll (1 s)
    assert 2.5 <= waited <= wall_monotonic() - seen + 1.0, waited
    for source in ("bioreactor", "gas"):  # read every second while Held
        n = sum(
            1
            for e in events
            if e.kind == "reading" and e.source == source and e.batch_time > held_at
        )
        assert n >= 3, (source, n)
    assert [e.source for e in events if e.kind == "control_kept"] == ["gas"]  # the default hold
    batch.command("restart")
    batch.wait_state("Running")
    batch.proc.send_signal(signal.SIGINT)  # Ctrl-C at the batch's console: a hold
    batch.wait_state("Held")
    batch.proc.send_signal(signal.SIGINT)  # and again: abort
    events = batch.ends(3)
    assert procedure_states(events)[-6:] == [
        "Restarting",
        "Running",
        "Holding",
        "Held",
        "Aborting",
        "Aborted",
    ]
    for action, state in (("hold", "Held"), ("restart", "Running")):
        assert took_effect(events, action, state) <= 1.0, action  # within one poll (1 s)
    aborted = [e for e in events if e.kind == "safe_state" and e.data["why"] == "aborting"]
    assert sorted(e.source for e in aborted) == ["bioreactor", "gas"]
    # A validator replays the wall-clock record on the virtual clock: event for event (the
    # engine's own work between events took real time there; the replay follows the record).
    # Before: it diverged at the first transition ("at another batch time").
    replayed = replay(batch.journal)
    assert replayed.divergence is None, replayed.divergence
    assert replayed.identical
