"""The ISA-88 engine against the twin over the wire: complete, hold/restart, pause, stop, abort,
refusals, a device that stops answering, and a failed in-process check. All on virtual time."""

from __future__ import annotations

from typing import Any

import pytest
from batch_harness import ROOT, S, finished
from site_users import PEOPLE

from twin.engine.inbox import send_command
from twin.errors import CommandRefused
from twin.journal import read_events, verify

HOUR = 3600.0


async def test_smoke_recipe_completes_and_journal_verifies(running: Any) -> None:
    run = await running()
    assert await finished(run) is S.COMPLETE
    run.journal.commit()
    assert verify(run.journal.path).ok
    phases_done = [
        e
        for e in run.kinds("transition")
        if e.source.startswith("phase:") and e.data["to"] == "Complete"
    ]
    assert len(phases_done) == len(run.batch.steps) == 7
    assert run.procedure_states() == ["Running", "Complete"]
    harvest = run.kinds("harvest")[0].data
    assert harvest["volume_ml"] > 90 and harvest["viability_pct"] > 80
    # Every setpoint written is in the journal, and the device holds it.
    assert any(e.data["parameter"] == "temperature_sp" for e in run.kinds("setpoint"))


async def test_hold_drives_safe_state_and_restart_continues_where_it_was(running: Any) -> None:
    run = await running()
    await run.until(
        lambda e: (
            e.kind == "transition" and "culture/2:culture" in e.source and e.data["to"] == "Running"
        )
    )
    await run.clock.sleep(2 * HOUR)
    held_at = run.clock.now()
    run.batch.command("hold", who="bob", why="bag inspection")
    await run.until_state(S.HELD)
    # The declared default hold: the bag keeps temperature and stops additions, the gas
    # dispenser stays under DO control, the electroporator is disarmed.
    assert {e.source for e in run.kinds("safe_state")} == {"bioreactor", "electroporator"}
    assert {e.source for e in run.kinds("control_kept")} == {"gas"}
    readings_before = len(run.kinds("reading"))
    await run.clock.sleep(3 * HOUR)  # held for 3 h: monitored all along
    assert len(run.kinds("reading")) - readings_before >= 2 * 179
    run.batch.command("restart", who="bob", why="inspection done")
    assert await finished(run) is S.COMPLETE
    assert run.procedure_states() == [
        "Running",
        "Holding",
        "Held",
        "Restarting",
        "Running",
        "Complete",
    ]
    restored = [e for e in run.kinds("setpoint") if e.data.get("restored")]
    assert {e.data["parameter"] for e in restored} >= {
        "temperature_sp",
        "rocking_sp",
        "co2_flow_sp",
    }
    # The 6 h culture stayed 6 h: it ended 4 h after the restart, not 6 h.
    culture_done = await run.until(
        lambda e: (
            e.kind == "transition"
            and "culture/2:culture" in e.source
            and e.data["to"] == "Complete"
        )
    )
    assert culture_done.batch_time == pytest.approx(held_at + 3 * HOUR + 4 * HOUR, abs=120)
    hold = next(e for e in run.kinds("command") if e.data["command"] == "hold")
    assert hold.data["operator"] == "bob" and hold.data["reason"] == "bag inspection"


async def test_pause_takes_effect_at_the_next_safe_point(running: Any) -> None:
    run = await running()
    await run.until_phase_running("2:culture")
    run.batch.command("pause", who="bob", why="shift change")
    assert run.batch.state is S.PAUSING
    await run.until_state(S.PAUSED)
    paused_at = run.clock.now()
    readings_before = len(run.kinds("reading"))
    culture = run.batch.current
    assert culture is not None
    elapsed = culture.logic.elapsed_s
    await run.clock.sleep(HOUR)
    assert culture.logic.elapsed_s == elapsed  # the phase's logic waits while paused
    # ... but the unit's control modules go on: a reading of each device every minute.
    assert len(run.kinds("reading")) - readings_before >= 2 * 59
    run.batch.command("resume", who="bob", why="back")
    assert await finished(run) is S.COMPLETE
    assert paused_at - run.kinds("command")[0].batch_time <= 60  # within one poll
    assert "Pausing" in run.procedure_states() and "Paused" in run.procedure_states()


@pytest.mark.parametrize(("command", "final"), [("stop", S.STOPPED), ("abort", S.ABORTED)])
async def test_stop_and_abort_end_the_batch_safely(running: Any, command: str, final: S) -> None:
    run = await running()
    await run.until(lambda e: e.kind == "transition" and "2:culture" in e.source)
    run.batch.command(command, who="bob", why="test")
    assert await finished(run) is final
    assert run.kinds("safe_state")
    assert not run.kinds("harvest")


async def test_refused_command_names_state_and_valid_commands(running: Any) -> None:
    run = await running()
    await run.until(lambda e: e.kind == "transition" and e.data["to"] == "Running")
    with pytest.raises(
        CommandRefused,
        match=r"not valid in state Running; valid commands: "
        r"pause, hold, stop, abort",
    ):
        run.batch.command("restart", who="bob", why="oops")
    refused = run.kinds("command")[-1].data
    assert refused["accepted"] is False and refused["command"] == "restart"
    assert run.batch.state is S.RUNNING


async def test_a_refused_command_below_the_procedure_lists_no_pause(running: Any) -> None:
    """The valid commands a refusal names at a phase are those a phase takes: pause and
    resume act on the whole procedure (given at a phase they are invalid), so a refused
    phase restart does not offer them. Before, it listed "pause, hold, stop, abort"."""
    run = await running()
    await run.until_phase_running("2:culture")
    with pytest.raises(CommandRefused) as refused:
        run.batch.command("restart", who="bob", why="oops", level="phase")
    assert refused.value.valid == ["hold", "stop", "abort"]
    assert str(refused.value).endswith("valid commands: hold, stop, abort")
    run.batch.command("abort", who="sam", why="done")
    assert await finished(run) is S.ABORTED


async def test_commands_from_another_terminal(running: Any) -> None:
    run = await running()
    await run.until(lambda e: e.kind == "transition" and "2:culture" in e.source)
    path = run.journal.path

    async def send(command: str, user: str, reason: str) -> dict[str, Any]:
        password = PEOPLE[user][2]
        return await send_command(path, command, operator=user, password=password, reason=reason)

    refused = await send("resume", "kim", "try")
    assert refused["status"] == "refused" and refused["state"] == "Running"
    accepted = await send("hold", "kim", "alarm check")
    assert accepted == {"status": "accepted", "state": "Holding"}
    await run.until_state(S.HELD)
    not_allowed = await send("abort", "kim", "contaminated")
    assert not_allowed["status"] == "refused" and "may not abort" in not_allowed["message"]
    assert (await send("abort", "sam", "contaminated"))["status"] == "accepted"
    assert await finished(run) is S.ABORTED
    signed = [(e.data["user"], e.data["act"]) for e in run.kinds("signature")]
    assert signed == [("kim", "resume"), ("kim", "hold"), ("sam", "abort")]
    assert [e.data["act"] for e in run.kinds("access_refused")] == ["abort"]


async def test_a_request_over_the_line_limit_is_answered_not_a_traceback(
    running: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request line longer than the command socket's 64 KiB limit (a 70,000-character
    "password" from the wrong file, by a script) is answered as invalid, and the batch
    runs on. Before, the batch's console got asyncio's traceback for the connection and
    the sender was told no batch answered."""
    run = await running()
    await run.until(lambda e: e.kind == "transition" and "2:culture" in e.source)
    before = len(run.events)
    reply = await send_command(
        run.journal.path, "hold", operator="kim", password="x" * 70_000, reason="check"
    )
    assert reply["status"] == "invalid" and "longer than 64 KiB" in reply["message"], reply
    assert not [
        e for e in run.events[before:] if e.kind in ("command", "signature", "access_refused")
    ]
    assert run.batch.state is S.RUNNING
    said = capsys.readouterr()
    assert "Traceback" not in said.err and "Unhandled exception" not in said.err
    accepted = await send_command(
        run.journal.path, "hold", operator="kim", password=PEOPLE["kim"][2], reason="check"
    )
    assert accepted["status"] == "accepted"  # the socket still takes the next request


@pytest.mark.parametrize(
    ("operator", "reason", "extra"),
    [
        ("kim\n", "check", {}),  # no site user id holds a newline (nor spaces, nor ':')
        (" kim", "check", {}),
        ("k" * 300, "check", {}),
        ("kim", "line one\nline two", {}),  # a forged second record line
        ("kim", "look \x1b]0;pwned\x07", {}),  # a terminal escape for every console
        ("kim", "\u200b\u200b", {}),  # reads blank
        ("kim", "\u202eevil", {}),  # a bidirectional override
        ("kim", "x" * 1001, {}),
        ("kim", "scan", {"patient_id": "  ", "bag_id": "BAG-1"}),  # blank: no label says that
        ("kim", "scan", {"patient_id": "P-1 ", "bag_id": "BAG-1"}),
        ("kim", "scan", {"patient_id": "P-1", "bag_id": "BAG\x1b[31m-1"}),
        ("kim", "check", {"level": "bogus"}),  # the command line checks it before signing
        ("kim", "check", {"level": ["phase"]}),
        ("kim", "scan", {"material": "vector\x1b[31m", "lot": "L-1"}),
        ("kim", "scan", {"material": "vector", "lot": " L-1"}),  # padded: as no label prints it
        ("kim", "scan", {"material": "vector", "lot": "L-1", "expiry": "2030-W01-1"}),
        ("kim", "scan", {"material": "vector", "lot": "L-1", "expiry": "20301231"}),
    ],
)
async def test_unfit_words_from_another_terminal_are_invalid_and_write_nothing(
    running: Any, operator: str, reason: str, extra: dict[str, str]
) -> None:
    """Whatever client sends them (the CLI checks first; the station, a script), an operator
    id no site user can hold, an unfit reason, a scanned id no label prints, a level that
    does not exist or a material no one doses is invalid before anyone signs: no signature,
    no refusal, no count towards a lockout, no event."""
    run = await running()
    await run.until(lambda e: e.kind == "transition" and "2:culture" in e.source)
    before = len(run.events)
    command = (
        "confirm-identity" if "patient_id" in extra else "scan-lot" if "lot" in extra else "hold"
    )
    level = extra.pop("level", "procedure") if command == "hold" else "procedure"
    reply = await send_command(
        run.journal.path,
        command,
        operator=operator,
        password="wrong-password",  # invalid before the password is even checked
        reason=reason,
        level=level,
        extra=extra or None,
    )
    assert reply["status"] == "invalid", reply
    assert not [
        e for e in run.events[before:] if e.kind in ("command", "signature", "access_refused")
    ]
    assert run.batch.state is S.RUNNING


async def test_a_signed_act_and_its_signature_reach_the_file_in_one_commit(
    running: Any,
) -> None:
    """A kill between a signed act and its signature would leave a record that never
    verifies (an act without its e-signature) and a batch that acted on it. So neither is in
    the file without the other: when the act is heard (appended) no other reader sees it yet;
    with its signature both are there, before the command acts."""
    run = await running()
    await run.until(lambda e: e.kind == "transition" and "2:culture" in e.source)
    path = run.journal.path
    seen_alone: list[tuple[str, bool]] = []

    def at_append(event: Any) -> None:
        if event.kind in ("command", "alarm_ack"):
            in_file = [e.seq for e in read_events(path)]
            seen_alone.append((event.kind, event.seq in in_file))
        if event.kind == "transition" and event.data.get("command") == "hold":
            in_file = {e.kind for e in read_events(path)}
            assert "signature" in in_file, "the hold acted before its signature was committed"

    run.journal.subscribe(at_append)
    alarm = run.journal.append("alarm", "bioreactor", {"alarm": "do", "reaction": "hold_phase"})
    for command, extra in (("acknowledge", {"alarm": alarm.seq}), ("hold", None)):
        reply = await send_command(
            path, command, operator="kim", password=PEOPLE["kim"][2], reason="check", extra=extra
        )
        assert reply["status"] == "accepted", reply
    assert seen_alone == [("alarm_ack", False), ("command", False)]
    events = list(read_events(path))
    for act in (e for e in events if e.kind in ("command", "alarm_ack")):
        signature = events[events.index(act) + 1]
        assert signature.kind == "signature" and signature.data["signed_seq"] == act.seq
    assert verify(path).ok


async def test_alarms_are_acknowledged_through_the_running_batch(running: Any) -> None:
    run = await running()
    await run.until(lambda e: e.kind == "transition" and "2:culture" in e.source)
    journal = run.batch.journal
    minor = journal.append("alarm", "bioreactor", {"alarm": "do", "reaction": "hold_phase"})
    critical = journal.append("alarm", "bioreactor", {"alarm": "temp", "reaction": "hold"})

    async def ack(seq: int, user: str) -> dict[str, Any]:
        return await send_command(
            journal.path,
            "acknowledge",
            operator=user,
            password=PEOPLE[user][2],
            reason="checked at the bag",
            extra={"alarm": seq},
        )

    assert (await ack(minor.seq, "kim"))["status"] == "accepted"
    refused = await ack(critical.seq, "kim")
    assert refused["status"] == "refused" and "may not acknowledge-critical" in refused["message"]
    assert (await ack(critical.seq, "sam"))["status"] == "accepted"
    assert (await ack(critical.seq, "sam"))["status"] == "refused"  # once only
    assert (await ack(1, "sam"))["status"] == "invalid"  # not an alarm
    acks = [
        (e.data["alarm_seq"], e.data["user"], e.data["critical"]) for e in run.kinds("alarm_ack")
    ]
    assert acks == [(minor.seq, "kim", False), (critical.seq, "sam", True)]
    signed = [(e.data["user"], e.data["act"]) for e in run.kinds("signature")]
    assert signed == [("kim", "acknowledge"), ("sam", "acknowledge-critical")]


async def test_device_that_stops_answering_holds_the_batch_naming_it(running: Any) -> None:
    run = await running()
    await run.until_phase_running("2:culture")
    server = run.bench.twin.servers["bioreactor"]
    await server.stop()
    await run.until_state(S.HELD)
    alarm = run.kinds("alarm")[0]
    assert alarm.source == "bioreactor" and alarm.data["alarm"] == "communication"
    assert run.batch.hold_reason.startswith("bioreactor")
    detected = alarm.batch_time - run.kinds("transition")[-1].batch_time
    await server.start()  # the device is back on the same port
    run.batch.command("restart", who="bob", why="bioreactor cable reseated")
    assert await finished(run) is S.COMPLETE
    assert detected <= 60


async def test_failed_in_process_check_holds_the_batch(running: Any) -> None:
    text = (
        (ROOT / "recipes" / "smoke.yaml")
        .read_text()
        .replace("min_viability_pct: 50", "min_viability_pct: 99.5")
    )
    run = await running("strict.yaml", text)
    await run.until_state(S.HELD)
    alarm = run.kinds("alarm")[0]
    assert alarm.data["alarm"] == "phase_failure"
    assert "in-process check failed: viability" in alarm.data["message"]
    run.batch.command("stop", who="qa", why="out of specification")
    assert await finished(run) is S.STOPPED
    events = list(read_events(run.journal.path))
    assert events[-1].kind == "transition" and events[-1].data["to"] == "Stopped"


async def test_a_phase_stopped_by_the_operator_ends_at_its_safe_point_then_the_batch_holds(
    running: Any,
) -> None:
    """Stop at phase level: the culture ends early (controlled, at its next safe point), the
    procedure holds for a decision, and a restart goes on with the harvest."""
    run = await running()
    await run.until_phase_running("2:culture")
    await run.clock.sleep(2 * HOUR)
    culture = run.batch.current
    assert culture is not None
    run.batch.command("stop", who="bob", why="density reached early", level="phase")
    stopped = await run.until(
        lambda e: (
            e.kind == "transition"
            and e.source == culture.phase.element
            and e.data["to"] == "Stopped"
        )
    )
    stop = next(e for e in run.kinds("command") if e.data["command"] == "stop")
    assert stop.data["level"] == "phase" and stop.data["accepted"]
    assert stopped.batch_time - stop.batch_time <= 60.0  # its next safe point
    await run.until_state(S.HELD)
    assert culture.logic.elapsed_s < 6 * HOUR
    assert "stopped: held for a decision" in run.batch.hold_reason
    assert not [e for e in run.kinds("safe_state") if e.batch_time < stopped.batch_time]
    with pytest.raises(CommandRefused):  # ending an element is a decision taken while running
        run.batch.command("stop", who="bob", why="again", level="unit")
    run.batch.command("restart", who="bob", why="harvest now")
    assert await finished(run) is S.COMPLETE
    assert run.kinds("harvest")


@pytest.mark.parametrize(("command", "final"), [("stop", S.STOPPED), ("abort", S.ABORTED)])
async def test_a_unit_ended_with_nothing_after_it_ends_the_batch_never_complete(
    running: Any, command: str, final: S
) -> None:
    """The smoke recipe's one unit stopped (aborted) mid-culture: nothing of the procedure
    remains to decide on, so the batch ends Stopped (Aborted) with its equipment driven to
    its stop (abort) state. Before, it held, and a restart ended it Complete with no
    culture or harvest done."""
    run = await running()
    await run.until_phase_running("2:culture")
    step = run.batch.current
    assert step is not None
    run.batch.command(command, who="sam", why="batch withdrawn", level="unit")
    assert await finished(run) is final
    assert step.unit.state is final
    assert run.procedure_states()[-2:] == [f"{final.label[:-2]}ing", final.label]
    assert "Complete" not in run.procedure_states() and not run.kinds("harvest")
    ended = run.kinds("command")[-1].data
    assert (ended["command"], ended["operator"]) == (command, "engine")
    assert "nothing of the procedure remains" in ended["reason"]
    assert {e.source for e in run.kinds("safe_state")} >= {"bioreactor", "electroporator"}


@pytest.mark.parametrize(("held", "restarted"), [("operation", "phase"), ("unit", "operation")])
async def test_a_restart_below_a_held_element_is_refused_and_writes_nothing(
    running: Any, held: str, restarted: str
) -> None:
    """A hold of the operation (unit) stands until that element is restarted: a restart
    given to the phase (operation) below it would re-establish every setpoint, perfusion
    and gas flows too, while the hold stands. It is refused, naming what to restart."""
    run = await running()
    await run.until_phase_running("2:culture")
    run.batch.command("hold", who="bob", why="inspect the bag", level=held)
    await run.clock.sleep(5 * 60)
    step = run.batch.current
    assert step is not None and getattr(step, held).state is S.HELD
    refused_at = run.clock.now()
    with pytest.raises(CommandRefused, match=f"restart it \\(--level {held}\\)"):
        run.batch.command("restart", who="bob", why="go on", level=restarted)
    await run.clock.sleep(5 * 60)
    assert getattr(step, held).state is S.HELD and step.phase.state is S.HELD
    rewritten = [  # the DO loop writes the gas (kept under control); nothing else
        e for e in run.kinds("setpoint") if e.batch_time >= refused_at and e.source != "gas"
    ]
    assert not rewritten, rewritten
    refused = run.kinds("command")[-1].data
    assert (refused["command"], refused["level"], refused["accepted"]) == (
        "restart",
        restarted,
        False,
    )
    run.batch.command("restart", who="bob", why="go on", level=held)
    assert await finished(run) is S.COMPLETE


async def test_an_operation_aborted_ends_at_once_its_equipment_safe(running: Any) -> None:
    run = await running()
    await run.until_phase_running("2:culture")
    await run.clock.sleep(HOUR + 17)  # mid-step: an abort does not wait for the safe point
    step = run.batch.current
    assert step is not None
    run.batch.command("abort", who="bob", why="bag leak suspected", level="operation")
    aborted = await run.until(
        lambda e: (
            e.kind == "transition"
            and e.source == step.operation.element
            and e.data["to"] == "Aborted"
        )
    )
    assert aborted.batch_time - run.kinds("command")[-1].batch_time < 5.0
    safe = [
        e
        for e in run.kinds("safe_state")
        if e.data.get("why") == f"{step.operation.element} aborted"
    ]
    assert {e.source for e in safe} == {"bioreactor", "gas", "electroporator"}
    await run.until_state(S.HELD)
    run.batch.command("restart", who="bob", why="leak test passed: harvest")
    assert await finished(run) is S.COMPLETE
    assert step.phase.state is S.ABORTED


async def test_an_aborted_phase_keeps_its_equipment_safe_through_the_hold_that_follows(
    running: Any,
) -> None:
    run = await running()
    await run.until_phase_running("2:culture")
    run.batch.command("abort", who="bob", why="gas line suspect", level="phase")
    await run.until_state(S.HELD)
    held_at = run.clock.now()
    await run.clock.sleep(2 * HOUR)
    # The phase's items were made safe; the procedure hold after it does not take the gas
    # dispenser back under DO control.
    flows = [
        e
        for e in run.kinds("setpoint")
        if e.batch_time > held_at and e.source == "gas" and "flow" in e.data["parameter"]
    ]
    assert not flows
    assert not run.kinds("control_kept")
    run.batch.command("restart", who="bob", why="line checked")
    assert await finished(run) is S.COMPLETE


async def _in_culture(running: Any, command: str, state: S) -> tuple[Any, Any]:
    """A smoke batch in its culture phase, given ``command`` by bob and now in ``state``."""
    run = await running()
    await run.until_phase_running("2:culture")
    step = run.batch.current
    assert step is not None
    run.batch.command(command, who="bob", why=f"{command} in the culture")
    await run.until_state(state)
    return run, step


@pytest.mark.parametrize("landed", [True, False], ids=["paused", "still pausing"])
async def test_a_phase_held_while_the_procedure_pauses_is_driven_and_held_at_once(
    running: Any, landed: bool
) -> None:
    """A phase hold while the procedure is Paused, or still Pausing (its pause not yet at
    the phase's safe point): its items are driven and it is Held within a poll, by its own
    hold. Before, it sat in Holding until a resume (Paused), or the pause carried it to
    Held with nothing driven (Pausing)."""
    run = await running()
    await run.until_phase_running("2:culture")
    step = run.batch.current
    assert step is not None
    run.batch.command("pause", who="bob", why="shift change")
    if landed:
        await run.until_state(S.PAUSED)
        await run.clock.sleep(HOUR)
    else:
        assert run.batch.state is S.PAUSING
    hold = run.batch.command("hold", who="bob", why="look at the bag", level="phase")
    held = await run.until(
        lambda e: (
            e.kind == "transition" and e.source == step.phase.element and e.data["to"] == "Held"
        )
    )
    await run.until_state(S.PAUSED)
    assert held.batch_time - hold.batch_time <= 60.0 and held.data["why"] == "look at the bag"
    driven = [e for e in run.kinds("safe_state") + run.kinds("control_kept") if e.seq > hold.seq]
    assert driven and all(e.seq < held.seq for e in driven)
    run.batch.command("resume", who="bob", why="back")
    await run.clock.sleep(HOUR)
    assert step.phase.state is S.HELD  # the phase waits for its own restart
    run.batch.command("restart", who="bob", why="bag fine", level="phase")
    assert await finished(run) is S.COMPLETE


async def test_below_a_held_procedure_restart_stop_and_abort_are_refused_saying_why(
    running: Any,
) -> None:
    """A procedure hold holds every element below it; restarting (stopping, aborting) one
    of them alone is refused, naming what to do instead, and changes nothing."""
    run, step = await _in_culture(running, "hold", S.HELD)
    for command in ("restart", "stop", "abort"):
        with pytest.raises(
            CommandRefused, match=r"the procedure is Held: .* give them to the procedure"
        ):
            run.batch.command(command, who="sam", why="x", level="phase")
    assert step.phase.state is S.HELD
    await run.clock.sleep(HOUR)
    assert step.phase.state is S.HELD and run.batch.state is S.HELD
    run.batch.command("restart", who="bob", why="fine")
    assert await finished(run) is S.COMPLETE


async def test_a_held_phase_stays_held_across_a_pause_of_the_procedure_and_can_be_stopped(
    running: Any,
) -> None:
    run = await running()
    await run.until_phase_running("2:culture")
    step = run.batch.current
    assert step is not None
    run.batch.command("hold", who="bob", why="look at the bag", level="phase")
    await run.until(
        lambda e: (
            e.kind == "transition" and e.source == step.phase.element and e.data["to"] == "Held"
        )
    )
    elapsed = step.logic.elapsed_s
    run.batch.command("pause", who="bob", why="shift change")
    await run.until_state(S.PAUSED)
    run.batch.command("resume", who="bob", why="back")
    await run.clock.sleep(HOUR)
    assert step.phase.state is S.HELD and step.logic.elapsed_s == elapsed  # not run again
    run.batch.command("stop", who="bob", why="enough culture", level="phase")
    await run.until_state(S.HELD)
    assert step.phase.state is S.STOPPED
    run.batch.command("restart", who="bob", why="harvest")
    assert await finished(run) is S.COMPLETE


async def test_pause_and_resume_at_a_level_below_the_procedure_are_invalid(running: Any) -> None:
    """Pause and resume act on the whole procedure: one asked of a phase is refused as
    invalid, not quietly widened to the procedure."""
    run = await running()
    await run.until_phase_running("2:culture")
    for command in ("pause", "resume"):
        with pytest.raises(ValueError, match=f"{command} acts on the whole procedure"):
            run.batch.command(command, who="bob", why="x", level="phase")
    assert run.batch.state is S.RUNNING and not run.kinds("command")
    run.batch.command("abort", who="sam", why="done")
    assert await finished(run) is S.ABORTED


async def test_a_run_cancelled_mid_batch_lets_go_of_its_command_address(tmp_path: Any) -> None:
    """Cancelling ``run_batch_async`` (a test's or a supervisor's timeout) while the batch
    takes commands: it ends with the batch's command server closed and the address free
    for a resume. Before, the runner closed the socket under the listening server and the
    loop spun on the dead descriptor for ever."""
    import asyncio

    from twin.bench import load_bench
    from twin.engine.inbox import claim_command_address
    from twin.recipe import load_recipe
    from twin.runner import run_batch_async

    journal = tmp_path / "cancelled.sqlite"
    recipe = load_recipe(ROOT / "recipes" / "smoke.yaml")
    bench = load_bench(ROOT / "benches" / "sim.yaml")
    task = asyncio.ensure_future(
        run_batch_async(recipe, bench, journal, batch_id="C", operator="bob")
    )
    await asyncio.sleep(HOUR)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watched = asyncio.get_running_loop()._selector.get_map().values()  # type: ignore[attr-defined]
    assert all(key.fileobj.fileno() >= 0 for key in watched if hasattr(key.fileobj, "fileno"))
    await asyncio.sleep(60.0)  # the loop goes on, and time with it
    claim_command_address(journal).close()  # free: a resume could take it
