"""Chain of identity and electroporation: the scan must match before any pulse, and the cells
really go through the chamber (twin over the electroporator's serial protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from batch_harness import HOUR, ROOT, S, finished

from twin.engine.interlocks import check_write
from twin.equipment import BioreactorLimits, GasDispenserLimits
from twin.errors import InterlockTripped

NONVIRAL = (ROOT / "recipes" / "car_t_nonviral.yaml").read_text()


def short(text: str) -> str:
    """The non-viral recipe with hours instead of days of culture, to keep the test quick, for
    a child's dose (10 kg at 1e6 CAR+ cells/kg) that hours of culture can give."""
    return (
        text.replace("value: 7 d, min: 5 d", "value: 2 h, min: 1 h")
        .replace("patient_weight: {value: 70 kg", "patient_weight: {value: 10 kg")
        .replace("dose_per_kg: {value: 2.0e+6", "dose_per_kg: {value: 1.0e+6")
        .replace("duration_h: 2 d", "duration_h: 6 h")
        .replace("duration_h: 1 d", "duration_h: 2 h")
    )


async def test_matching_scan_unlocks_electroporation(running: Any) -> None:
    run = await running("nv.yaml", short(NONVIRAL), patient_id="P-0042", bag_id="BAG-7781")
    await run.until(lambda e: e.kind == "identity_requested")
    assert not run.kinds("pulse")
    run.batch.present_identity("P-0042", "BAG-7781", who="nurse.kim", why="scanned at the bag")
    assert await finished(run) is S.COMPLETE
    confirmation = run.kinds("identity_confirmation")[0].data
    assert confirmation["match"] and confirmation["operator"] == "nurse.kim"
    pulses = run.kinds("pulse")
    assert len(pulses) == 45  # 90 mL in 2 mL portions
    assert all(p.data["field_v_per_cm"] == pytest.approx(2500, rel=0.01) for p in pulses)
    assert run.kinds("identity_confirmation")[0].seq < pulses[0].seq
    check = next(e for e in run.kinds("sample") if e.batch_time > pulses[-1].batch_time)
    assert check.data["transduced_pct"] > 30  # a stable-expression fraction, as non-viral gives
    assert 50 < check.data["viability_pct"] < 95
    (formulation,) = run.kinds("formulation")
    assert formulation.data["dose_car_positive_cells"] == pytest.approx(1.0e7)
    assert formulation.data["final_volume_ml"] == 70.0


async def test_mismatched_scan_aborts_before_any_pulse(running: Any) -> None:
    run = await running("nv.yaml", short(NONVIRAL), patient_id="P-0042", bag_id="BAG-7781")
    await run.until(lambda e: e.kind == "identity_requested")
    run.batch.present_identity("P-0042", "BAG-0001", who="nurse.kim", why="scanned at the bag")
    assert await finished(run) is S.ABORTED  # the recipe says: on_failure abort
    alarm = run.kinds("alarm")[0].data
    assert "identity mismatch" in alarm["message"] and "BAG-0001" in alarm["message"]
    assert not run.kinds("pulse")


async def test_no_recipe_can_pulse_before_identity(running: Any) -> None:
    text = short(NONVIRAL).replace("          - {phase: confirm_identity, on_failure: abort}\n", "")
    run = await running("nv.yaml", text, patient_id="P-0042", bag_id="BAG-7781")
    await run.until_state(S.HELD)
    alarm = run.kinds("alarm")[0].data
    assert alarm["alarm"] == "interlock"
    assert "no electroporation before the chain of identity is confirmed" in alarm["message"]
    assert not run.kinds("pulse")
    run.batch.command("abort", who="qa", why="recipe error")
    assert await finished(run) is S.ABORTED


class _Bag:
    limits = BioreactorLimits()


class _Gas:
    limits = GasDispenserLimits()


@pytest.mark.parametrize(
    ("item", "parameter", "value", "message"),
    [
        (_Bag(), "temperature_sp", 41.0, "outside 4-40 °C"),
        (_Bag(), "temperature_sp", 3.0, "outside 4-40 °C"),
        (_Gas(), "o2_flow_sp", 150.0, "above the O2 cap 100 sccm"),
        (_Gas(), "n2_flow_sp", 900.0, "full scale 500"),
        (object(), "pulse", True, "chain of identity"),
        (object(), "add_vector", 4.2, "no vector before the chain of identity"),
    ],
)
def test_interlocks_refuse_unsafe_writes(
    item: Any, parameter: str, value: Any, message: str
) -> None:
    with pytest.raises(InterlockTripped, match=message):
        check_write("x", item, parameter, value, identity_confirmed=False)


def test_interlocks_allow_safe_writes() -> None:
    check_write("x", _Bag(), "temperature_sp", 37.0, identity_confirmed=False)
    check_write("x", _Gas(), "o2_flow_sp", 100.0, identity_confirmed=False)
    check_write("x", object(), "pulse", True, identity_confirmed=True)
    check_write("x", object(), "add_vector", 4.2, identity_confirmed=True)
    check_write("x", object(), "add_medium", 400.0, identity_confirmed=False)


VIRAL = (ROOT / "recipes" / "car_t_autologous.yaml").read_text()


async def test_the_viral_recipe_doses_vector_only_after_the_scan_matched(running: Any) -> None:
    """Day 1: the batch asks for the scan before the count and the vector; it waits (a
    person's act) and doses the patient's cells only after the wristband and bag matched."""
    run = await running("lv.yaml", VIRAL, patient_id="P-0042", bag_id="BAG-7781")
    asked = await run.until(lambda e: e.kind == "identity_requested")
    assert asked.batch_time >= 24 * HOUR  # after the day of activation
    assert run.batch.awaiting_person
    await run.clock.sleep(600.0)
    assert not [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_vector"]
    run.batch.present_identity("P-0042", "BAG-7781", who="nurse.kim", why="scanned at the bag")
    dose = await run.until(lambda e: e.kind == "setpoint" and e.data["parameter"] == "add_vector")
    (confirmed,) = run.kinds("identity_confirmation")
    assert confirmed.data["match"] and confirmed.seq < dose.seq


async def test_no_recipe_can_dose_vector_before_identity(running: Any) -> None:
    text = VIRAL.replace("          - {phase: confirm_identity, on_failure: abort}\n", "")
    run = await running("lv.yaml", text, patient_id="P-0042", bag_id="BAG-7781")
    await run.until_state(S.HELD)
    alarm = run.kinds("alarm")[0].data
    assert alarm["alarm"] == "interlock" and "no vector before the chain" in alarm["message"]
    assert not [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_vector"]


async def test_a_dose_the_interlock_refused_is_not_taken_as_given_on_restart(
    running: Any,
) -> None:
    """The vector refused (no identity confirmed), then a restart: the add phase tries
    again and is refused again; it never completes without its dose. Before, the phase
    counted the refused dose as given and the batch ran on without vector."""
    text = VIRAL.replace("          - {phase: confirm_identity, on_failure: abort}\n", "")
    run = await running("lv.yaml", text, patient_id="P-0042", bag_id="BAG-7781")
    await run.until_state(S.HELD)
    add = run.batch.current
    assert add is not None and "add" in add.path
    run.batch.command("restart", who="kim", why="try again")
    await run.until(lambda e: len(run.kinds("alarm")) == 2)
    await run.until_state(S.HELD)
    alarms = [e.data for e in run.kinds("alarm")]
    assert all("no vector before the chain" in a["message"] for a in alarms)
    assert add.phase.state is not S.COMPLETE and run.batch.current is add
    assert not [e for e in run.kinds("setpoint") if e.data["parameter"] == "add_vector"]
    run.batch.command("stop", who="sam", why="no identity: withdrawn")
    assert await finished(run) is S.STOPPED


def test_shipped_nonviral_recipe_validates() -> None:
    from twin.recipe import load_recipe

    loaded = load_recipe(Path(ROOT / "recipes" / "car_t_nonviral.yaml"))
    assert loaded.parameters["pulse_voltage"] == 750


async def test_a_pause_while_waiting_for_the_scan_takes_effect_and_the_scan_is_asked_again(
    running: Any,
) -> None:
    """Waiting for a person's scan is a safe point: a pause takes effect at once (not when
    someone scans), the batch waits Paused on a person, and on resume it asks again."""
    run = await running("nv.yaml", short(NONVIRAL), patient_id="P-0042", bag_id="BAG-7781")
    await run.until(lambda e: e.kind == "identity_requested")
    assert run.batch.awaiting_person
    run.batch.command("pause", who="kim", why="scanner battery")
    await run.until_state(S.PAUSED)
    pause = next(e for e in run.kinds("command") if e.data["command"] == "pause")
    paused = [e for e in run.kinds("transition") if e.data["to"] == "Paused"][-1]
    assert paused.batch_time - pause.batch_time <= 60.0
    assert run.batch.awaiting_person  # paused: still a person's move
    run.batch.command("resume", who="kim", why="new battery")
    await run.until(lambda e: len(run.kinds("identity_requested")) == 2)
    run.batch.present_identity("P-0042", "BAG-7781", who="kim", why="scanned at the bag")
    assert await finished(run) is S.COMPLETE
    assert len(run.kinds("identity_confirmation")) == 1


async def test_a_scan_accepted_just_before_a_hold_is_recorded_and_taken_on_restart(
    running: Any,
) -> None:
    """The scan is answered "accepted"; a hold lands before the phase has taken it. The scan
    is in the record as it was accepted, and the restarted phase takes it without asking
    again. Before, it was dropped after being answered "accepted" (the batch asked again)."""
    run = await running("nv.yaml", short(NONVIRAL), patient_id="P-0042", bag_id="BAG-7781")
    await run.until(lambda e: e.kind == "identity_requested")
    run.batch.present_identity("P-0042", "BAG-7781", who="kim", why="scanned at the bag")
    run.batch.command("hold", who="sam", why="scanner alarm")  # same instant: not yet taken
    (confirmation,) = run.kinds("identity_confirmation")  # recorded as accepted
    assert confirmation.data["match"] and confirmation.data["operator"] == "kim"
    await run.until_state(S.HELD)
    run.batch.command("restart", who="sam", why="go on")
    assert await finished(run) is S.COMPLETE
    assert len(run.kinds("identity_requested")) == 1  # not asked again
    assert len(run.kinds("identity_confirmation")) == 1
    assert run.kinds("identity_confirmation")[0].seq < run.kinds("pulse")[0].seq


@pytest.mark.parametrize("at", ["load", "pulse"])
async def test_a_hold_mid_portion_pulses_every_portion_once(running: Any, at: str) -> None:
    """An operator holds the batch as the 10th portion is being loaded (or fired): after the
    restart that portion is pulsed if it never was, never twice if it was, and the phase
    still processes exactly its 90 mL in 45 portions, all returned to the culture."""
    import asyncio

    run = await running("nv.yaml", short(NONVIRAL), patient_id="P-0042", bag_id="BAG-7781")
    loop = asyncio.get_running_loop()
    seen = {"n": 0}

    def hold_on_the_tenth(event: Any) -> None:
        if event.kind == "setpoint" and event.data.get("parameter") == at:
            seen["n"] += 1
            if seen["n"] == 10:
                loop.call_soon(lambda: run.batch.command("hold", who="kim", why="bag line kinked"))

    run.journal.subscribe(hold_on_the_tenth)
    await run.until(lambda e: e.kind == "identity_requested")
    run.batch.present_identity("P-0042", "BAG-7781", who="nurse.kim", why="scanned at the bag")
    async with run.clock.timeout(2 * 86400):
        await run.until_state(S.HELD)
    run.batch.command("restart", who="kim", why="line freed")
    assert await finished(run) is S.COMPLETE
    loads = [e.data["value"] for e in run.kinds("setpoint") if e.data["parameter"] == "load"]
    fired = [e for e in run.kinds("setpoint") if e.data["parameter"] == "pulse"]
    assert len(fired) == 45 and len(loads) == 45, (len(fired), loads)  # each portion once
    assert sum(loads) == pytest.approx(90_000.0)
    # a pulse cut short by the hold may have gone out without its result: never re-fired
    assert len(run.kinds("pulse")) == (44 if at == "pulse" else 45)
    recovered = [e for e in run.kinds("setpoint") if e.data["parameter"] == "recover"]
    assert len(recovered) == 1


@pytest.mark.parametrize(("command", "level"), [("stop", "phase"), ("abort", "operation")])
async def test_the_identity_check_cannot_be_ended_early_below_the_procedure(
    running: Any, command: str, level: str
) -> None:
    """A supervisor stops the waiting confirm_identity phase (or aborts its operation): that
    would let a restart go on with no chain of identity (before: a dose and the harvest ran
    on unconfirmed cells, or the vector's interlock held every restart, leaving only an
    abort the station did not point to). Refused, naming the phase; the procedure itself
    can still be stopped or aborted, and a confirmed identity lifts the refusal."""
    from twin.errors import CommandRefused

    run = await running("nv.yaml", short(NONVIRAL), patient_id="P-0042", bag_id="BAG-7781")
    await run.until(lambda e: e.kind == "identity_requested")
    with pytest.raises(CommandRefused) as refused:
        run.batch.command(command, who="sam", why="no wristband", level=level)
    assert "confirm_identity" in str(refused.value) and "chain of identity" in str(refused.value)
    assert f"{command} the procedure" in str(refused.value)
    assert command not in refused.value.valid
    await run.clock.sleep(HOUR)
    assert run.batch.state is S.RUNNING and not run.kinds("pulse")
    run.batch.command(command, who="sam", why="no wristband")  # the whole procedure: fine
    assert await finished(run) in (S.STOPPED, S.ABORTED)
    assert not run.kinds("pulse") and not run.kinds("harvest")


async def test_a_confirmed_identity_lets_a_later_element_end_early(running: Any) -> None:
    """Once the scan matched, a later phase may be stopped. The phase stopped here (the
    post-electroporation check) reaches its end before any safe point: it ends Stopped and
    the procedure holds for a decision. Before, it was finished Stopped on its own and the
    procedure waited for ever (Running, nothing to restart)."""
    run = await running("nv.yaml", short(NONVIRAL), patient_id="P-0042", bag_id="BAG-7781")
    await run.until(lambda e: e.kind == "identity_requested")
    run.batch.present_identity("P-0042", "BAG-7781", who="nurse.kim", why="scanned at the bag")
    await run.until(lambda e: e.kind == "identity_confirmation")
    await run.clock.sleep(60.0)
    run.batch.command("stop", who="sam", why="skip it", level="phase")  # not refused
    async with run.clock.timeout(6 * HOUR):
        await run.until(
            lambda e: (
                e.kind == "transition"
                and e.source.startswith("procedure:")
                and e.data["to"] == "Held"
            )
        )
    stopped = [e for e in run.kinds("transition") if e.data["to"] == "Stopped"]
    assert stopped and stopped[0].source.startswith("phase:")
