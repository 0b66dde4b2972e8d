"""The journal: hash-chained, durable, and any edit, deletion, insertion or reordering is named."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import replace
from enum import IntEnum
from pathlib import Path

import pytest

from twin.errors import JournalError
from twin.journal import Journal, read_events, verify
from twin.signing import generate_site_key, load_site_key


def write_journal(path: Path, n: int = 10) -> Journal:
    t = iter(range(1000))
    journal = Journal(path, lambda: float(next(t)))
    for i in range(n):
        journal.append("reading", "bioreactor", {"i": i, "do_pct": 40.0 + i}, durable=i % 3 == 0)
    journal.commit()
    return journal


def test_intact_journal_verifies(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = write_journal(path)
    journal.close()
    result = verify(path)
    assert result.ok and result.events == 10
    assert result.head == journal.head
    assert [e.seq for e in read_events(path)] == list(range(1, 11))


def test_subscribers_hear_every_event(tmp_path: Path) -> None:
    heard = []
    journal = Journal(tmp_path / "j.sqlite", lambda: 0.0)
    journal.subscribe(heard.append)
    journal.append("transition", "procedure:x", {"from": "Idle", "to": "Running"})
    assert [e.kind for e in heard] == ["transition"]
    journal.close()


def tamper(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


def test_a_journal_in_memory_journals_what_a_file_journal_does_without_a_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No database behind it, the same events; no hash chain, as nothing is kept to verify."""
    monkeypatch.setattr("twin.journal.wall_stamp", lambda: "2026-12-05T00:00:00.000000+00:00")
    on_file, in_memory = [], []
    for journal, heard in (
        (Journal(tmp_path / "j.sqlite", lambda: 12.5), on_file),
        (Journal.in_memory(lambda: 12.5), in_memory),
    ):
        journal.subscribe(heard.append)
        for i in range(5):
            journal.append("reading", "bioreactor", {"do_pct": 40.0 + i}, durable=i == 3)
        journal.close()
    assert list(read_events(tmp_path / "j.sqlite")) == on_file
    assert [replace(e, prev_hash="", hash="") for e in on_file] == in_memory
    assert all(len(e.hash) == 64 for e in on_file)
    with pytest.raises(ValueError, match="not JSON compliant"):  # refused as on file
        Journal.in_memory(lambda: 0.0).append("reading", "bioreactor", {"do_pct": math.nan})


def _cyclic() -> dict:
    loop: dict = {"a": 1.0}
    loop["self"] = loop
    return loop


def _deep(levels: int, leaf: object) -> dict:
    value: object = leaf
    for _ in range(levels):
        value = {"down": value}
    return value  # type: ignore[return-value]


class _Level(IntEnum):
    LOW = 1


class _Ratio(float):
    pass


WHAT_A_JOURNAL_MAY_BE_GIVEN = [
    {"do_pct": 40.0, "status": 2880, "ok": True, "note": None, "who": "qa"},
    {"values": {"air": 20.0, "co2": 0.0, "n2": -0.0}, "list": [1, 2.5, "x", [None, False]]},
    {"nan": math.nan},
    {"deep": {"inf": math.inf}},
    {"in a list": [1.0, -math.inf]},
    {1: "int key"},
    {"mixed": {1: "a", "b": 2}},
    {"none key": {None: 1}},
    {"tuple": (1, 2.0)},
    {"set": {1, 2}},
    {"bytes": b"raw"},
    {"enum": _Level.LOW},
    {"float subclass": _Ratio(0.5)},
    {"subclass nan": _Ratio(math.nan)},
    {"huge": 10**5000},
    {"big": 2**70, "small": -(2**70)},
    {"cycle": _cyclic()},
    {"list cycle": (lambda xs: xs.append(xs) or xs)([])},
    _deep(7, 1.0),
    _deep(12, math.nan),
    _deep(12, 3.0),
    {"surrogate": "\ud800", "unicode": "µL"},
]


@pytest.mark.parametrize("data", WHAT_A_JOURNAL_MAY_BE_GIVEN)
def test_a_journal_in_memory_refuses_exactly_what_a_file_refuses(
    tmp_path: Path, data: dict
) -> None:
    """In memory without a chain the text is not written out when the data surely can be;
    what is refused, and how, is still what a journal on file refuses."""

    def outcome(journal: Journal) -> str:
        try:
            journal.append("reading", "bioreactor", data)
        except Exception as exc:  # the type and message a caller would see
            return f"{type(exc).__name__}: {exc}"
        finally:
            journal.close()
        return "kept"

    on_file = outcome(Journal(tmp_path / "j.sqlite", lambda: 1.0))
    assert outcome(Journal.in_memory(lambda: 1.0)) == on_file


def test_a_journal_in_memory_with_a_site_key_chains_and_signs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signature over the head needs a chain under it: with a key, memory chains as a file."""
    monkeypatch.setattr("twin.journal.wall_stamp", lambda: "2026-12-05T00:00:00.000000+00:00")
    generate_site_key("memory-site", tmp_path / "keys")
    key = load_site_key(tmp_path / "keys" / "memory-site.key")
    on_file, in_memory = [], []
    for journal, heard in (
        (Journal(tmp_path / "j.sqlite", lambda: 1.0, signer=key, checkpoint_every=3), on_file),
        (Journal.in_memory(lambda: 1.0, signer=key), in_memory),
    ):
        journal.checkpoint_every = 3
        journal.subscribe(heard.append)
        for i in range(5):
            journal.append("reading", "bioreactor", {"do_pct": 40.0 + i})
        journal.close()
    assert [(e.kind, e.prev_hash, e.hash) for e in in_memory] == [
        (e.kind, e.prev_hash, e.hash) for e in on_file
    ]
    assert in_memory[0].prev_hash == "0" * 64 and in_memory[-1].kind == "checkpoint"


@pytest.mark.parametrize(
    ("sql", "args", "bad_seq"),
    [
        ("UPDATE events SET data=? WHERE seq=4", ('{"i":3,"do_pct":99.0}',), 4),
        ("DELETE FROM events WHERE seq=6", (), 6),
        ("UPDATE events SET batch_time=? WHERE seq=9", (1.5,), 9),
        ("UPDATE events SET kind='alarm' WHERE seq=2", (), 2),
    ],
    ids=["edited", "deleted", "retimed", "relabelled"],
)
def test_tampering_is_named(tmp_path: Path, sql: str, args: tuple, bad_seq: int) -> None:
    path = tmp_path / "j.sqlite"
    write_journal(path).close()
    tamper(path, sql, *args)
    result = verify(path)
    assert not result.ok
    assert result.first_bad_seq == bad_seq


def test_inserted_event_is_named(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    write_journal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET seq = -seq WHERE seq >= 5")
    db.execute("UPDATE events SET seq = 1 - seq WHERE seq < 0")
    row = db.execute("SELECT * FROM events WHERE seq=4").fetchone()
    db.execute("INSERT INTO events VALUES (5,?,?,?,?,?,?,?)", row[1:])
    db.commit()
    db.close()
    assert verify(path).first_bad_seq == 5


def test_reordered_events_are_named(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    write_journal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET seq = -3 WHERE seq = 3")
    db.execute("UPDATE events SET seq = 3 WHERE seq = 7")
    db.execute("UPDATE events SET seq = 7 WHERE seq = -3")
    db.commit()
    db.close()
    assert verify(path).first_bad_seq == 3


def test_uncommitted_readings_are_lost_but_chain_stays_intact(tmp_path: Path) -> None:
    """What was committed survives a process that never commits again (killed)."""
    path = tmp_path / "j.sqlite"
    journal = Journal(path, lambda: 0.0)
    journal.append("transition", "procedure:x", {"to": "Running"})
    journal.append("reading", "bioreactor", {"do_pct": 40.0}, durable=False)
    # A second connection sees only committed events, as a restarted process would.
    assert [e.kind for e in read_events(path)] == ["transition"]
    assert verify(path).ok


@pytest.mark.parametrize("jitter", [-0.05, 0.0, 0.05])
def test_on_the_wall_each_scan_of_a_second_is_in_the_file_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jitter: float
) -> None:
    """Scans a second apart (the shortest poll period), a little early or late: each scan's
    readings reach the file, for every reader, before the next scan (commit_lagging)."""
    import twin.journal

    wall = [100.0]
    monkeypatch.setattr(twin.journal, "wall_monotonic", lambda: wall[0])
    path = tmp_path / "j.sqlite"
    journal = Journal(path, lambda: wall[0])
    journal.append("batch_started", "engine", {})
    for scan in range(1, 11):
        wall[0] += 1.0 + (jitter if scan % 2 else -jitter)
        journal.append("reading", "bioreactor", {"scan": scan}, durable=False)
        journal.commit_lagging()
        assert [e.data["scan"] for e in read_events(path) if e.kind == "reading"][-1:] == [scan]
    journal.close()


def test_readings_600_s_old_wait_for_half_a_second_of_wall_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a twin running fast, 600 s of batch time pass in milliseconds of wall: readings
    are committed by that rule only once the last commit is also half a second of wall
    time old (a kill takes at most the last half second's readings). Before, every 600 s
    of batch time was an fsync: 1,120 of them in the 10-day batch."""
    import twin.journal

    wall, batch = [100.0], [0.0]
    monkeypatch.setattr(twin.journal, "wall_monotonic", lambda: wall[0])
    path = tmp_path / "j.sqlite"
    journal = Journal(path, lambda: batch[0])
    journal.append("batch_started", "engine", {})

    def in_file() -> list[int]:
        return [e.data["minute"] for e in read_events(path) if e.kind == "reading"]

    for minute in range(1, 61):  # an hour of batch time in a tenth of a second of wall
        batch[0], wall[0] = minute * 60.0, 100.0 + minute * 0.1 / 60
        journal.append("reading", "bioreactor", {"minute": minute}, durable=False)
    assert in_file() == []
    wall[0] += 0.4  # half a second since the last commit
    batch[0] += 60.0
    journal.append("reading", "bioreactor", {"minute": 61}, durable=False)
    assert in_file() == list(range(1, 62))
    batch[0] += 60.0  # the wall stands still: a minute's reading waits
    journal.append("reading", "bioreactor", {"minute": 62}, durable=False)
    assert in_file()[-1] == 61
    journal.close()


def test_events_together_reach_the_file_in_one_commit_checkpoint_after(tmp_path: Path) -> None:
    """An act and its signature (``together``): neither a durable append, nor the 600 s rule,
    nor a signed checkpoint falling due on the act commits it alone; the checkpoint
    follows them. A kill in between would leave an act that never verifies."""
    generate_site_key("site", tmp_path / "keys")
    key = load_site_key(tmp_path / "keys" / "site.key")
    t = [0.0]
    path = tmp_path / "j.sqlite"
    journal = Journal(path, lambda: t[0], signer=key, checkpoint_every=3)
    journal.append("batch_started", "batch", {})
    journal.append("reading", "bioreactor", {"do_pct": 40.0}, durable=False)
    with journal.together():
        t[0] = 601.0  # the 600 s rule would commit here
        act = journal.append("command", "procedure:x", {"command": "hold"})  # seq 3: due
        assert [e.kind for e in read_events(path)] == ["batch_started"]
        journal.append("signature", "user:kim", {"signed_seq": act.seq})
        assert [e.kind for e in read_events(path)] == ["batch_started"]
    kinds = [e.kind for e in read_events(path)]
    assert kinds == ["batch_started", "reading", "command", "signature", "checkpoint"]
    journal.close()
    assert verify(path).ok


def test_a_failure_between_an_act_and_its_signature_commits_neither(tmp_path: Path) -> None:
    """Something raising inside ``together`` (a subscriber, an interrupt) after the act was
    appended: the act is not committed alone; the journal takes it as a failed write (rolled
    back, nothing more written), so the file still verifies without it."""
    from twin.errors import JournalWriteFailed

    path = tmp_path / "j.sqlite"
    journal = Journal(path, lambda: 0.0)
    journal.append("batch_started", "batch", {})

    def broken(event: object) -> None:
        if getattr(event, "kind", "") == "command":
            raise RuntimeError("a subscriber's bug")

    journal.subscribe(broken)
    with pytest.raises(JournalWriteFailed), journal.together():
        journal.append("command", "procedure:x", {"command": "hold"})
        journal.append("signature", "user:kim", {"signed_seq": 2})  # never reached
    assert [e.kind for e in read_events(path)] == ["batch_started"]
    assert journal.failure is not None and verify(path).ok


def test_refuses_to_overwrite_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    write_journal(path).close()
    with pytest.raises(JournalError, match="already holds a batch"):
        Journal(path, lambda: 0.0)


def test_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(JournalError, match="not a readable journal"):
        verify(path)
