"""A journal that cannot be written (a full disk) stops the batch, says so, and loses nothing.

Before this, a failed write went into the engine's own fault handling, which journals the
fault: every handler failed in turn and the batch process waited for ever, unrecorded."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from site_users import PEOPLE, Site

from twin.bench import load_bench
from twin.errors import JournalWriteFailed
from twin.journal import Journal, read_events, verify
from twin.recipe import load_recipe
from twin.runner import run_batch_async

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "car_t_autologous.yaml"


def _cap(journal: Journal) -> None:
    """Let the journal's database grow no further: SQLite answers SQLITE_FULL, as on a full disk."""
    assert journal._db is not None
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_failed_write_is_latched_and_what_was_committed_stays(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, lambda: 1.0, signer=None)
    heard: list[JournalWriteFailed] = []
    journal.on_failure(heard.append)
    journal.append("batch_started", "batch", {"batch_id": "b"})
    _cap(journal)
    with pytest.raises(JournalWriteFailed) as first:
        for n in range(10_000):  # readings fill the pages still free, then the disk is full
            journal.append("reading", "bioreactor", {"n": n, "pad": "x" * 200}, durable=False)
    assert "database or disk is full" in str(first.value)
    assert f"poc-twin resume {path}" in str(first.value)
    failed_at = first.value.seq
    with pytest.raises(JournalWriteFailed):  # nothing more goes in, not even a small event
        journal.append("alarm", "batch", {"alarm": "x"})
    with pytest.raises(JournalWriteFailed):
        journal.commit()
    journal.close()
    assert len(heard) == 1 and heard[0].seq == failed_at
    events = list(read_events(path))
    assert events[0].kind == "batch_started"
    assert events[-1].seq < failed_at
    result = verify(path)
    assert result.first_bad_seq is None, result.reason  # incomplete, never broken


@pytest.mark.parametrize("fail_after", [40, 900])
async def test_the_batch_stops_within_its_scan_when_the_disk_fills(
    tmp_path: Path, fail_after: int
) -> None:
    """Early (setting up) or late (culture running): JournalWriteFailed, no batch left running."""
    recipe = load_recipe(RECIPE, {"dose_margin": "100"})
    bench = load_bench(ROOT / "benches" / "sim.yaml")
    path = tmp_path / "j.sqlite"
    at: list[float] = []

    def fill_disk(event: object) -> None:
        journal = fill_disk.journal  # type: ignore[attr-defined]
        if journal.last_seq == fail_after and not at:
            at.append(asyncio.get_running_loop().time())
            _cap(journal)

    real_init = Journal.__init__

    def capped_init(self: Journal, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        fill_disk.journal = self  # type: ignore[attr-defined]
        self.subscribe(fill_disk)

    before = asyncio.all_tasks()
    Journal.__init__ = capped_init  # type: ignore[method-assign]
    try:
        # (a regression must fail, not hang: virtual time jumps to the timeout)
        with pytest.raises(JournalWriteFailed) as failed:
            async with asyncio.timeout(30 * 86400.0):
                await run_batch_async(
                    recipe,
                    bench,
                    path,
                    batch_id="full",
                    operator="eve",
                    patient_id="P-FULL",
                    bag_id="BAG-FULL",
                    bedside_after_s=0.0,
                )
    finally:
        Journal.__init__ = real_init  # type: ignore[method-assign]
    stopped = asyncio.get_running_loop().time()
    assert at, "the disk never filled"
    # the batch stopped within minutes of batch time, not days (and not never)
    assert stopped - at[0] < 3600.0, stopped - at[0]
    assert failed.value.seq > fail_after
    for _ in range(3):  # cancelled tasks finish on the next turns of the loop
        await asyncio.sleep(0)
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    events = list(read_events(path))
    assert events[-1].seq < failed.value.seq
    assert not any(e.kind == "batch_ended" for e in events)
    assert verify(path).first_bad_seq is None


def _limit_file_size(size: int) -> None:
    """In the child: no file may grow past ``size`` bytes (writes then fail with EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_poc_twin_run_on_a_full_disk_exits_1_with_one_sentence_and_resume_brings_it_back(
    tmp_path: Path, site: Site
) -> None:
    """As an operator meets it: the run ends (exit 1, no traceback) instead of hanging, the
    journal keeps what was committed, and ``poc-twin resume --restart`` (the disk freed)
    restores the batch Held, restarts it and runs it to Complete on the same chain."""
    journal = tmp_path / "j.sqlite"
    run = subprocess.run(
        [sys.executable, "-m", "twin.cli", "run", str(RECIPE), "--journal", str(journal),
         "--patient-id", "P-1", "--bag-id", "BAG-1", "--simulated-operator", "0", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: _limit_file_size(400_000),
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert f"journal {journal} cannot be written" in run.stderr
    assert f"poc-twin resume {journal}" in run.stderr
    committed = list(read_events(journal))
    assert committed and committed[0].kind == "batch_started"
    assert verify(journal).first_bad_seq is None  # incomplete, never broken
    resumed = subprocess.run(
        [sys.executable, "-m", "twin.cli", "resume", str(journal), "--restart", "-q",
         "--operator", "sam", "--reason", "disk space freed"],
        input=PEOPLE["sam"][2] + "\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    events = list(read_events(journal))
    assert [(e.seq, e.hash) for e in events[: len(committed)]] == [
        (e.seq, e.hash) for e in committed
    ]
    deviation = [e for e in events if e.kind == "deviation"]
    assert len(deviation) == 1 and deviation[0].data["last_seq"] == committed[-1].seq
    assert any(e.kind == "batch_ended" and e.data["state"] == "Complete" for e in events)
    assert verify(journal).ok


async def test_a_disk_full_before_the_batch_began_says_nothing_started(tmp_path: Path) -> None:
    """batch_started itself not written: no batch to resume, so the sentence says run again."""
    recipe = load_recipe(RECIPE, {"dose_margin": "100"})
    bench = load_bench(ROOT / "benches" / "sim.yaml")
    real_init = Journal.__init__

    def full_from_the_start(self: Journal, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        _cap(self)

    Journal.__init__ = full_from_the_start  # type: ignore[method-assign]
    try:
        with pytest.raises(JournalWriteFailed) as failed:
            async with asyncio.timeout(86400.0):
                await run_batch_async(
                    recipe,
                    bench,
                    tmp_path / "j.sqlite",
                    batch_id="full",
                    operator="eve",
                    patient_id="P-FULL",
                    bag_id="BAG-FULL",
                    bedside_after_s=0.0,
                )
    finally:
        Journal.__init__ = real_init  # type: ignore[method-assign]
    assert failed.value.seq == 1 and not failed.value.started
    assert "nothing started" in str(failed.value) and "resume" not in str(failed.value)
    assert list(read_events(tmp_path / "j.sqlite")) == []


async def test_the_twin_keeps_its_plant_on_through_a_write_it_cannot_make(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The twin's own picture of the plant: a failed write warns once, never raises, and
    the next write that can be made is made (the batch's journal is what stops a batch)."""
    from twin.clock import Clock
    from twin.serve.keeping import PlantKeeper, restore_plant
    from twin.sim import Plant

    where = tmp_path / "gone"
    keeper = PlantKeeper(Plant(seed=3), where / "j.sqlite.twin", Clock(), every_s=60.0)
    keeper.start()
    await asyncio.sleep(600.0)  # ten pictures due, none can be written
    assert isinstance(keeper.error, FileNotFoundError)
    warned = [r for r in caplog.records if "cannot be kept" in r.getMessage()]
    assert len(warned) == 1 and "none is kept yet" in warned[0].getMessage()
    where.mkdir()
    await asyncio.sleep(60.0)
    assert keeper.error is None
    await keeper.stop()
    assert restore_plant(where / "j.sqlite.twin", seed=3).seed == 3
    assert not (where / "j.sqlite.twin.tmp").exists()
