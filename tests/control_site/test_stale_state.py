"""A batch's state at the control site is its newest, whatever order the states arrive in.

A broker restarted from its persistence file hands out the retained `state` messages it
kept, older than what the control site stored; anyone allowed on a site's topics may
publish one. Before, the last state received won: a batch that had ended Complete showed
"Held" again (its page "anchored head: event 25010 of 3264"), an Aborted one "Running".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twin.control_site.store import Store, open_store


def state(
    seq: int, name: str, *, batch: str = "b1", ended: bool = False
) -> tuple[str, str, str, str, dict[str, Any]]:
    body = {"v": 1, "batch": batch, "state": name, "seq": seq, "ended": ended}
    return ("site-a", "cleanroom-1", batch, "state", body)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "postgres":
        return open_store(request.getfixturevalue("postgres"))
    return open_store(str(tmp_path / "cs.sqlite"))


def test_an_older_state_does_not_replace_a_newer_one(store: Store) -> None:
    store.ingest([state(3264, "Held")])
    store.ingest([state(25011, "Complete", ended=True)])
    store.ingest([state(3264, "Held")])  # the broker's stale retained message
    assert store.batch_states("site-a", "b1")[0] == "Complete"
    store.ingest([state(100, "Running"), state(25011, "Complete", ended=True)])
    assert store.batch_state("site-a", "b1") == "Complete"


def test_the_newest_state_of_one_flush_wins_whatever_its_order(store: Store) -> None:
    store.ingest([state(20, "Held", batch="b2"), state(10, "Running", batch="b2")])
    assert store.batch_state("site-a", "b2") == "Held"
    store.ingest([state(20, "Held", batch="b2"), state(21, "Restarting", batch="b2")])
    assert store.batch_state("site-a", "b2") == "Restarting"  # the same one again is fine


def test_a_restarted_control_site_knows_the_stored_state_is_newer(tmp_path: Path) -> None:
    """The stored state's seq is read back by a new process (nothing in its memory)."""
    open_store(str(tmp_path / "cs.sqlite")).ingest([state(500, "Aborted", ended=True)])
    again = open_store(str(tmp_path / "cs.sqlite"))
    again.ingest([state(40, "Running")])
    assert again.batch_state("site-a", "b1") == "Aborted"


def test_a_dead_batch_process_is_told_apart_from_a_site_gone_offline(store: Store) -> None:
    """The forwarder's last status says the batch's process died: the overview says so and
    what brings it back, not only "site offline" (nobody knew to run resume)."""
    from twin.control_site.views import overview_rows

    def status(batch: str, why: str) -> tuple[str, str, str, str, dict[str, Any]]:
        body = {"v": 1, "batch": batch, "online": False, "why": why}
        return ("site-a", "cleanroom-1", batch, "status", body)

    store.ingest([state(7, "Held", batch="d1"), state(7, "Running", batch="d2")])
    store.ingest([status("d1", "batch process ended"), status("d2", "connection lost")])
    reasons = {r["batch"]: " ".join(r["attention"]) for r in overview_rows(store)}
    assert "its batch process died at the site: poc-twin resume" in reasons["d1"]
    assert "site offline" not in reasons["d1"]
    assert "site offline" in reasons["d2"] and "resume" not in reasons["d2"]
