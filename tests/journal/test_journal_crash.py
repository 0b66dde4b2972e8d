"""Crash safety, proven on real processes: SIGKILL a running batch at many seeded random points.

Each child runs the smoke recipe on the twin and prints every acknowledged event
(committed, then acted on) as it happens. The parent kills it with SIGKILL after
a random number of acknowledgements (plus a random few milliseconds, so kills
also land inside transactions), or at a random moment during start-up. Then the
journal must verify, hold every acknowledged event with the same hash, and its
signed checkpoints must still check out.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from site_users import PEOPLE

from twin.journal import read_events, verify
from twin.signing import check_journal_signatures, generate_site_key, load_public_key

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("journal_crash_child.py")
SEED = 20261125
KILLS = 24
#: The smoke batch acknowledges about 125 events (checkpoints every 100 included); kill
#: well before its end.
MAX_ACKS = 100


@dataclass
class Kill:
    n: int
    journal: Path
    after_acks: int | None
    delay_s: float
    acked: list[tuple[int, str, str]] = field(default_factory=list)
    returncode: int | None = None


def run_and_kill(kill: Kill, env: dict[str, str]) -> Kill:
    """Start the child, SIGKILL it at the planned point, collect every line it printed."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "recipes/smoke.yaml", "benches/sim.yaml", str(kill.journal)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if kill.after_acks is None:  # somewhere in start-up: imports, twin, journal creation
        time.sleep(kill.delay_s)
        proc.send_signal(signal.SIGKILL)
    else:
        for line in proc.stdout:
            seq, kind, digest = line.split()
            kill.acked.append((int(seq), kind, digest))
            if len(kill.acked) >= kill.after_acks:
                time.sleep(kill.delay_s)
                proc.send_signal(signal.SIGKILL)
                break
    for line in proc.stdout:  # lines already in the pipe were acknowledged too
        seq, kind, digest = line.split()
        kill.acked.append((int(seq), kind, digest))
    kill.returncode = proc.wait()
    return kill


@pytest.fixture(scope="module")
def kills(tmp_path_factory: pytest.TempPathFactory) -> list[Kill]:
    tmp = tmp_path_factory.mktemp("kills")
    private, public = generate_site_key("crash-site", tmp / "keys")
    env = {**os.environ, "POC_TWIN_SITE_KEY": str(private), "PYTHONPATH": str(ROOT)}
    rng = random.Random(SEED)
    plan = []
    for n in range(KILLS):
        journal = tmp / f"kill-{n:02d}.sqlite"
        if rng.random() < 0.15:
            plan.append(Kill(n, journal, None, rng.uniform(0.0, 1.5)))
        else:
            plan.append(Kill(n, journal, rng.randint(1, MAX_ACKS), rng.choice([0, 0, 0.002, 0.01])))
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda k: run_and_kill(k, env), plan))
    (tmp / "public.pem").write_bytes(public.read_bytes())
    return done


def test_every_killed_journal_verifies_and_keeps_every_acknowledged_event(
    kills: list[Kill], tmp_path_factory: pytest.TempPathFactory
) -> None:
    killed = [k for k in kills if k.returncode == -signal.SIGKILL]
    assert len(killed) == KILLS, "every child must die by SIGKILL, not finish the batch"
    verified = lost = mid_batch = 0
    for k in killed:
        if not k.journal.exists():
            assert not k.acked, f"kill {k.n}: events acknowledged but no journal file"
            verified += 1
            continue
        result = verify(k.journal)
        assert result.ok, f"kill {k.n}: {result.reason} at event {result.first_bad_seq}"
        verified += 1
        have = {e.seq: e.hash for e in read_events(k.journal)}
        missing = [seq for seq, _, digest in k.acked if have.get(seq) != digest]
        lost += len(missing)
        assert not missing, f"kill {k.n}: acknowledged events lost: {missing[:5]}"
        if k.acked and result.events > 1:
            mid_batch += 1
        assert check_journal_signatures(k.journal).ok
    print(
        f"\n{KILLS} kills (seed {SEED}), {verified} verified, {mid_batch} mid-batch, "
        f"{sum(len(k.acked) for k in killed)} acknowledged events checked, {lost} lost"
    )
    assert mid_batch >= KILLS // 2, "most kills must land inside a running batch"


def test_signed_checkpoints_survive_the_kills(kills: list[Kill]) -> None:
    """Journals killed after their first checkpoint still verify against the site's public key."""
    public = load_public_key(kills[0].journal.parent / "public.pem")
    signed = 0
    for k in kills:
        if k.journal.exists() and any(kind == "checkpoint" for _, kind, _ in k.acked):
            check = check_journal_signatures(k.journal, public)
            assert check.ok, f"kill {k.n}: {check.reason}"
            signed += 1
    assert signed >= KILLS // 2, "most kills must land after a signed checkpoint"


def resume_killed(k: Kill, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``poc-twin resume --restart`` in its own process, as an operator would run it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "twin.cli",
            "resume",
            str(k.journal),
            "--restart",
            "-q",
            "--operator",
            "sam",
            "--reason",
            "process killed in the crash test",
        ],
        input=PEOPLE["sam"][2] + "\n",  # a supervisor signs the resume
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_killed_batch_resumes_to_complete_and_replays(kills: list[Kill]) -> None:
    """K kills, K verified, K resumed to Complete: same chain, nothing acknowledged lost,
    the interruption recorded as a deviation, and the whole resumed batch replays identically."""
    from twin.replay import replay

    private = kills[0].journal.parent / "keys" / "crash-site.key"
    env = {**os.environ, "POC_TWIN_SITE_KEY": str(private), "PYTHONPATH": str(ROOT)}
    started = [
        k
        for k in kills
        if k.journal.exists() and any(e.kind == "batch_started" for e in read_events(k.journal))
    ]
    before = {k.n: [(e.seq, e.hash) for e in read_events(k.journal)] for k in started}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda k: resume_killed(k, env), started))
    complete = 0
    for k, proc in zip(started, results, strict=True):
        assert proc.returncode == 0, f"kill {k.n}: resume exit {proc.returncode}: {proc.stderr}"
        assert verify(k.journal).ok
        events = list(read_events(k.journal))
        assert [(e.seq, e.hash) for e in events[: len(before[k.n])]] == before[k.n]
        deviations = [e for e in events if e.kind == "deviation"]
        assert len(deviations) == 1 and deviations[0].data["last_seq"] == before[k.n][-1][0]
        signed = [
            (e.data["user"], e.data["act"])
            for e in events
            if e.kind == "signature" and e.seq > before[k.n][-1][0]
        ]
        assert signed[:2] == [("sam", "resume-interrupted"), ("sam", "restart")]  # each act
        assert events[-1].kind in ("batch_ended", "checkpoint")
        assert any(e.kind == "batch_ended" and e.data["state"] == "Complete" for e in events)
        assert check_journal_signatures(k.journal).ok
        assert replay(k.journal).identical, f"kill {k.n}: resumed batch does not replay"
        complete += 1
    print(f"\n{len(started)} killed mid-batch, {complete} resumed to Complete, replayed identical")
    assert len(started) >= KILLS // 2
