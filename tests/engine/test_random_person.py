"""A random person at the batch: commands, scans and waits at random batch times, each seed
one batch (the real engine on the sim bench's twin, virtual time), checked as a user would:

- a command the contract (STATE_MODEL.md) and docs/recipes.md allow is accepted, one they
  do not is refused naming the state and the valid commands, and changes nothing;
- an accepted command takes effect (the state the contract names) within one poll period;
- readings are journalled every poll period in every state, and batch time follows the
  wall (the clock is told) exactly while only a person can move the batch on;
- a stop or abort always ends the batch; the journal verifies and its replay reproduces it;
- no dose, media exchange, harvest or chamber load is begun twice, nor once a hold, stop or
  abort is accepted (until that element is restarted).

The person acts where a command from the socket lands: when the engine waits (the loop
polls before its clock jumps), or on the loop turn after a phase starts. Commands given
while the engine is part-way through its reaction to another one (two in one loop turn, or
one while a hold's drive runs) are placed by the replay after the event before them: a
drive journals where it begins (``drive``), so an input that landed while it ran is replayed
after that, where the engine had got to.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from batch_harness import draft_recipe

from twin.bench import load_bench
from twin.clock import Clock, VirtualTimeLoop
from twin.engine.batch import ENDS_EARLY_FROM, Batch
from twin.engine.lots import LotScan, NoScanWanted
from twin.engine.states import LEVELS, TABLE, Command, ProceduralState, StateMachine
from twin.errors import CommandRefused
from twin.journal import Event, verify
from twin.recipe import load_recipe
from twin.replay import replay
from twin.runner import run_batch_async

ROOT = Path(__file__).resolve().parents[2]
S = ProceduralState
C = Command
POLL_S = 60.0
#: Slack on "within one poll period": the drive or rewrite of a command in flight.
SLACK_S = 5.0
PATIENT, BAG = "P-0042", "BAG-7781"

RECIPE = (
    draft_recipe("random-person")
    + """\
equipment:
  bioreactor: {type: bioreactor}
  gas: {type: gas_dispenser}
  electroporator: {type: electroporator}
procedure:
  - unit_procedure: expansion
    operations:
      - operation: conditioning
        phases:
          - {phase: set_rocking, rpm: 10}
          - {phase: set_gas, flows_sccm: {air: 190, co2: 10}}
          - {phase: set_temperature, setpoint_c: 37.0, tolerance_c: 0.5}
          - {phase: add, material: activator, volume_ml: 2.0, scan_lot: true}
          - phase: culture
            duration_h: 2
            do_setpoint_pct: 40
            sample_every_h: 1
            ph_setpoint: 8.0  # acid for the bag: base doses of 72 s, more than a poll
            base_dose_ml: 120
            base_interval_h: 0.5
      - operation: gene_transfer
        phases:
          - {phase: confirm_identity}
          - phase: electroporate
            volume_ml: 8
            chamber_ul: 2000
            voltage_v: 700
            pulse_width_us: 20
            pulse_count: 1
            gap_mm: 3.0
          - {phase: wait, duration_h: 0.5}
          - {phase: media_exchange, volume_ml: 20, rate_ml_per_h: 60}
  - unit_procedure: finish
    operations:
      - operation: harvest
        phases:
          - {phase: add, material: il2, volume_ml: 1.0}
          - {phase: sample, min_viability_pct: 10}
          - {phase: harvest}
"""
)

#: Where a command, accepted, settles: the state the contract names after its '-ing' state.
SETTLES = {
    C.HOLD: {S.HELD},
    C.PAUSE: {S.PAUSED},
    C.STOP: {S.STOPPED},
    C.ABORT: {S.ABORTED},
    C.RESTART: {S.RUNNING, S.COMPLETE},
    C.RESUME: {S.RUNNING, S.COMPLETE},
}
DESTINATION = {(c, src): dst for c, src, dst in TABLE}

#: Setpoints that begin an action no hold, stop or abort may find begun after it.
ACTIONS = ("add_activator", "add_il2", "harvest", "load")
FAST_ML_PER_DAY = 60.0 * 24.0


@dataclass
class Person:
    """Gives random commands and scans; keeps what it did for the failure's message."""

    rng: random.Random
    batch: Batch
    clock: Clock
    events: list[Event]
    did: list[str] = field(default_factory=list)
    #: The batch's run (its end, or its failure, ends the person's acts).
    run: asyncio.Task[Any] | None = None

    @property
    def over(self) -> bool:
        return self.batch.state.is_final or (self.run is not None and self.run.done())

    def note(self, text: str) -> None:
        self.did.append(f"t={self.clock.now():.0f} {text} -> {self.batch.status}")

    def machines(self) -> list[StateMachine]:
        seen: dict[int, StateMachine] = {id(self.batch.procedure): self.batch.procedure}
        for step in self.batch.steps:
            for m in (step.unit, step.operation, step.phase):
                seen.setdefault(id(m), m)
        return list(seen.values())

    def expected_acceptance(self, cmd: C, level: str) -> bool:
        """The contract's table plus docs/recipes.md's rules for levels below the procedure."""
        chain = self.batch._chain()
        index = LEVELS.index(level)
        if index >= len(chain):
            return False
        target = chain[index]
        if (cmd, target.state) not in DESTINATION:
            return False
        if level == "procedure":
            return True
        if cmd in (C.RESTART, C.STOP, C.ABORT):
            if self.batch.state is not S.RUNNING:
                return False
            if any(m.state is not S.RUNNING for m in chain[1:index]):
                return False  # a held element above: restart or end that one
        if cmd in (C.STOP, C.ABORT) and self.batch.ctx.identity is None:
            # docs/recipes.md: no element ends early past an unconfirmed chain of identity
            rest = self.batch.steps[self.batch.position :]
            if any(
                target in (s.unit, s.operation, s.phase)
                and s.logic.params.phase == "confirm_identity"
                for s in rest
            ):
                return False
        return cmd not in (C.STOP, C.ABORT) or target.state in ENDS_EARLY_FROM

    async def command(self, cmd: C, level: str, watch: bool) -> None:
        if self.over:  # (its command socket is closed)
            return
        batch = self.batch
        chain = batch._chain()
        target = chain[LEVELS.index(level)] if LEVELS.index(level) < len(chain) else None
        before = {id(m): m.state for m in self.machines()}
        prior = target.state if target is not None else None
        expected = self.expected_acceptance(cmd, level)
        n = len(self.events)
        try:
            batch.command(cmd, who="kim", why="random person", level=level)
        except CommandRefused as exc:
            self.note(f"{cmd.value} {level}: refused ({exc})")
            assert not expected, f"{cmd.value} at {level} refused: {exc}\n" + self.story()
            after = {id(m): m.state for m in self.machines()}
            assert after == before, f"a refused {cmd.value} changed states\n" + self.story()
            new = [e for e in self.events[n:] if e.kind != "reading"]
            assert [e.kind for e in new] == ["command"], self.story()
            assert new[0].data["accepted"] is False
            if target is not None:
                assert exc.state == target.state.label
                message = str(exc)
                assert target.state.label in message, message
                for valid in exc.valid:
                    assert valid in message, message
            return
        self.note(f"{cmd.value} {level}: accepted")
        assert expected, f"{cmd.value} at {level} accepted\n" + self.story()
        assert target is not None and prior is not None
        assert target.state is DESTINATION[(cmd, prior)] or target.state in SETTLES[cmd], (
            f"{target.element}: {prior.label} -{cmd.value}-> {target.state.label}\n" + self.story()
        )
        if watch:
            await self.takes_effect(cmd, target, len(self.events))

    async def takes_effect(self, cmd: C, target: StateMachine, since: int) -> None:
        """The element reaches the state the command names within one poll period (unless a
        later command, someone's or the engine's, changed the plan meanwhile)."""
        deadline = self.clock.now() + POLL_S + SLACK_S
        while target.state not in SETTLES[cmd]:
            if any(e.kind == "command" and e.data["accepted"] for e in self.events[since:]):
                return
            if cmd in (C.RESTART, C.RESUME) and target.state.is_final:
                return
            assert self.clock.now() < deadline, (
                f"{cmd.value} of {target.element} not in effect after {POLL_S:g} s: "
                f"{target.state.label}\n" + self.story()
            )
            await self.clock.sleep(1.0)

    async def quiet(self) -> None:
        """Until the engine waits (on a timer or a person): where the loop takes a command
        from the socket before its clock jumps."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        await loop.settle()

    async def next_phase_start(self) -> None:
        """Until the loop turn after the next phase starts (before its first write), or an hour."""
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def hear(event: Event) -> None:
            starts = event.kind == "transition" and event.source.startswith("phase:")
            if starts and event.data["to"] == "Running" and not started.done():
                started.set_result(None)

        self.batch.journal.subscribe(hear)
        await asyncio.wait([started], timeout=3600.0)  # (held meanwhile: not for long)

    def scan_identity(self) -> None:
        if self.over:
            return
        if not self.batch.identity_wanted:
            self.note("identity scan: not asked for")
            return
        assert self.batch.present_identity(PATIENT, BAG, who="kim", why="scanned at the bag")
        self.note("identity scanned")

    def scan_lot(self) -> None:
        if self.over:
            return
        expiry = self.clock.batch_datetime().date() + timedelta(days=300)
        material = self.batch.ctx.lots.waiting_for or self.rng.choice(["activator", "il2"])
        try:
            _, refused = self.batch.present_lot(
                LotScan(material, "LOT-1", expiry), who="kim", why="at the bag"
            )
        except NoScanWanted as exc:
            assert self.batch.ctx.lots.waiting_for is None
            self.note(f"lot scan: {exc}")
            return
        assert refused is None, refused
        self.note("lot scanned")

    def story(self) -> str:
        return "what the person did:\n  " + "\n  ".join(self.did[-25:])

    def pick(self) -> tuple[C, str]:
        rng = self.rng
        cmd = rng.choices(
            [C.HOLD, C.RESTART, C.PAUSE, C.RESUME, C.STOP, C.ABORT],
            weights=[25, 30, 10, 12, 4, 3],
        )[0]
        level = "procedure"
        if cmd not in (C.PAUSE, C.RESUME) and rng.random() < 0.5:
            level = rng.choice(LEVELS[1:])
        if level == "procedure" and cmd in (C.STOP, C.ABORT) and rng.random() < 0.7:
            cmd = C.HOLD  # an early end of the whole batch only now and then
        return cmd, level

    async def act(self, acts: int) -> None:
        rng = self.rng
        for _ in range(acts):
            if rng.random() < 0.15:
                await self.next_phase_start()
            else:
                delay = rng.choice([0.0, 1.0, rng.uniform(2, 120), rng.uniform(300, 3600)])
                await self.clock.sleep(delay)
                await self.quiet()
            if self.over:
                return
            what = rng.random()
            if what < 0.12:
                self.scan_identity()
            elif what < 0.24:
                self.scan_lot()
            else:
                cmd, level = self.pick()
                await self.command(cmd, level, watch=rng.random() < 0.6)

    async def finish(self, how: str) -> None:
        """Bring the batch to its end: on to Complete (restart, resume, scan), or stop or
        abort it; a stop or abort ends it within one poll period."""
        batch = self.batch
        await self.quiet()
        if how in ("stop", "abort"):
            cmd = C(how)
            if batch.procedure.can(cmd):
                await self.command(cmd, "procedure", watch=True)
            elif batch.procedure.can(C.ABORT):
                await self.command(C.ABORT, "procedure", watch=True)
            deadline = self.clock.now() + POLL_S + SLACK_S
            while not batch.state.is_final:
                assert self.clock.now() < deadline, f"not ended: {batch.status}\n" + self.story()
                await self.clock.sleep(1.0)
            return
        deadline = self.clock.now() + 3 * 86400
        while not self.over:
            assert self.clock.now() < deadline, f"never ended: {batch.status}\n" + self.story()
            chain = batch._chain()
            held = [i for i, m in enumerate(chain) if m.state is S.HELD]
            if batch.state is S.PAUSED:
                await self.command(C.RESUME, "procedure", watch=True)
            elif held:
                await self.command(C.RESTART, LEVELS[held[0]], watch=True)
            elif batch.identity_wanted:
                self.scan_identity()
            elif batch.ctx.lots.waiting_for is not None:
                self.scan_lot()
            await self.clock.sleep(30.0)


def _waits_on_a_person(batch: Batch) -> bool:
    """Only a person can move the batch on: Held or Paused (the procedure, or an element
    below a running one), or a scan is awaited."""
    if batch.state in (S.HELD, S.PAUSED):
        return True
    if batch.state is not S.RUNNING:
        return False
    if any(m.state in (S.HELD, S.PAUSED) for m in batch._chain()[1:]):
        return True
    return batch.ctx.lots.waiting_for is not None or batch.identity_wanted


async def _watch_the_clock(batch: Batch, told: list[bool], problems: list[str]) -> None:
    """Whether the clock follows the wall exactly while the batch waits on a person."""
    since: float | None = None
    while not batch.state.is_final:
        waiting = _waits_on_a_person(batch)
        if waiting != told[0]:
            since = batch.clock.now() if since is None else since
            if batch.clock.now() - since > POLL_S:
                problems.append(
                    f"t={batch.clock.now():.0f} {batch.status}: the clock "
                    f"{'jumps' if waiting else 'follows the wall'} since t={since:.0f}"
                )
                return
        else:
            since = None
        await batch.clock.sleep(5.0)


def _action_problems(events: list[Event]) -> list[str]:
    """Actions begun twice, or begun while a hold, stop or abort accepted stood. The rest of
    a dose or harvest a hold cut short (its ``basis`` names the cut setpoint) continues it:
    given once per cut, and a dose's rest is exactly what its pump had not moved."""
    problems: list[str] = []
    begun: dict[str, int] = {}
    blocking: dict[str, int] = {}  # element -> seq of the hold/stop/abort that stands
    cut: dict[int, Event] = {}  # setpoint seq -> its addition/harvest_interrupted
    for e in events:
        if e.kind in ("addition_interrupted", "harvest_interrupted"):
            cut[e.data["setpoint"]] = e
        elif e.kind == "setpoint" and "setpoint" in (e.data.get("basis") or {}):
            of = cut.pop(e.data["basis"]["setpoint"], None)
            if of is None:
                problems.append(f"seq {e.seq}: a rest of no cut transfer (or a second one)")
            elif of.kind == "addition_interrupted":
                rest = of.data["requested_ml"] - of.data["delivered_ml"]
                if abs(e.data["value"] - rest) > 0.01:
                    problems.append(f"seq {e.seq}: rest {e.data['value']} mL, not {rest:g}")
            if blocking:
                problems.append(f"seq {e.seq}: a rest begun after {blocking} accepted")
        elif e.kind == "command" and e.data["accepted"]:
            if e.data["command"] in ("hold", "stop", "abort"):
                blocking.setdefault(e.source, e.seq)
        elif e.kind == "transition":
            if e.data["to"] in ("Running", "Stopped", "Aborted", "Complete", "Idle"):
                blocking.pop(e.source, None)
        elif e.kind == "setpoint" and not e.data.get("restored"):
            name = e.data["parameter"]
            fast = name == "perfusion_sp" and e.data["value"] == FAST_ML_PER_DAY
            if name in ACTIONS or fast:
                key = "media_exchange" if fast else name
                begun[key] = begun.get(key, 0) + 1
                limit = 4 if name == "load" else 1  # 8 mL in 2 mL portions
                if begun[key] > limit:
                    problems.append(f"seq {e.seq}: {key} begun {begun[key]} times")
                if blocking:
                    problems.append(f"seq {e.seq}: {key} begun after {blocking} accepted")
    return problems


def _reading_gaps(events: list[Event]) -> list[str]:
    """Gaps longer than a poll period between the control modules' readings of a device."""
    problems = []
    for device in ("bioreactor", "gas"):
        times = [e.batch_time for e in events if e.kind == "reading" and e.source == device]
        gaps = [(b - a, a) for a, b in itertools.pairwise(times)]
        worst = max(gaps, default=(0.0, 0.0))
        if worst[0] > POLL_S + SLACK_S:
            problems.append(f"{device}: no reading for {worst[0]:.0f} s from t={worst[1]:.0f}")
    return problems


async def _one_batch(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    recipe_path = tmp_path / "random-person.yaml"
    recipe_path.write_text(RECIPE)
    journal_path = tmp_path / "batch.sqlite"
    events: list[Event] = []
    started: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
    told = [False]

    def on_bench(_: Any, clock: Clock) -> None:
        tell = clock.awaiting_person

        def awaiting_person(waiting: bool) -> None:
            told[0] = waiting
            tell(waiting)

        clock.awaiting_person = awaiting_person  # type: ignore[method-assign]

    run = asyncio.create_task(
        run_batch_async(
            load_recipe(recipe_path),
            load_bench(ROOT / "benches" / "sim.yaml"),
            journal_path,
            batch_id=f"R{seed}",
            operator="eve",
            patient_id=PATIENT,
            bag_id=BAG,
            subscribers=[events.append],
            on_bench=on_bench,
            on_batch=started.set_result,
        )
    )
    batch = await started
    while batch.state is S.IDLE:  # (a command before the start is the CLI's to refuse)
        await asyncio.sleep(0)
    person = Person(rng, batch, batch.clock, events, run=run)
    clock_problems: list[str] = []
    watcher = asyncio.create_task(_watch_the_clock(batch, told, clock_problems))
    try:
        await person.act(rng.randint(8, 30))
        await person.finish(rng.choice(["complete", "complete", "stop", "abort"]))
        final = await run
    finally:
        run.cancel()
        watcher.cancel()
        await asyncio.gather(run, watcher, return_exceptions=True)
    assert final.is_final
    problems = clock_problems + _action_problems(events) + _reading_gaps(events)
    assert not problems, "\n".join(problems) + "\n" + person.story()
    assert verify(journal_path).ok
    with ThreadPoolExecutor(1) as other:  # replay on a loop of its own, as `poc-twin replay`
        replayed = other.submit(replay, journal_path).result()
    divergence = replayed.divergence
    assert divergence is None, f"replay: seq {divergence.seq}: {divergence.reason}\n" + (
        person.story()
    )
    assert replayed.identical


#: More seeds for a longer hunt: POC_TWIN_PERSON_SEEDS=12:112 (default 0:12).
FIRST, LAST = (int(n) for n in os.environ.get("POC_TWIN_PERSON_SEEDS", "0:12").split(":"))


#: Seeds beyond the default range that once found a bug, kept in every run: two commands
#: in one instant, the second landing while the first's drive had begun, which the record
#: did not show (22, 68: replay placed it before the drive); a hold landing before the
#: phase supervisor's wait for a change was registered (60: the hold waited for the phase,
#: forever in the replay, as its cut dose never answered).
FOUND_BUGS = (22, 60, 68)


@pytest.mark.parametrize(
    "seed", sorted(set(range(FIRST, LAST)) | ({*FOUND_BUGS} if (FIRST, LAST) == (0, 12) else set()))
)
async def test_a_random_person(tmp_path: Path, seed: int) -> None:
    await _one_batch(tmp_path, seed)
