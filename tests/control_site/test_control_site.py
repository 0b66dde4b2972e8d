"""The control site against real parts: Mosquitto, PostgreSQL, headless Chromium, real batches."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dashboard import page_html
from site_journals import QUICK, running_batch
from site_users import PEOPLE

from twin.clock import wall_monotonic
from twin.control_site.serve import ControlSite
from twin.control_site.web import Users
from twin.engine.inbox import send_command
from twin.journal import GENESIS, event_hash, read_events
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.site import SiteRecord
from twin.telemetry.topics import BrokerURL

REPO = Path(__file__).resolve().parents[2]


def poc_twin(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **QUICK}
    code = "from twin.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def post(url: str, reason: str, user: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url, data=f"reason={reason}".encode(), method="POST")
    if user is not None:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = wall_monotonic() + timeout
    while not predicate():
        assert wall_monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)  # real time: waiting for another process


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(Users.line("alice", "s3cret") + "\n")
    return path


def events_stored(site: ControlSite, name: str) -> int:
    return site.store.query("SELECT count(*) FROM events WHERE batch=?", (name,))[0][0]


def test_postgres_ingest_is_deduplicated_and_the_dashboard_shows_it(
    broker: BrokerConfig, postgres: str, users_file: Path, tmp_path: Path
):
    journal = tmp_path / "pg1.sqlite"
    assert (
        poc_twin(
            "run", "recipes/smoke.yaml", "--journal", str(journal), "-q", "--batch-id", "pg1"
        ).returncode
        == 0
    )
    total = len(list(read_events(journal)))
    port = free_port()

    async def scenario() -> tuple[str, str]:
        site = ControlSite(broker.url("control"), postgres, "127.0.0.1", port, users_file)
        await site.start()
        try:
            url = BrokerURL.parse(broker.url("site-a", unit="cleanroom-2"))
            assert await Forwarder(journal, url).run()
            Path(f"{journal}.telemetry.json").unlink()  # forget the ack: everything again
            assert await Forwarder(journal, url).run()
            await wait_for(
                lambda: events_stored(site, "pg1") >= total and site.ingest.queue.empty()
            )
            await asyncio.sleep(0.5)  # real time: the duplicates are through ingest too
            assert events_stored(site, "pg1") == total
            base = f"http://127.0.0.1:{port}"
            return await page_html(base, "/"), await page_html(base, "/batch/site-a/pg1")
        finally:
            await site.stop()

    overview, page = asyncio.run(scenario())
    assert 'data-batch="pg1"' in overview or "data-batch='pg1'" in overview
    row = overview.split('data-batch="pg1"')[1].split("</tr>")[0]
    assert "site-a" in overview and "Complete" in row and "cleanroom-2" in overview
    assert page.count("<svg") == 5 and "<polyline" in page  # one trend per key PV
    assert 'id="state">Complete' in page


def test_hold_and_suspension_reach_the_site_with_who_and_why(
    broker: BrokerConfig, users_file: Path, tmp_path: Path
):
    journal = tmp_path / "long.sqlite"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = broker.url("site-b", unit="mobile-3")

    async def scenario() -> list:
        site = ControlSite(
            broker.url("control"), str(tmp_path / "cs.sqlite"), "127.0.0.1", port, users_file
        )
        await site.start()
        try:
            async with running_batch(
                "recipes/car_t_autologous.yaml", journal, "long1", url
            ) as proc:
                await wait_for(
                    lambda: site.store.query("SELECT 1 FROM batches WHERE batch='long1'")
                )
                hold = f"{base}/batch/site-b/long1/hold"
                assert await asyncio.to_thread(post, hold, "no+login", None) == 401
                assert (
                    await asyncio.to_thread(post, hold, "contamination+alert", ("alice", "s3cret"))
                    == 200
                )
                await wait_for(
                    lambda: any(
                        r[0]
                        for r in site.store.query("SELECT state FROM batches WHERE batch='long1'")
                        if '"Held"' in r[0]
                    )
                )
                await send_command(
                    journal, "abort", operator="sam", password=PEOPLE["sam"][2], reason="test over"
                )
                assert await proc.wait() == 3
            suspend = f"{base}/site/site-b/suspend"
            assert (
                await asyncio.to_thread(post, suspend, "audit+pending", ("alice", "s3cret")) == 200
            )
            refused = await asyncio.to_thread(
                poc_twin,
                "run",
                "recipes/smoke.yaml",
                "--journal",
                str(tmp_path / "no.sqlite"),
                "-q",
                "--broker",
                url,
            )
            reinstate = f"{base}/site/site-b/reinstate"
            assert (
                await asyncio.to_thread(post, reinstate, "audit+done", ("alice", "s3cret")) == 200
            )
            return refused
        finally:
            await site.stop()

    refused = asyncio.run(scenario())
    commands = [e.data for e in read_events(journal) if e.kind == "command"]
    assert commands[0]["command"] == "hold" and commands[0]["accepted"]
    assert commands[0]["operator"] == "control-site:alice"
    assert commands[0]["reason"] == "contamination alert"
    assert refused.returncode == 2
    assert "suspended" in refused.stderr and "alice" in refused.stderr
    assert "audit pending" in refused.stderr
    assert not (tmp_path / "no.sqlite").exists()
    actions = [r[0] for r in SiteRecord.beside(journal).requests()]
    assert actions[:2] == ["hold", "suspend"]


def _forged_copy(source: Path, dest: Path, change_seq: int) -> None:
    """The same batch with one event edited and the chain recomputed from there on."""
    shutil.copy(source, dest)
    db = sqlite3.connect(dest)
    prev = GENESIS
    for seq, bt, wt, kind, src, data, _, _ in db.execute(
        "SELECT * FROM events ORDER BY seq"
    ).fetchall():
        if seq == change_seq:
            data = data.replace("}", ',"edited":true}', 1)
        digest = event_hash(prev, seq, bt, wt, kind, src, data)
        db.execute(
            "UPDATE events SET data=?, prev_hash=?, hash=? WHERE seq=?", (data, prev, digest, seq)
        )
        prev = digest
    db.commit()
    db.close()


def test_a_rewritten_site_journal_is_flagged(broker: BrokerConfig, tmp_path: Path):
    journal = tmp_path / "orig.sqlite"
    assert (
        poc_twin(
            "run", "recipes/smoke.yaml", "--journal", str(journal), "-q", "--batch-id", "chain1"
        ).returncode
        == 0
    )
    forged = tmp_path / "forged.sqlite"
    _forged_copy(journal, forged, change_seq=40)
    port = free_port()

    async def scenario() -> list[dict]:
        site = ControlSite(
            broker.url("control"), str(tmp_path / "cs.sqlite"), "127.0.0.1", port, None
        )
        await site.start()
        try:
            url = BrokerURL.parse(broker.url("site-a"))
            assert await Forwarder(journal, url).run()
            await wait_for(lambda: site.store.query("SELECT 1 FROM heads WHERE batch='chain1'"))
            assert await Forwarder(forged, url).run()
            await wait_for(
                lambda: site.store.query(
                    "SELECT 1 FROM chain_flags WHERE reason LIKE '%anchored head%'"
                )
            )
            from twin.control_site.views import overview_rows

            return overview_rows(site.store)
        finally:
            await site.stop()

    rows = {r["batch"]: r for r in asyncio.run(scenario())}
    assert rows["chain1"]["chain_ok"] is False
    attention = rows["chain1"]["attention"]
    assert "no longer extends its anchored head" in attention[0]  # the head problem first
    rewritten = [f for f in rows["chain1"]["chain_flags"] if "arrived again with different" in f]
    assert len(rewritten) == 1 and " events): " in rewritten[0]  # one line, not hundreds
