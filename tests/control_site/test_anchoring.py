"""The head rules on a store, message by message, in the order a broker may deliver them.

No false alarms a control room would chase: a head that arrives before its
events waits for them, an old head resent after a forwarder restart is not a
rewrite, a signing site's unsigned heads are ignored, and a site's new key is
accepted without restarting the control site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twin.control_site import keys as keys_module
from twin.control_site.keys import SiteKeys
from twin.control_site.store import Store, open_store
from twin.journal import CHECKPOINT, Journal, read_events
from twin.signing import SiteKey, generate_site_key, load_site_key

Message = tuple[str, str, str, str, dict[str, Any]]


def signed_journal(path: Path, key: SiteKey, events: int = 25) -> list[Message]:
    """A journal signed every 10 events; its events and heads as the forwarder sends them."""
    journal = Journal(path, lambda: 0.0, signer=key, checkpoint_every=10)
    journal.append("batch_started", "runner", {"batch_id": "b1"})
    for i in range(events - 1):
        journal.append("reading", "bioreactor", {"values": {"temperature_c": 37.0 + i / 100}})
    journal.close()
    messages: list[Message] = []
    for e in read_events(path):
        body = {
            "seq": e.seq,
            "batch_time": e.batch_time,
            "wall_time": e.wall_time,
            "kind": e.kind,
            "source": e.source,
            "data": e.data,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }
        messages.append(("site-a", "u1", "b1", "event", body))
        if e.kind == CHECKPOINT:
            head = {
                "seq": e.data["signed_seq"],
                "hash": e.data["head"],
                "signature": e.data["signature"],
                "key_id": e.data["key_id"],
            }
            messages.append(("site-a", "u1", "b1", "head", head))
    return messages


def heads_of(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m[3] == "head"]


def events_of(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m[3] == "event"]


@pytest.fixture
def site_key(tmp_path: Path) -> tuple[SiteKey, Path]:
    private, public = generate_site_key("site-a", tmp_path / "site")
    registered = tmp_path / "registered"
    registered.mkdir()
    (registered / "site-a.pub").write_bytes(public.read_bytes())
    return load_site_key(private), registered


def store_with(tmp_path: Path, registered: Path) -> Store:
    return open_store(str(tmp_path / "cs.sqlite"), SiteKeys([registered]))


def anchored(store: Store) -> list[tuple]:
    return store.query("SELECT seq, verified FROM heads WHERE batch='b1'")


def flags(store: Store) -> list[str]:
    return [r[0] for r in store.query("SELECT reason FROM chain_flags")]


def test_a_head_that_arrives_before_its_events_waits_for_them(tmp_path, site_key):
    key, registered = site_key
    messages = signed_journal(tmp_path / "j.sqlite", key)
    store = store_with(tmp_path, registered)
    store.ingest(heads_of(messages))  # the heads first (another ordering of a resend)
    assert anchored(store) == [] and flags(store) == []
    store.ingest(events_of(messages))
    last = heads_of(messages)[-1][4]
    assert anchored(store) == [(last["seq"], 1)]  # verified with site-a's key
    assert flags(store) == []


def test_an_old_head_resent_and_unsigned_heads_of_a_signing_site_raise_nothing(tmp_path, site_key):
    key, registered = site_key
    messages = signed_journal(tmp_path / "j.sqlite", key)
    store = store_with(tmp_path, registered)
    store.ingest(messages)
    final = anchored(store)
    first_head = heads_of(messages)[0]
    seq5 = events_of(messages)[4][4]
    plain = {"seq": 5, "hash": seq5["hash"], "signature": None}
    store.ingest([first_head, ("site-a", "u1", "b1", "head", plain)])
    assert anchored(store) == final and flags(store) == []


def test_a_rotated_key_is_accepted_without_a_restart(tmp_path, site_key, monkeypatch):
    monkeypatch.setattr(keys_module, "RESCAN_S", 0.0)
    old, registered = site_key
    store = store_with(tmp_path, registered)
    store.ingest(signed_journal(tmp_path / "old.sqlite", old))
    private, public = generate_site_key("site-a", tmp_path / "site", overwrite=True)
    messages = [
        (s, u, "b2", k, b)
        for s, u, _, k, b in signed_journal(tmp_path / "new.sqlite", load_site_key(private))
    ]
    store.ingest(messages)
    assert any("bad signature" in f for f in flags(store))  # not registered yet
    (registered / "site-a.pub").write_bytes(public.read_bytes())  # QA registers the new key
    store.ingest(heads_of(messages))
    assert store.query("SELECT verified FROM heads WHERE batch='b2'") == [(1,)]
