"""The control site's audit of a request shows what the site did with it, not only "sent".

The site answers every relayed request (``answer``, docs/telemetry.md) with its outcome;
the control site writes that into its ``requests`` row.
Real Mosquitto, real batches (``poc-twin run --broker``), the real control site.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dashboard import started_site
from site_journals import running_batch, wait_until
from site_users import PEOPLE
from test_supervision import post

from twin.clock import wall_monotonic
from twin.control_site.serve import ControlSite
from twin.engine.inbox import send_command
from twin.journal import read_events
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.site import SiteRecord


def outcome(site: ControlSite, batch: str, action: str = "hold") -> str:
    rows = site.store.query(
        "SELECT outcome FROM requests WHERE batch=? AND action=? ORDER BY at", (batch, action)
    )
    return str(rows[-1][0]) if rows else ""


async def settled(site: ControlSite, batch: str, action: str = "hold", timeout: float = 15) -> str:
    """The request's outcome once it is more than "sent" (or as it stands after ``timeout``)."""
    deadline = wall_monotonic() + timeout
    while outcome(site, batch, action) in ("", "sending", "sent") and wall_monotonic() < deadline:
        await asyncio.sleep(0.1)  # real time: the site answers over the broker
    return outcome(site, batch, action)


def stale(site: ControlSite, state: str = "Running") -> None:
    """The control site's view a moment behind the site's: it still sees the batch running."""
    unit = "cleanroom-2"
    site.store.batch_status = lambda s, b: (unit, False)  # type: ignore[method-assign]
    site.store.batch_states = lambda s, b: (state, state)  # type: ignore[method-assign]


def test_a_hold_the_site_refuses_is_audited_with_the_sites_answer(
    broker: BrokerConfig, alarm_recipe: Path, tmp_path: Path
) -> None:
    """The batch held itself on an alarm a moment ago; the control site's page still shows
    it running and sends alice's hold. The site refuses it (not valid in Held): the
    control site's audit says so and why, not "sent"."""
    port = free_port()
    journal = tmp_path / "ans1.sqlite"
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> tuple[str, str, list[tuple[Any, ...]]]:
        site = await started_site(broker, tmp_path, port)
        url = broker.url("site-a", unit="cleanroom-2")
        try:
            async with running_batch(alarm_recipe, journal, "ans1", url) as proc:
                await wait_until(lambda: site.store.batch_state("site-a", "ans1") == "Held")
                await wait_until(Path(f"{journal}.telemetry.json").exists)
                stale(site)
                status, text = await asyncio.to_thread(
                    post, f"{base}/batch/site-a/ans1/hold", "night check"
                )
                assert status == 200, text
                refused = await settled(site, "ans1")
                abort = await send_command(
                    journal, "abort", operator="sam", password=PEOPLE["sam"][2], reason="over"
                )
                assert abort["status"] == "accepted", abort
                assert await proc.wait() == 3
            commands = [
                (e.data.get("operator"), e.data.get("command"), e.data.get("accepted"))
                for e in read_events(journal)
                if e.kind == "command"
            ]
            return refused, outcome(site, "ans1"), commands
        finally:
            await site.stop()

    refused, final, commands = asyncio.run(scenario())
    assert refused.startswith("refused at the site: "), refused
    assert "Held" in refused
    assert final == refused
    # the site journalled alice's hold as refused, with who
    assert ("control-site:alice", "hold", False) in commands
    rows = SiteRecord.beside(journal).requests()
    holds = [r for r in rows if r[0] == "hold"]
    assert len(holds) == 1 and holds[0][3].startswith("refused: ")
