"""Replay and resume on real batches of the twin: identical re-runs, named divergences, and a
batch brought back after its record was cut short, as an operator would do it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from site_users import PEOPLE, Site
from typer.testing import CliRunner

from twin.bench import OpenBench, load_bench
from twin.cli import app
from twin.clock import Clock, wall_monotonic, wall_sleep
from twin.engine.batch import Batch
from twin.engine.states import ProceduralState
from twin.errors import CommandRefused
from twin.journal import Event, read_events, verify
from twin.recipe import load_recipe
from twin.replay import load_recording, replay
from twin.replay.recording import NOT_THE_ENGINES
from twin.replay.resume import ResumeRefused, resume, unconfirmed_setpoints
from twin.runner import run_batch
from twin.serve.scenario import load_scenario
from twin.serve.scheduler import FaultScheduler

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "recipes" / "smoke.yaml"
BENCH = ROOT / "benches" / "sim.yaml"
S = ProceduralState
cli = CliRunner()


def run_smoke(journal: Path, **kwargs: object) -> ProceduralState:
    """The smoke batch; its scripted operators act on the batch clock (no wall pace)."""
    kwargs.setdefault("pace", None)
    return run_batch(
        load_recipe(SMOKE),
        load_bench(BENCH),
        journal,
        batch_id=journal.stem,
        operator="alice",
        seed=11,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def smoke_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    journal = tmp_path_factory.mktemp("replay") / "smoke.sqlite"
    assert run_smoke(journal) is S.COMPLETE
    return journal


def faults_on_the_twin(path: Path, text: str) -> Callable[[OpenBench, Clock], None]:
    """A fault scenario (written to ``path``) run on the twin of the bench a batch opens:
    the batch's ``on_bench``."""
    path.write_text(textwrap.dedent(text))
    scenario = load_scenario(path)

    def start_faults(opened: OpenBench, clock: Clock) -> None:
        FaultScheduler(
            scenario.model, plant=opened.twin.plant, servers=opened.twin.servers, clock=clock
        ).start()

    return start_faults


@pytest.fixture(scope="module")
def faulted_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smoke batch with a silent controller (communication hold), an operator restart while
    it is still silent (a second hold), a restart that succeeds, and a pause/resume."""
    tmp = tmp_path_factory.mktemp("replay-faults")
    start_faults = faults_on_the_twin(
        tmp / "silent.yaml",
        """\
        scenario: silent-then-back
        faults:
          - {at: 1h, device: bioreactor, fault: silent, until: 1h 20m}
        """,
    )
    batches: list[Batch] = []
    restarts: list[float] = []

    def command(action: str, why: str) -> None:
        with contextlib.suppress(CommandRefused):
            batches[0].command(action, who="bob", why=why)

    def operator(event: Event) -> None:
        if event.kind != "transition" or not event.source.startswith("procedure:"):
            return
        loop = asyncio.get_running_loop()
        if event.data["to"] == "Held" and len(restarts) < 2:
            restarts.append(event.batch_time)
            loop.call_later(600.0, command, "restart", "controller checked")
        elif event.data["to"] == "Running" and len(restarts) == 2:
            restarts.append(event.batch_time)
            loop.call_later(7200.0, command, "pause", "break")
            loop.call_later(9000.0, command, "resume", "back")

    journal = tmp / "faulted.sqlite"
    final = run_smoke(
        journal, subscribers=[operator], on_batch=batches.append, on_bench=start_faults
    )
    assert final is S.COMPLETE
    kinds = [(e.kind, e.data.get("alarm")) for e in read_events(journal)]
    assert ("alarm", "communication") in kinds
    return journal


def test_a_power_loss_while_held_is_alarmed_rewritten_and_replays_identically(
    tmp_path: Path,
) -> None:
    """Both controllers lose power mid-culture and come back at their power-up setpoints
    (20 °C, no rocking, every flow 0): the silence holds the batch; when they answer again
    the batch finds its setpoints lost in what they report back (``setpoint_lost``, once
    per device) and writes them again while still held, so the bag warms back to 37 °C
    before anyone restarts; the record replays event for event. Before, the held batch
    believed its own setpoints: the bag sat unheated, unrocked and ungassed, unalarmed."""
    start_faults = faults_on_the_twin(
        tmp_path / "power.yaml",
        """\
        scenario: power-cut
        faults:
          - {at: 3h, device: bioreactor, fault: power_loss, until: 3h 30m}
          - {at: 3h, device: gas, fault: power_loss, until: 3h 30m}
        """,
    )
    batches: list[Batch] = []

    def operator(event: Event) -> None:
        procedure = event.kind == "transition" and event.source.startswith("procedure:")
        if procedure and event.data["to"] == "Held":  # once power is back and the bag warm
            asyncio.get_running_loop().call_later(
                3 * 3600.0,
                lambda: batches[0].command("restart", who="bob", why="power back, checked"),
            )

    journal = tmp_path / "power.sqlite"
    final = run_smoke(
        journal, subscribers=[operator], on_batch=batches.append, on_bench=start_faults
    )
    assert final is S.COMPLETE
    events = list(read_events(journal))
    lost = [e for e in events if e.kind == "alarm" and e.data["alarm"] == "setpoint_lost"]
    assert sorted(e.source for e in lost) == ["bioreactor", "gas"]
    assert "temperature_sp 20 (the batch set 37)" in next(
        e.data["message"] for e in lost if e.source == "bioreactor"
    )
    power_back = 3.5 * 3600.0
    assert all(power_back <= e.batch_time < power_back + 120.0 for e in lost)
    rewritten = {
        (e.source, e.data["parameter"])
        for e in events
        if e.kind == "setpoint" and "device_held" in e.data.get("basis", {})
    }
    assert {("bioreactor", "temperature_sp"), ("bioreactor", "rocking_sp")} <= rewritten
    assert {("gas", "air_flow_sp"), ("gas", "co2_flow_sp")} <= rewritten
    restart = next(
        e.batch_time
        for e in events
        if e.kind == "transition"
        and e.source.startswith("procedure:")
        and e.data["to"] == "Restarting"
    )
    before_restart = [
        e.data["values"]["temperature_c"]
        for e in events
        if e.kind == "reading"
        and e.source == "bioreactor"
        and restart - 600 <= e.batch_time < restart
    ]
    assert before_restart and min(before_restart) > 36.5  # warm again while still held
    result = replay(journal)
    assert result.identical, result.divergence and result.divergence.describe()


def test_a_batch_replays_identically_event_for_event(smoke_journal: Path) -> None:
    result = replay(smoke_journal)
    assert result.identical, result.divergence and result.divergence.describe()
    assert result.reproduced == result.recorded > 900  # the whole smoke batch
    assert result.record_ended
    out = cli.invoke(app, ["replay", str(smoke_journal)])
    assert out.exit_code == 0, out.output
    assert "identical" in out.output and "the whole batch" in out.output


def test_device_faults_holds_and_operator_commands_replay_identically(
    faulted_journal: Path,
) -> None:
    events = list(read_events(faulted_journal))
    commands = [e.data["command"] for e in events if e.kind == "command"]
    assert {"hold", "restart", "pause", "resume"} <= set(commands)
    result = replay(faulted_journal)
    assert result.identical, result.divergence and result.divergence.describe()


def test_a_changed_recipe_names_the_first_divergence(smoke_journal: Path, tmp_path: Path) -> None:
    changed = tmp_path / "smoke.yaml"
    changed.write_text(SMOKE.read_text().replace("do_setpoint_pct: 40", "do_setpoint_pct: 45"))
    assert changed.read_text() != SMOKE.read_text(), "the recipe edit must change something"
    result = replay(smoke_journal, changed)
    assert not result.identical and result.divergence is not None
    recorded = result.divergence.recorded
    # The first decision the new setpoint changes: the culture phase starts "DO 45%".
    assert recorded is not None and recorded.kind == "transition"
    assert "DO 40%" in recorded.data["why"]
    assert result.divergence.replayed is not None
    assert "DO 45%" in result.divergence.replayed[2]["why"]
    out = cli.invoke(app, ["replay", str(smoke_journal), "--recipe", str(changed)])
    assert out.exit_code == 1
    assert f"first divergence at event {recorded.seq}" in out.output
    assert "note: replayed with recipe sha256" in out.output


def test_a_changed_engine_names_the_first_divergence(
    smoke_journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gentler write deadband in the DO loop: the engine now writes flows the record lacks."""
    import twin.engine.modules as modules

    monkeypatch.setattr(modules, "FLOW_DEADBAND_SCCM", 0.1)
    result = replay(smoke_journal)
    assert result.divergence is not None
    assert result.divergence.replayed is not None
    assert result.divergence.replayed[0] == "setpoint"
    assert result.reproduced < result.recorded


def test_a_journal_that_does_not_verify_is_not_replayed(
    smoke_journal: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "edited.sqlite"
    shutil.copy(smoke_journal, copy)
    seq = next(
        e.seq
        for e in read_events(copy)
        if e.kind == "setpoint" and e.data["parameter"] == "temperature_sp"
    )
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE events SET data = replace(data, '37.0', '38.0') WHERE seq = ?", (seq,))
    out = cli.invoke(app, ["replay", str(copy)])
    assert out.exit_code == 1
    assert f"does not verify (event {seq}" in out.output


def cut(journal: Path, to: Path, last_seq: int) -> Path:
    """The record of a process that died after ``last_seq`` (the chain stays whole)."""
    shutil.copy(journal, to)
    with sqlite3.connect(to) as db:
        db.execute("DELETE FROM events WHERE seq > ?", (last_seq,))
    assert verify(to).ok
    return to


def test_an_interrupted_record_replays_up_to_its_end(smoke_journal: Path, tmp_path: Path) -> None:
    short = cut(smoke_journal, tmp_path / "short.sqlite", 700)
    result = replay(short)
    decisions = [e for e in read_events(short) if e.kind not in NOT_THE_ENGINES]
    assert result.identical and not result.record_ended
    assert result.reproduced == len(decisions) >= 690  # all but the runner's identity reads
    out = cli.invoke(app, ["replay", str(short)])
    assert out.exit_code == 0 and "the batch was interrupted there" in out.output


def test_resume_with_restart_completes_on_the_same_chain(
    faulted_journal: Path, tmp_path: Path
) -> None:
    events = list(read_events(faulted_journal))
    # Cut inside the second hold of the faulted batch: it resumes Held, then runs on.
    cut_at = next(e.seq for e in events if e.kind == "command" and e.data["operator"] == "bob") + 3
    short = cut(faulted_journal, tmp_path / "resume.sqlite", cut_at)
    before = [(e.seq, e.hash) for e in read_events(short)]
    final = resume(short, operator="carol", reason="power restored", restart=True)
    assert final is S.COMPLETE
    after = list(read_events(short))
    assert [(e.seq, e.hash) for e in after[: len(before)]] == before, "history kept as it was"
    assert verify(short).ok
    deviation = next(e for e in after if e.kind == "deviation")
    # Events the engine re-derived past the record's end (same instant) come first.
    assert deviation.seq == cut_at + 1 + deviation.data["derived_events"]
    assert deviation.data["last_seq"] == cut_at and deviation.data["operator"] == "carol"
    following = after[deviation.seq : deviation.seq + 12]
    assert [e.kind for e in following[:3]] == ["reading", "reading", "reading"], "re-read"
    assert not any(e.kind == "setpoint" and not e.data.get("restored") for e in following), (
        "no phase command before the operator's restart"
    )
    restart = next(
        e for e in after[cut_at:] if e.kind == "command" and e.data["operator"] == "carol"
    )
    assert restart.data["command"] == "restart" and restart.data["accepted"]
    assert replay(short).identical, "a resumed batch replays like any other"


def _cut_points(events: list[Event]) -> dict[str, int]:
    """Where a kill leaves the engine between a decision and the wait that follows it."""
    culture_start = next(
        e.seq
        for e in events
        if e.kind == "transition" and e.source.endswith(":culture") and e.data["to"] == "Running"
    )
    return {
        "phase finished, next not started": culture_start - 1,
        "culture started, setpoint journalled": culture_start + 1,
        "culture sample drawn": next(
            e.seq for e in events if e.kind == "sample" and e.seq > culture_start
        ),
    }


@pytest.mark.parametrize(
    "where",
    [
        "phase finished, next not started",
        "culture started, setpoint journalled",
        "culture sample drawn",
    ],
)
def test_the_interruption_counts_alike_in_the_resume_and_its_replay(
    smoke_journal: Path, tmp_path: Path, where: str
) -> None:
    """The process dies right after the engine decided something and before it waits: the
    down time counts as culture time (the plant went on) in the resume and in its replay,
    so the resumed batch replays event for event (a kill here once broke the replay)."""
    cut_at = _cut_points(list(read_events(smoke_journal)))[where]
    short = cut(smoke_journal, tmp_path / "killed.sqlite", cut_at)
    assert resume(short, operator="carol", reason="power restored", restart=True) is S.COMPLETE
    result = replay(short)
    assert result.identical, result.divergence.describe() if result.divergence else result


def test_resume_refuses_an_ended_batch(smoke_journal: Path) -> None:
    with pytest.raises(ResumeRefused, match="already ended Complete"):
        resume(smoke_journal, operator="carol", reason="why not")
    before = [e.seq for e in read_events(smoke_journal)]
    out = cli.invoke(app, ["resume", str(smoke_journal), "--operator", "carol", "--reason", "x"])
    assert out.exit_code == 4  # a refusal, as a command to an ended batch is
    assert "already ended Complete; nothing to resume" in out.stderr
    assert "Idle" not in out.output  # no live panel of a batch that is not coming back
    assert [e.seq for e in read_events(smoke_journal)] == before


def test_a_batch_killed_between_its_end_and_batch_ended_is_closed_by_resume(
    smoke_journal: Path, tmp_path: Path
) -> None:
    """Complete in the record but its process killed before ``batch_ended``: resume closes
    the record (exit 0), as it always did; only a closed record is refused."""
    events = list(read_events(smoke_journal))
    ended = next(e.seq for e in events if e.kind == "batch_ended")
    short = cut(smoke_journal, tmp_path / "unclosed.sqlite", ended - 1)
    out = cli.invoke(app, ["resume", str(short), "--operator", "carol", "--reason", "close"])
    assert out.exit_code == 0, out.output
    assert list(read_events(short))[-1].kind in ("batch_ended", "checkpoint")
    assert any(e.kind == "batch_ended" for e in read_events(short))


def test_unconfirmed_setpoints_are_named(smoke_journal: Path, tmp_path: Path) -> None:
    events = list(read_events(smoke_journal))
    setpoint = next(e for e in events if e.kind == "setpoint" and "add_" in e.data["parameter"])
    short = cut(smoke_journal, tmp_path / "dose.sqlite", setpoint.seq)
    missing = unconfirmed_setpoints(list(read_events(short)))
    assert [m["parameter"] for m in missing] == [setpoint.data["parameter"]]
    assert load_recording(short).events[-1].seq == setpoint.seq


def test_resume_from_the_command_line_waits_held_for_the_operator(
    smoke_journal: Path, tmp_path: Path, site: Site
) -> None:
    """``poc-twin resume`` without --restart: Held until ``poc-twin command ... restart``;
    while it waits for that person its clock follows the wall (here at --pace 600), not
    days ahead in seconds."""
    short = cut(smoke_journal, tmp_path / "held.sqlite", 900)
    exe = [sys.executable, "-m", "twin.cli"]
    proc = subprocess.Popen(
        [
            *(*exe, "resume", str(short), "-q", "--pace", "600"),
            *(*site.signed("sam"), "--reason", "after reboot"),  # a supervisor signs the resume
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = wall_monotonic() + 120
        while wall_monotonic() < deadline:
            held = [
                e
                for e in read_events(short)
                if e.seq > 900
                and e.kind == "transition"
                and e.source.startswith("procedure:")
                and e.data["to"] == "Held"
            ]
            if held:
                break
            assert proc.poll() is None, proc.communicate()
            wall_sleep(0.2)
        assert held, "the resumed batch must reach Held"
        wall_sleep(2.0)  # the operator walks over: 2 s of wall, 20 min of batch at pace 600
        sent = subprocess.run(
            [*exe, "command", str(short), "restart", "--operator", "kim", "--reason", "checked"],
            input=PEOPLE["kim"][2] + "\n",
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Complete" in out
    restart = next(
        e for e in read_events(short) if e.kind == "command" and e.data["command"] == "restart"
    )
    assert 0.5 * 2 * 600 <= restart.batch_time - held[0].batch_time <= 5 * 2 * 600
    signed = [(e.data["user"], e.data["act"]) for e in read_events(short) if e.kind == "signature"]
    assert signed == [("sam", "resume-interrupted"), ("kim", "restart")]
    assert replay(short).identical


async def smoke_process_that_dies(
    journal: Path, meanwhile: Callable[[Batch], Awaitable[None]], *, dies: bool = True
) -> None:
    """The smoke batch in a process that dies (its task cancelled, nothing closed) once
    ``meanwhile`` (what happens to the batch until then, on its clock) is done; with
    ``dies=False`` the batch runs on to its end instead."""
    from twin.runner import run_batch_async

    started: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_batch_async(
            load_recipe(SMOKE),
            load_bench(BENCH),
            journal,
            batch_id=journal.stem.upper(),
            operator="alice",
            seed=11,
            on_batch=started.set_result,
        )
    )
    await meanwhile(await started)
    if not dies:
        await task
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_the_twin_keeps_its_plant_across_the_interruption(tmp_path: Path) -> None:
    """On the sim bench the bag outlives the batch process, as a real one would: after the
    process stops at 3 h, the resumed twin's first reading is the plant as it was left
    (DO held near its setpoint, pH as it was), not a fresh bag from the bench's inoculum."""
    from twin.clock import run_batch_loop
    from twin.runner import twin_keep_path

    journal = tmp_path / "kept.sqlite"

    async def three_hours(batch: Batch) -> None:
        await asyncio.sleep(3 * 3600.0)

    run_batch_loop(lambda: smoke_process_that_dies(journal, three_hours), virtual=True)
    assert twin_keep_path(journal).exists()
    before = [e for e in read_events(journal) if e.kind == "reading" and e.source == "bioreactor"]
    added = sum(
        e.data["value"]
        for e in read_events(journal)
        if e.kind == "setpoint" and str(e.data["parameter"]).startswith("add_")
    )
    assert added >= 1.0, "the smoke batch doses before 3 h"
    assert resume(journal, operator="carol", reason="restarted PC", restart=True) is S.COMPLETE
    events = list(read_events(journal))
    deviation = next(e for e in events if e.kind == "deviation")
    reread = next(e for e in events if e.seq > deviation.seq and e.kind == "reading")
    last = before[-1].data["values"]
    first = reread.data["values"]
    # DO under control near its 40 % setpoint, not a fresh bag's air saturation (~99 %).
    assert last["do_pct"] < 60.0 and abs(first["do_pct"] - last["do_pct"]) < 5.0
    assert abs(first["temperature_c"] - last["temperature_c"]) < 0.5
    assert abs(first["ph"] - last["ph"]) < 0.05
    assert replay(journal).identical


class _Marks:
    """A pickle that, loaded by plain ``pickle.load``, calls a function of the reader's
    choosing (here: makes a file); the kept plant must never be read that way."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_damaged_or_foreign_kept_plant_refuses_the_resume_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """The kept plant beside the journal is read only as a plant: a pickle that would run
    code as it loads, garbage, a file cut short and one naming a module that does not
    exist (an older version's) each refuse the resume in one sentence naming the file.
    Nothing runs and the journal gains nothing. Before, the pickle ran, the others gave a
    traceback, and each failed attempt journalled a signed "resumed" deviation."""
    import pickle

    from twin.clock import run_batch_loop
    from twin.errors import PocTwinError
    from twin.runner import twin_keep_path

    journal = tmp_path / "kept.sqlite"

    async def an_hour(batch: Batch) -> None:
        await asyncio.sleep(3600.0)

    run_batch_loop(lambda: smoke_process_that_dies(journal, an_hour), virtual=True)
    keep = twin_keep_path(journal)
    good = keep.read_bytes()
    marker = tmp_path / "ran"
    foreign = pickle.dumps(_Marks(marker), protocol=pickle.HIGHEST_PROTOCOL)
    for bad in (
        foreign,
        b"garbage",
        good[: len(good) // 2],
        b"cnonexistent_module\nPlant\n.",
        pickle.dumps({"plant": 1}),
    ):
        keep.write_bytes(bad)
        before = list(read_events(journal))
        with pytest.raises(PocTwinError, match=r"kept plant cannot be read|not this bench") as err:
            resume(journal, operator="carol", reason="restarted PC")
        assert str(keep) in str(err.value) and "\n" not in str(err.value)
        assert not marker.exists()
        assert list(read_events(journal)) == before
    keep.write_bytes(good)  # the real one: the batch comes back
    assert resume(journal, operator="carol", reason="restarted PC", restart=True) is S.COMPLETE
    assert replay(journal).identical


def test_a_batch_that_died_mid_restart_is_resumed_held_without_the_rest_of_the_rewrite(
    tmp_path: Path,
) -> None:
    """The process died while a restart re-established setpoints. The resume holds the
    batch, and the setpoints the dead restart had not yet written stay unwritten: the
    hold's drive decides what the items do. Before, the rest of the rewrite was written
    after the resume's hold was given (perfusion started again on a held batch)."""
    from twin.clock import run_batch_loop
    from twin.replay.resume import resume_async

    journal = tmp_path / "restarting.sqlite"

    async def dies_restarting(batch: Batch) -> None:
        await asyncio.sleep(3 * 3600.0)
        batch.command("hold", who="bob", why="bag check")
        await asyncio.sleep(1800.0)
        first = asyncio.get_running_loop().create_future()

        def hear(event: Any) -> None:
            if event.kind == "setpoint" and event.data.get("restored") and not first.done():
                first.set_result(None)

        batch.journal.subscribe(hear)
        assert len(batch.ctx._restore) > 1  # else nothing is left to (not) write
        batch.command("restart", who="bob", why="looked fine")
        await first  # dies with the first setpoint's write in flight

    run_batch_loop(
        lambda: smoke_process_that_dies(journal, dies_restarting), virtual=True, pace=None
    )
    before = list(read_events(journal))
    assert before[-1].kind == "setpoint" and before[-1].data.get("restored")

    async def resumed() -> None:
        task = asyncio.create_task(
            resume_async(load_recording(journal), operator="carol", reason="power back", pace=None)
        )
        for _ in range(24 * 60):
            await asyncio.sleep(60.0)
            if any(e.kind == "safe_state" for e in read_events(journal, after=before[-1].seq)):
                break
        await asyncio.sleep(600.0)
        if task.done():
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_batch_loop(resumed, virtual=True, pace=None)
    after = list(read_events(journal, after=before[-1].seq))
    assert any(e.kind == "deviation" for e in after)
    assert [e for e in after if e.kind == "setpoint" and e.data.get("restored")] == []
    # nor the write that was on the wire when it died: not sent again after the hold
    in_flight = before[-1].data["parameter"]
    assert not [e for e in after if e.kind == "confirmed" and e.data["parameter"] == in_flight]
    assert any(e.kind == "safe_state" and e.source == "bioreactor" for e in after)
    procedure = [
        e.data["to"] for e in after if e.kind == "transition" and e.source.startswith("procedure")
    ]
    assert procedure[-1] == "Held" and "Running" not in procedure, procedure
    assert replay(journal).identical


def test_a_controller_that_restarted_while_the_batch_was_down_is_rewritten_once_resumed(
    tmp_path: Path,
) -> None:
    """The batch's process died mid-culture, and while it was down the bioreactor's
    controller restarted at its power-up setpoints (20 °C, no rocking). The resumed batch
    is held for a person; its first scan finds the setpoints lost (``setpoint_lost``) and
    writes the batch's own again, so the bag is warm when the supervisor comes; the record
    replays event for event. Before, the resume's hold kept "temperature control" with the
    controller at 20 °C until someone restarted the batch."""
    from twin.clock import run_batch_loop
    from twin.replay.resume import resume_async

    journal = tmp_path / "restarted.sqlite"

    async def dies_in_culture(batch: Batch) -> None:
        await asyncio.sleep(3 * 3600.0)

    run_batch_loop(
        lambda: smoke_process_that_dies(journal, dies_in_culture), virtual=True, pace=None
    )
    died = list(read_events(journal))[-1].seq

    def controller_restarted(opened: OpenBench, clock: Clock) -> None:
        bag = opened.twin.plant.bioreactor
        bag.temperature_sp_c, bag.rocking_rpm = 20.0, 0.0

    async def resumed_and_held() -> None:
        task = asyncio.create_task(
            resume_async(
                load_recording(journal),
                operator="carol",
                reason="power back",
                pace=None,
                on_bench=controller_restarted,
            )
        )
        while not any(e.kind == "deviation" for e in read_events(journal, after=died)):
            await asyncio.sleep(60.0)  # the re-run, on the same clock
        await asyncio.sleep(2 * 3600.0)  # nobody restarts it
        if task.done():
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_batch_loop(resumed_and_held, virtual=True, pace=None)
    after = list(read_events(journal, after=died))
    (lost,) = [e for e in after if e.kind == "alarm" and e.data["alarm"] == "setpoint_lost"]
    assert lost.source == "bioreactor" and "temperature_sp 20" in lost.data["message"]
    rewritten = [
        e.data["parameter"]
        for e in after
        if e.kind == "setpoint" and "device_held" in e.data.get("basis", {})
    ]
    assert sorted(rewritten) == ["rocking_sp", "temperature_sp"]
    temperatures = [
        e.data["values"]["temperature_c"]
        for e in after
        if e.kind == "reading" and e.source == "bioreactor"
    ]
    assert temperatures[-1] > 36.5  # warm, still held: nobody restarted
    procedure = [
        e.data["to"] for e in after if e.kind == "transition" and e.source.startswith("procedure")
    ]
    assert procedure[-1] == "Held"
    assert replay(journal).identical


@pytest.mark.parametrize("command", ["abort", "stop", "hold"])
def test_a_command_given_during_a_restarts_rewrite_ends_it_and_replays_identically(
    tmp_path: Path, command: str
) -> None:
    """A stop, abort or hold accepted while a restart re-establishes setpoints: nothing of
    the rewrite is written after it (perfusion and N2 were written after an accepted abort),
    and the record replays event for event (before: a false divergence, exit 1)."""
    from twin.clock import run_batch_loop

    journal = tmp_path / f"{command}.sqlite"

    async def the_batch(batch: Batch) -> None:
        await asyncio.sleep(3 * 3600.0)
        batch.command("hold", who="bob", why="bag check")
        await asyncio.sleep(1800.0)

        def hear(event: Event) -> None:
            if event.kind == "setpoint" and event.data.get("restored") and not given:
                given.append(event.seq)
                asyncio.get_running_loop().call_soon(
                    lambda: batch.command(command, who="bob", why="second thoughts")
                )

        given: list[int] = []
        batch.journal.subscribe(hear)
        batch.command("restart", who="bob", why="looked fine")
        if command == "hold":
            await asyncio.sleep(3600.0)
            assert batch.state is S.HELD
            batch.command("abort", who="bob", why="enough")

    run_batch_loop(
        lambda: smoke_process_that_dies(journal, the_batch, dies=False), virtual=True, pace=None
    )
    events = list(read_events(journal))
    accepted = next(
        e
        for e in events
        if e.kind == "command"
        and e.data.get("command") == command
        and e.seq > 0
        and "second thoughts" in str(e.data)
    )
    late = [e for e in events if e.seq > accepted.seq and e.data.get("restored")]
    assert late == [], late
    assert replay(journal).identical


def test_an_interruption_is_measured_from_the_batchs_own_last_event(tmp_path: Path) -> None:
    """A refused ``resume`` (a wrong password) journals its refusal in the dead batch's
    journal. The interruption still begins at the batch's own last event: before, it was
    measured from the refusal, so one refused attempt a minute before the real resume
    cut an overnight outage to a minute, on the record and on the batch clock."""
    from twin.access.entries import journal_refusal_in
    from twin.access.users import AccessRefused
    from twin.clock import run_batch_loop
    from twin.replay.resume import resume_async

    journal = tmp_path / "refused.sqlite"

    async def an_hour(batch: Batch) -> None:
        await asyncio.sleep(3600.0)

    run_batch_loop(lambda: smoke_process_that_dies(journal, an_hour), virtual=True, pace=None)
    last_of_batch = list(read_events(journal))[-1]
    journal_refusal_in(journal, AccessRefused("sam", "resume", "wrong password"), held=True)
    refusal = list(read_events(journal))[-1]
    assert refusal.kind == "access_refused"
    assert load_recording(journal).last_of_the_batch == last_of_batch

    async def resumed() -> None:
        task = asyncio.create_task(
            resume_async(load_recording(journal), operator="carol", reason="power back", pace=None)
        )
        while not any(e.kind == "deviation" for e in read_events(journal, after=refusal.seq)):
            await asyncio.sleep(60.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_batch_loop(resumed, virtual=True, pace=None)
    deviation = next(e for e in read_events(journal, after=refusal.seq) if e.kind == "deviation")
    assert deviation.data["last_seq"] == last_of_batch.seq
    assert deviation.data["interrupted_after"] == last_of_batch.wall_time
    assert f"interrupted after event {last_of_batch.seq} " in deviation.data["message"]


def test_a_batch_held_when_it_died_has_its_hold_driven_again_on_resume(tmp_path: Path) -> None:
    """Held when the process died, the batch comes back Held, and its hold is driven again
    (a device may come back otherwise: the twin's bag comes back as last kept, from before
    the hold, with perfusion running). Before, the engine's hold was refused (Held already)
    and nothing was driven: perfusion ran on through a record that said Held. The resume
    replays event for event."""
    from twin.clock import run_batch_loop
    from twin.replay.resume import resume_async
    from twin.runner import twin_keep_path

    journal = tmp_path / "held.sqlite"

    async def held(batch: Batch) -> None:
        await asyncio.sleep(3 * 3600.0)
        batch.command("hold", who="bob", why="bag check")
        await asyncio.sleep(1800.0)
        assert batch.state is S.HELD

    # a person's wait costs nothing (no pace)
    run_batch_loop(lambda: smoke_process_that_dies(journal, held), virtual=True, pace=None)
    assert twin_keep_path(journal).exists()
    before = list(read_events(journal))
    held_at = max(e.seq for e in before if e.kind == "transition" and e.data["to"] == "Held")
    assert [e.source for e in before if e.kind == "safe_state" and e.seq > held_at - 6]
    plants: list[object] = []

    async def resumed_then_looked_at() -> None:
        task = asyncio.create_task(
            resume_async(
                load_recording(journal),
                operator="carol",
                reason="power back",
                pace=None,
                on_bench=lambda opened, clock: plants.append(opened.twin.plant),
            )
        )
        for _ in range(24 * 60):  # a day at most (the replay of the record comes first)
            await asyncio.sleep(60.0)
            if any(e.kind == "safe_state" for e in read_events(journal, after=before[-1].seq)):
                break
        await asyncio.sleep(600.0)
        if task.done():
            task.result()  # the resume's own failure, if any
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_batch_loop(resumed_then_looked_at, virtual=True, pace=None)
    after = list(read_events(journal, after=before[-1].seq))
    deviation = next(e for e in after if e.kind == "deviation")
    driven = [e for e in after if e.kind == "safe_state" and e.seq > deviation.seq]
    assert "bioreactor" in {e.source for e in driven}
    assert all("resumed after an interruption" in e.data["why"] for e in driven)
    states = [e.data["to"] for e in after if e.kind == "transition"]
    assert "Running" not in states  # held all along, as the record says
    plant = plants[0]
    assert plant.bioreactor.perfusion_ml_per_day == 0.0  # type: ignore[attr-defined]
    assert replay(journal).identical


def test_a_recorded_recipe_with_a_key_left_empty_is_read_as_it_ran(smoke_journal: Path) -> None:
    """A key left empty was taken as not written until 2026-12-07, and is refused in any
    file given now; a journal recorded with one is read again as the version that ran it
    read it (replay, resume and its batch record would otherwise lose the recipe)."""
    import dataclasses

    from twin.errors import InvalidInput
    from twin.replay.recording import Recording
    from twin.report.record import recorded_recipe

    events = list(read_events(smoke_journal))
    header = dict(events[0].data)
    text = header["recipe"]["text"].replace(
        "min_viability_pct: 50}", "min_viability_pct: 50, min_viable_cells_per_ml: }"
    )  # and a merge key, as a recipe could have it then
    text = text.replace("sample_every_h: 2", "<<: {sample_every_h: 2}")
    assert text != header["recipe"]["text"]
    header["recipe"] = {**header["recipe"], "text": text, "path": "/nonexistent/smoke.yaml"}
    started = dataclasses.replace(events[0], data=header)
    recording = Recording(smoke_journal, [started, *events[1:]])
    with recording.recipe() as loaded:
        assert loaded.model.recipe.id == load_recipe(SMOKE).model.recipe.id
    assert recorded_recipe(header) is not None
    given = smoke_journal.parent / "given.yaml"
    given.write_text(text)
    with pytest.raises(InvalidInput, match="merge keys"):
        load_recipe(given)
    given.write_text(text.replace("<<: {sample_every_h: 2}", "sample_every_h: 2"))
    with pytest.raises(InvalidInput, match="written but empty"):
        load_recipe(given)


def test_a_batch_recorded_before_scans_needed_an_expiry_is_judged_as_it_was(
    smoke_journal: Path,
) -> None:
    """A lot scan without an expiry was accepted until 2026-12-07 (the twin's simulated
    person scanned so): a journal recorded then replays, and resumes, judging it as it was.
    A batch started now records that a scan needs an expiry, and is held to it."""
    import dataclasses

    from twin.replay.recording import Recording
    from twin.replay.session import ReplaySession

    events = list(read_events(smoke_journal))
    assert events[0].data["lot_expiry_required"] is True
    old = {k: v for k, v in events[0].data.items() if k != "lot_expiry_required"}
    for header, required in ((events[0].data, True), (old, False)):
        recording = Recording(smoke_journal, [dataclasses.replace(events[0], data=header)])
        with recording.recipe() as recipe, recording.bench() as bench:

            async def built(recording: Recording = recording) -> ReplaySession:
                path = smoke_journal.with_suffix(".x")
                return ReplaySession(recording, recipe, bench, command_path=path)

            session = asyncio.run(built())
            assert session.batch.ctx.lots.expiry_required is required


def test_a_hold_open_when_the_process_died_is_not_said_to_last_to_the_end(
    tmp_path: Path,
) -> None:
    """A unit held when the batch's process died: the record (and the summary) say the
    hold is still open at the journal's last event, not that it lasted "to the end of the
    batch", which has not ended."""
    from twin.clock import run_batch_loop
    from twin.report.record import build_record
    from twin.runner import summarize

    journal = tmp_path / "open.sqlite"

    async def held_below(batch: Batch) -> None:
        await asyncio.sleep(3 * 3600.0)
        batch.command("hold", who="bob", why="bag check", level="unit")
        await asyncio.sleep(1800.0)

    run_batch_loop(lambda: smoke_process_that_dies(journal, held_below), virtual=True, pace=None)
    record = build_record(journal)
    assert not record.ended
    (hold,) = [d for d in record.deviations if d.kind == "hold"]
    assert "min so far, still held at the journal's last event: bag check" in hold.text
    assert "to the end of the batch" not in hold.text
    assert any("still held" in h for h in summarize(journal).hold_reasons)


def test_resume_with_a_broker_url_no_one_can_use_resumes_nothing(tmp_path: Path) -> None:
    """A bad `--broker` is exit 2 before anything is signed or written, said once."""
    from twin.clock import run_batch_loop

    journal = tmp_path / "dead.sqlite"

    async def an_hour(batch: Batch) -> None:
        await asyncio.sleep(3600.0)

    run_batch_loop(lambda: smoke_process_that_dies(journal, an_hour), virtual=True, pace=None)
    before = list(read_events(journal))
    argv = ["resume", str(journal), "--operator", "sam", "--reason", "power back"]
    result = CliRunner().invoke(app, [*argv, "--broker", "mqtt://site-a@127.0.0.1:99999/"])
    assert result.exit_code == 2, result.output
    assert "nothing resumed" in result.output and "nothing started" not in result.output
    assert "--broker: --broker" not in result.output
    assert list(read_events(journal)) == before


def test_a_restart_refused_by_a_silent_gas_unit_alarms_the_gas_dispenser(tmp_path: Path) -> None:
    """One controller of the gas line goes silent; the batch holds; a restart while it is
    still silent fails its rewrite and holds again. That failure's alarm names the
    equipment item ("gas"), as the read's alarm and its clearing do: before, it named "gas
    unit B", an alarm no "answers again" ever cleared. The record replays identically."""
    start_faults = faults_on_the_twin(
        tmp_path / "silent-b.yaml",
        "scenario: silent-b\nfaults:\n  - {at: 1h, device: gas, fault: silent, unit: B, "
        "until: 1h 15m}\n",
    )
    batches: list[Batch] = []
    restarts: list[float] = []

    def command(action: str, why: str) -> None:
        with contextlib.suppress(CommandRefused):
            batches[0].command(action, who="bob", why=why)

    def operator(event: Event) -> None:
        if event.kind != "transition" or not event.source.startswith("procedure:"):
            return
        if event.data["to"] == "Held" and len(restarts) < 4:  # a person restarts each hold
            restarts.append(event.batch_time)
            asyncio.get_running_loop().call_later(600.0, command, "restart", "line checked")

    journal = tmp_path / "silent-b.sqlite"
    final = run_smoke(
        journal, subscribers=[operator], on_batch=batches.append, on_bench=start_faults
    )
    assert final is S.COMPLETE
    events = list(read_events(journal))
    alarms = [e for e in events if e.kind == "alarm" and e.data["alarm"] == "communication"]
    assert len(alarms) >= 2, [e.data for e in alarms]  # the read's, then the restart's
    assert {e.source for e in alarms} == {"gas"}, [(e.source, e.data) for e in alarms]
    cleared = [e for e in events if e.kind == "alarm_cleared" and e.source == "gas"]
    assert cleared
    result = replay(journal)
    assert result.identical, result.divergence and result.divergence.describe()


@pytest.mark.parametrize("killed", ["before its setpoint", "with its setpoint"])
def test_a_batch_killed_as_a_dose_begins_resumes_with_it_settled_and_replays(
    smoke_journal: Path, tmp_path: Path, killed: str
) -> None:
    """Killed as the smoke batch's first dose begins: its setpoint not yet in the file (the
    resume derives it again, at the same instant, past the record's end) or in it. The
    resume's hold settles the dose from the pump's total (the cut short dose's event names
    its setpoint), the restart doses the rest, and the resumed batch replays identically.
    Before: a dose derived past the record's end was named as event 0 and the replay of the
    resumed batch diverged there."""
    events = list(read_events(smoke_journal))
    dose = next(
        e for e in events if e.kind == "setpoint" and e.data["parameter"].startswith("add_")
    )
    last = dose.seq - 1 if killed == "before its setpoint" else dose.seq
    short = cut(smoke_journal, tmp_path / "dose.sqlite", last)
    assert resume(short, operator="carol", reason="power restored", restart=True) is S.COMPLETE
    after = list(read_events(short))
    (settled,) = [e for e in after if e.kind == "addition_interrupted"]
    setpoint = after[settled.data["setpoint"] - 1]
    assert setpoint.seq == settled.data["setpoint"]
    assert setpoint.kind == "setpoint" and setpoint.data == dose.data
    doses = [e for e in after if e.kind == "setpoint" and e.data == dose.data]
    rest = [e for e in after if e.kind == "setpoint" and "rest_of_ml" in e.data.get("basis", {})]
    went_in = settled.data["delivered_ml"]
    assert len(doses) == 1 and went_in < dose.data["value"]
    assert [e.data["value"] for e in rest] == [pytest.approx(dose.data["value"] - went_in)]
    assert replay(short).identical, "a resumed batch replays like any other"


@pytest.mark.parametrize("fault", ["silent", "nan"])
def test_a_device_that_fails_at_resume_is_alarmed_and_the_batch_comes_back_held(
    tmp_path: Path, fault: str
) -> None:
    """The batch's process died; when it is resumed, the bioreactor does not answer (its
    link is down) or its pH probe reads NaN. The resume alarms it and brings the batch back
    Held, monitoring the rest, as a failure while running would: the alarm clears when the
    device answers again, a person restarts, the batch completes and replays. Before, the
    re-read's error ended the resume: the batch could not be brought back at all."""
    import math

    from twin.clock import run_batch_loop
    from twin.replay.resume import resume_async
    from twin.sim.faults import SensorFault

    journal = tmp_path / "down.sqlite"

    async def three_hours(batch: Batch) -> None:
        await asyncio.sleep(3 * 3600.0)

    run_batch_loop(lambda: smoke_process_that_dies(journal, three_hours), virtual=True)
    died = list(read_events(journal))[-1].seq
    benches: list[OpenBench] = []

    def failing(opened: OpenBench, clock: Clock) -> None:
        assert opened.twin is not None
        if fault == "silent":
            opened.twin.servers["bioreactor"].link.silent = True
        else:
            plant = opened.twin.plant.bioreactor
            plant.set_sensor_fault("ph", SensorFault("stuck", 0.0, value=math.nan))
        benches.append(opened)

    async def resumed() -> ProceduralState:
        batches: list[Batch] = []
        task = asyncio.create_task(
            resume_async(
                load_recording(journal),
                operator="carol",
                reason="power back",
                pace=None,
                on_bench=failing,
                on_live=batches.append,
            )
        )
        while not batches:
            await asyncio.sleep(1.0)
            if task.done():
                task.result()  # the resume failed: say how
        batch = batches[0]
        while batch.state is not S.HELD:
            await asyncio.sleep(1.0)
        await asyncio.sleep(3600.0)  # an hour held, the probe or link still failing
        twin = benches[0].twin
        assert twin is not None
        twin.servers["bioreactor"].link.silent = False
        twin.plant.bioreactor.set_sensor_fault("ph", None)
        await asyncio.sleep(600.0)
        batch.command("restart", who="carol", why="probe replaced, link back")
        return await task

    final = run_batch_loop(resumed, virtual=True, pace=None)
    assert final is S.COMPLETE
    after = list(read_events(journal, after=died))
    deviation = next(e for e in after if e.kind == "deviation")
    kind = "communication" if fault == "silent" else "device"
    alarms = [e for e in after if e.kind == "alarm" and e.source == "bioreactor"]
    (alarm,) = [e for e in alarms if e.data["alarm"] == kind]
    assert alarm.seq > deviation.seq
    # a silent device cannot be made safe either: the hold's drive says so
    assert [e.data["alarm"] for e in alarms if e is not alarm] == (
        ["safe_state_failed"] if fault == "silent" else []
    )
    # held after the interruption, monitoring on: the gas line read, the bioreactor tried
    restart = next(e for e in after if e.kind == "command" and e.data["command"] == "restart")
    held = [e for e in after if alarm.seq < e.seq < restart.seq]
    assert sum(e.kind == "reading" and e.source == "gas" for e in held) >= 50
    assert sum(e.kind == "no_answer" and e.source == "bioreactor" for e in held) >= 50
    (cleared,) = [e for e in after if e.kind == "alarm_cleared" and e.source == "bioreactor"]
    assert cleared.data["alarm"] == kind and cleared.seq < restart.seq
    assert replay(journal).identical
