"""Signed chain heads, end to end: a site's signed journal -> Mosquitto -> PostgreSQL anchors.

The control site holds site-a's registered public key. A head signed with it
is anchored; a rewritten journal is flagged, whether the rewrite was re-signed
with another key (bad signature) or with the site's own key (its head no
longer extends the one anchored before), and the dashboard says so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from dashboard import page_html, users_file
from site_journals import SignedBatch, rewrite

from twin.clock import wall_monotonic
from twin.control_site.serve import ControlSite
from twin.control_site.views import overview_rows
from twin.journal import CHECKPOINT, read_events
from twin.signing import SiteKey, generate_site_key, load_site_key
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL


async def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = wall_monotonic() + timeout
    while not predicate():
        assert wall_monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)  # real time: waiting for another process


def last_signed(journal: Path) -> tuple[int, str]:
    """(seq, hash) of the journal's last signed head."""
    signed = [e.data for e in read_events(journal) if e.kind == CHECKPOINT][-1]
    return signed["signed_seq"], signed["head"]


def heads(site: ControlSite, batch: str) -> list[tuple]:
    return site.store.query(
        "SELECT seq, hash, verified, key_id FROM heads WHERE site='site-a' AND batch=?", (batch,)
    )


def flags(site: ControlSite, batch: str) -> list[str]:
    return [
        r[0]
        for r in site.store.query(
            "SELECT reason FROM chain_flags WHERE site='site-a' AND batch=?", (batch,)
        )
    ]


def other_key(tmp_path: Path) -> SiteKey:
    private, _ = generate_site_key("site-a", tmp_path / "thief")
    return load_site_key(private)


def test_a_signed_head_is_verified_and_anchored_a_rewrite_with_another_key_is_flagged(
    broker: BrokerConfig, postgres: str, signed_batch: SignedBatch, tmp_path: Path
):
    forged = tmp_path / "forged-other-key.sqlite"
    rewrite(signed_batch.journal, forged, key=other_key(tmp_path), edit_seq=40)
    port = free_port()
    url = BrokerURL.parse(broker.url("site-a", unit="cleanroom-1"))

    async def scenario() -> tuple[list, list, list, str]:
        site = ControlSite(
            broker.url("control"),
            postgres,
            "127.0.0.1",
            port,
            users_file(tmp_path),
            site_keys=[signed_batch.keys],
        )
        await site.start()
        try:
            assert await Forwarder(signed_batch.journal, url).run()
            final = last_signed(signed_batch.journal)
            await wait_for(lambda: [h[:2] for h in heads(site, "sig1")] == [final])
            anchored = heads(site, "sig1")
            assert await Forwarder(forged, url).run()
            await wait_for(lambda: any("bad signature" in f for f in flags(site, "sig1")))
            page = await page_html(f"http://127.0.0.1:{port}", "/batch/site-a/sig1")
            return anchored, heads(site, "sig1"), flags(site, "sig1"), page
        finally:
            await site.stop()

    anchored, after, reasons, page = asyncio.run(scenario())
    _, _, verified, key_id = anchored[0]
    assert verified == 1 and key_id == signed_batch.key.key_id  # checked with site-a's key
    assert after == anchored  # the forged heads anchored nothing
    bad = [r for r in reasons if r.startswith("bad signature")]
    assert bad and f"not the site's registered key {signed_batch.key.key_id}" in bad[0]
    assert "signed ✓" in page and "bad signature" in page  # the control room sees both


def test_history_rewritten_and_resigned_with_the_sites_own_key_is_flagged(
    broker: BrokerConfig, postgres: str, signed_batch: SignedBatch, tmp_path: Path
):
    original = tmp_path / "sig2.sqlite"
    rewrite(signed_batch.journal, original, key=signed_batch.key, batch_id="sig2")
    forged = tmp_path / "sig2-forged.sqlite"
    rewrite(original, forged, key=signed_batch.key, edit_seq=40)
    port = free_port()
    url = BrokerURL.parse(broker.url("site-a", unit="cleanroom-1"))

    async def scenario() -> tuple[list, list[str], list[dict], str]:
        site = ControlSite(
            broker.url("control"),
            postgres,
            "127.0.0.1",
            port,
            users_file(tmp_path),
            site_keys=[signed_batch.keys / "site-a.pub"],
        )
        await site.start()
        try:
            assert await Forwarder(original, url).run()
            final = last_signed(original)
            await wait_for(lambda: [h[:2] for h in heads(site, "sig2")] == [final])
            assert flags(site, "sig2") == []
            assert await Forwarder(forged, url).run()
            await wait_for(lambda: any("anchored head" in f for f in flags(site, "sig2")))
            overview = await page_html(f"http://127.0.0.1:{port}", "/")
            return heads(site, "sig2"), flags(site, "sig2"), overview_rows(site.store), overview
        finally:
            await site.stop()

    after, reasons, rows, overview = asyncio.run(scenario())
    assert [h[:2] for h in after] == [last_signed(original)]  # the anchor stands
    assert not any(r.startswith("bad signature") for r in reasons)  # the signatures are good
    assert any("no longer extends its anchored head" in r for r in reasons)
    row = next(r for r in rows if r["batch"] == "sig2")
    assert row["chain_ok"] is False
    assert "no longer extends its anchored head" in row["attention"][0]  # head problems first
    shown = overview.split('data-batch="sig2"')[1].split("</tr>")[0]
    assert "no longer extends its anchored head" in shown  # in the batch's row
