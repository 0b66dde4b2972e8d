"""A batch whose process died, resumed with its broker: the control site gets everything.

``poc-twin run --broker`` is killed (SIGKILL) while its batch waits, held by an alarm;
``poc-twin resume --broker`` brings it back. Its forwarder sends the control site what it
lacks (the resume's deviation and every event after), and the control site's requests
reach the resumed batch through it. Real Mosquitto, real control site, real processes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

from dashboard import started_site
from site_journals import QUICK, REPO, running_batch, wait_until
from site_users import PEOPLE

from twin.control_site.supervision import Supervision
from twin.engine.inbox import command_address, send_command
from twin.journal import read_events
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.site import SiteRecord


def takes_commands(journal: Path) -> bool:
    """The resumed batch listens on its command address (after its deviation is written)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(command_address(journal))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def test_a_resumed_batch_forwards_what_the_control_site_lacks_and_takes_its_requests(
    broker: BrokerConfig, alarm_recipe: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "rs1.sqlite"
    url = broker.url("site-a", unit="cleanroom-4")

    async def scenario() -> tuple[Any, ...]:
        site = await started_site(broker, tmp_path, free_port())

        def stored(kind: str | None = None) -> list[tuple[Any, ...]]:
            sql = "SELECT seq, kind, data FROM events WHERE site='site-a' AND batch='rs1'"
            args: tuple[str, ...] = ()
            if kind is not None:
                sql, args = sql + " AND kind=?", (kind,)
            return site.store.query(sql + " ORDER BY seq", args)

        try:
            async with running_batch(alarm_recipe, journal, "rs1", url) as run:
                await wait_until(lambda: site.store.batch_state("site-a", "rs1") == "Held")
                await wait_until(lambda: stored("alarm"))
                run.kill()  # the site's batch process dies, its batch held by the alarm
                await run.wait()
            before = len(list(read_events(journal)))
            # Its forwarder has delivered what the journal holds and gone (a request it
            # still heard would be answered "not delivered": no batch process).
            offline = "SELECT offline_why FROM batches WHERE batch='rs1' AND online=0"
            await wait_until(lambda: site.store.query(offline))
            # Sent while the process is dead: it waits at the broker for the resumed batch
            # (before, resume's suspension check took it from the site's session and
            # dropped it: the request showed "sent" until the batch ended).
            alarm = int(stored("alarm")[0][0])
            await Supervision(site.ingest).acknowledge(
                "site-a", "rs1", alarm, operator="alice", reason="checked after the crash"
            )
            resume = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-c", "from twin.cli import main; main()", "resume", str(journal), "-q"),
                *("--operator", "sam", "--reason", "batch process killed", "--broker", url),
                cwd=REPO,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **QUICK},
            )
            try:
                assert resume.stdin is not None
                resume.stdin.write(PEOPLE["sam"][2].encode() + b"\n")  # the supervisor signs
                await resume.stdin.drain()
                resume.stdin.close()
                await wait_until(lambda: stored("deviation"), 90)
                await wait_until(lambda: takes_commands(journal), 90)  # handed over
                await wait_until(lambda: stored("alarm_ack"), 60)
                abort = await send_command(
                    journal, "abort", operator="sam", password=PEOPLE["sam"][2], reason="over"
                )
                assert abort["status"] == "accepted", abort
                out, err = await asyncio.wait_for(resume.communicate(), 90)
            finally:
                if resume.returncode is None:
                    resume.kill()
                    await resume.wait()
            total = len(list(read_events(journal)))
            await wait_until(lambda: len(stored()) >= total)
            await wait_until(lambda: site.store.batch_state("site-a", "rs1") == "Aborted")
            seqs = [int(r[0]) for r in stored()]
            contiguous = site.store.contiguous("site-a", "rs1")
            return resume.returncode, out.decode(), err.decode(), before, total, seqs, contiguous
        finally:
            await site.stop()

    code, out, err, before, total, seqs, contiguous = asyncio.run(scenario())
    assert code == 3, out + err  # ended Aborted
    assert f"every event delivered and stored by the control site ({total})" in out, out + err
    assert total > before
    assert seqs == list(range(1, total + 1)) and contiguous == total  # no gap, nothing missing
    events = list(read_events(journal))
    acks = [e.data for e in events if e.kind == "alarm_ack"]
    assert [(a["user"], a["comment"], a["via"]) for a in acks] == [
        ("control-site:alice", "checked after the crash", "control-site")
    ]
    assert [e.data["last_seq"] for e in events if e.kind == "deviation"] == [before]
    outcomes = [(r[0].split(" ")[0], r[3]) for r in SiteRecord.beside(journal).requests()]
    assert ("acknowledge", "accepted") in outcomes
