"""The dashboard keeps itself current in a real headless Chromium, without a reload.

A site's batch is half-way when the control room opens the overview and the
batch page; the site then writes the rest of its batch. Both open pages must
show the batch Complete by themselves, and say so in red when the control
site stops answering, so a frozen screen never passes for a quiet fleet.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from browser import Chromium
from dashboard import sign_in, users_file
from site_journals import poc_twin

from twin.clock import wall_monotonic
from twin.control_site.serve import ControlSite
from twin.journal import Journal
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.fleet import load_events
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL

ROW_STATE = "document.querySelector(\"tr[data-batch='live1'] .state\").textContent"
STATE = "document.getElementById('state').textContent"


async def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = wall_monotonic() + timeout
    while not predicate():
        assert wall_monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)  # real time: waiting for another process


def test_open_pages_update_when_new_events_are_ingested(
    broker: BrokerConfig, postgres: str, tmp_path: Path
):
    recorded = tmp_path / "recorded.sqlite"
    assert poc_twin("run", "recipes/smoke.yaml", "--journal", str(recorded), "-q").returncode == 0
    events = load_events(recorded)
    half = len(events) // 2
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clock = {"t": 0.0}
    journal = Journal(tmp_path / "live1.sqlite", lambda: clock["t"], signer=None)

    def write(part: list) -> None:
        for batch_time, kind, source, data in part:
            clock["t"] = batch_time
            if kind == "batch_started":
                data = {**data, "batch_id": "live1"}
            journal.append(kind, source, data)

    async def scenario() -> dict[str, object]:
        site = ControlSite(
            broker.url("control"), postgres, "127.0.0.1", port, users_file(tmp_path), refresh_s=0.3
        )
        await site.start()
        url = BrokerURL.parse(broker.url("site-a", unit="cleanroom-9"))
        forwarder = asyncio.create_task(Forwarder(journal.path, url, poll_s=0.05).run())
        seen: dict[str, object] = {}
        stopped = False
        try:
            write(events[:half])
            await wait_for(
                lambda: (
                    site.store.query(
                        "SELECT count(*) FROM events WHERE site='site-a' AND batch='live1'"
                    )[0][0]
                    == half
                )
            )
            async with Chromium() as browser:
                overview = await sign_in(browser, base, "/")
                page = await browser.open(f"{base}/batch/site-a/live1")  # the same session
                seen["before_row"] = await overview.evaluate(ROW_STATE)
                seen["before_state"] = await page.evaluate(STATE)
                for tab in (overview, page):
                    await tab.evaluate("window.notReloaded = true")
                write(events[half:])
                journal.close()
                seen["after_row"] = await overview.wait_for(
                    f"window.notReloaded && {ROW_STATE} === 'Complete' && {ROW_STATE}"
                )
                seen["after_state"] = await page.wait_for(
                    f"window.notReloaded && {STATE} === 'Complete' && "
                    "document.getElementById('seq').textContent"
                )
                await forwarder
                await site.stop()
                stopped = True
                seen["stale"] = await overview.wait_for(
                    "document.getElementById('refreshed').className === 'bad' && "
                    "document.getElementById('refreshed').textContent"
                )
        finally:
            if not forwarder.done():
                forwarder.cancel()
            if not stopped:
                await site.stop()
        return seen

    seen = asyncio.run(scenario())
    assert seen["before_row"] == seen["before_state"] != "Complete"
    assert seen["after_row"] == "Complete"
    assert seen["after_state"] == str(len(events))  # the page shows the last event's number
    assert "NOT UPDATING" in str(seen["stale"])
