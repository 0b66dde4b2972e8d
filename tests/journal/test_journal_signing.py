"""Signed chain heads: a rewrite of the whole chain is caught with the site key, and by anchors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from twin.errors import JournalError
from twin.journal import GENESIS, Journal, event_hash, read_events, verify
from twin.signing import (
    anchors_of,
    check_journal_signatures,
    generate_site_key,
    load_public_key,
    load_site_key,
    read_anchors,
)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_site_key("lyon-huc", tmp_path / "keys")


def signed_journal(path: Path, key: Path, n: int = 25, every: int = 10) -> Journal:
    journal = Journal(path, lambda: 1.0, signer=load_site_key(key), checkpoint_every=every)
    journal.append("batch_started", "batch", {"batch_id": "b1"})
    for i in range(n):
        journal.append("reading", "bioreactor", {"i": i}, durable=False)
    journal.append("batch_ended", "batch", {"state": "Complete"})
    journal.close()
    return journal


def rewrite_chain(path: Path, seq: int, data: dict) -> None:
    """What an insider with write access does: change an event and recompute every hash after it."""
    db = sqlite3.connect(path)
    rows = db.execute(
        "SELECT seq, batch_time, wall_time, kind, source, data FROM events ORDER BY seq"
    ).fetchall()
    prev = GENESIS
    for s, bt, wt, kind, source, payload in rows:
        if s == seq:
            payload = json.dumps(data, sort_keys=True, separators=(",", ":"))
        digest = event_hash(prev, s, bt, wt, kind, source, payload)
        db.execute(
            "UPDATE events SET data=?, prev_hash=?, hash=? WHERE seq=?", (payload, prev, digest, s)
        )
        prev = digest
    db.commit()
    db.close()


def test_checkpoints_every_n_events_and_at_close(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = tmp_path / "j.sqlite"
    signed_journal(path, keys[0])
    kinds = [e.kind for e in read_events(path)]
    assert kinds[-1] == "checkpoint" and kinds[-2] == "batch_ended"
    assert kinds.count("checkpoint") == 3  # after events 10, 20 and at close
    check = check_journal_signatures(path, load_public_key(keys[1]))
    assert check.ok and check.verified == 3 and check.unsigned_tail == 0


def test_key_files_private_is_owner_only_and_not_overwritten(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE" not in public.read_bytes()
    with pytest.raises(JournalError, match="exists"):
        generate_site_key("lyon-huc", private.parent)


def test_whole_chain_rewrite_passes_the_chain_but_not_the_signature(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    path = tmp_path / "j.sqlite"
    signed_journal(path, keys[0])
    rewrite_chain(path, 5, {"i": 999})
    assert verify(path).ok  # the hash chain alone cannot see it
    check = check_journal_signatures(path, load_public_key(keys[1]))
    assert not check.ok and check.first_bad_seq == 11  # the first checkpoint after event 5


def test_rewrite_resigned_with_a_stolen_key_is_caught_only_by_an_anchor(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    path = tmp_path / "j.sqlite"
    signed_journal(path, keys[0], every=1000)
    anchor_file = tmp_path / "anchors.jsonl"
    anchor_file.write_text("\n".join(json.dumps(a) for a in anchors_of(path)))
    # The insider has the key: rewrite the events, then re-sign the final head.
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE kind='checkpoint'")
    db.commit()
    db.close()
    rewrite_chain(path, 5, {"i": 999})
    rows = list(read_events(path))
    forged = load_site_key(keys[0]).checkpoint(rows[-1].seq, rows[-1].hash)
    db = sqlite3.connect(path)
    payload = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    seq, prev = rows[-1].seq + 1, rows[-1].hash
    digest = event_hash(prev, seq, 1.0, "w", "checkpoint", "site:lyon-huc", payload)
    db.execute(
        "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
        (seq, 1.0, "w", "checkpoint", "site:lyon-huc", payload, prev, digest),
    )
    db.commit()
    db.close()
    public = load_public_key(keys[1])
    assert verify(path).ok and check_journal_signatures(path, public).ok
    check = check_journal_signatures(path, public, read_anchors(anchor_file))
    assert not check.ok and "anchored" in check.reason


def test_removing_signatures_or_the_final_one_is_reported(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    path = tmp_path / "j.sqlite"
    signed_journal(path, keys[0], every=1000)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE kind='checkpoint'")
    db.commit()
    db.close()
    assert verify(path).ok  # the last event was deleted: the chain is still whole
    check = check_journal_signatures(path, load_public_key(keys[1]))
    assert not check.ok and "no signed checkpoint" in check.reason


def test_another_sites_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = tmp_path / "j.sqlite"
    signed_journal(path, keys[0])
    _, other = generate_site_key("paris-hegp", tmp_path / "keys")
    check = check_journal_signatures(path, load_public_key(other))
    assert not check.ok and "not the given key" in check.reason


def test_truncation_after_an_anchored_head_is_caught(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    path = tmp_path / "j.sqlite"
    signed_journal(path, keys[0])
    anchors = tmp_path / "a.jsonl"
    anchors.write_text("\n".join(json.dumps(a) for a in anchors_of(path)))
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE seq > 15")
    db.commit()
    db.close()
    assert verify(path).ok
    check = check_journal_signatures(path, None, read_anchors(anchors))
    assert not check.ok and "truncated" in check.reason
