"""A supervisor sees how old each batch's data is, and a running batch whose data stopped
arriving is flagged instead of showing a green "ok" with stale values (issue 15)."""

from __future__ import annotations

from pathlib import Path

from twin.clock import wall_seconds
from twin.control_site.store import open_store
from twin.control_site.views import STALE_AFTER_S, overview_live, overview_rows


def test_a_running_batch_whose_data_stopped_is_flagged_with_its_age(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "control.sqlite"))
    running = {"batch": "B-1", "state": "Running", "phase": "culture", "seq": 10, "day": 3.2}
    ended = {"batch": "B-2", "state": "Complete", "phase": "-", "seq": 99, "ended": True}
    store.ingest(
        [("site-a", "u1", "B-1", "state", running), ("site-a", "u1", "B-2", "state", ended)]
    )
    fresh = {r["batch"]: r for r in overview_rows(store)}
    assert fresh["B-1"]["attention"] == [] and fresh["B-1"]["age_s"] < 60
    later = wall_seconds() + STALE_AFTER_S + 3000  # an hour without data
    rows = {r["batch"]: r for r in overview_rows(store, now=later)}
    assert rows["B-1"]["attention"] == ["no data for 60 min: its journal stopped moving?"]
    assert rows["B-2"]["attention"] == []  # an ended batch is not waiting for data
    page = overview_live(store)
    assert "data-sort='age'>data age</a></th>" in page and "<td class='age'>" in page
    store.close()


def test_an_ended_batch_offers_no_hold(tmp_path: Path) -> None:
    """'request hold' for a Complete batch answered raw JSON: the page no longer offers it."""
    from twin.control_site.batch_views import batch_page
    from twin.control_site.boards import Boards

    store = open_store(str(tmp_path / "control.sqlite"))
    running = {"batch": "B-1", "state": "Running", "phase": "culture", "seq": 10}
    ended = {"batch": "B-2", "state": "Complete", "phase": "-", "seq": 99, "ended": True}
    store.ingest(
        [("site-a", "u1", "B-1", "state", running), ("site-a", "u1", "B-2", "state", ended)]
    )
    assert ">Request hold</a>" in (batch_page(store, Boards(), "site-a", "B-1") or "")
    page = batch_page(store, Boards(), "site-a", "B-2") or ""
    assert "Request hold" not in page and "has ended Complete: no hold" in page
    store.close()


def test_the_batch_page_shows_the_sites_latest_forecast(tmp_path: Path) -> None:
    """A site's forecast comes with its batch's state; the supervisor reads harvest day and
    P(release) on the batch page (none shown until a site sends one)."""
    from twin.control_site.batch_views import batch_page
    from twin.control_site.boards import Boards

    store = open_store(str(tmp_path / "control.sqlite"))
    state = {"batch": "B-1", "state": "Running", "phase": "culture", "seq": 10, "day": 5.1}
    store.ingest([("site-a", "u1", "B-1", "state", state)])
    assert "no forecast yet" in (batch_page(store, Boards(), "site-a", "B-1") or "")
    forecast = {
        "made_at_day": 5.02,
        "samples_used": 3,
        "spec": "car-t-release-example",
        "harvest_day": {"p5": 6.12, "p50": 7.12, "p95": 9.12},
        "p_release": 0.87,
        "p_release_interval": [0.74, 0.94],
        "ready_by": None,
        "p_ready": None,
        "effective_batches": 30.0,
        "library_batches": 200,
    }
    store.ingest([("site-a", "u1", "B-1", "state", {**state, "seq": 11, "forecast": forecast})])
    page = batch_page(store, Boards(), "site-a", "B-1") or ""
    assert "<h2>Forecast</h2><table id='forecast'" in page
    assert "day 7.12 (90 %: 6.12–9.12)" in page and "87 % (90 %: 74 %–94 %)" in page
    assert "P(releasable" not in page  # the spec names no ready-by day
    store.close()
