"""Requests to sites: refused with a clear 4xx when they cannot apply, every one audited.

A hold for a batch that ended, or for a site or batch the control site never
heard of, is refused with the reason (never a 500); reinstating a site answers
200 whatever its state, 503 without a broker; the ``requests`` table names the
logged-in user and the outcome of each, refused ones included.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
from aiohttp import web

from twin.control_site.ingest import Ingest
from twin.control_site.logins import Users
from twin.control_site.serve import ControlSite
from twin.control_site.store import open_store
from twin.control_site.web import make_app
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.topics import BrokerURL


def post(url: str, reason: str = "check") -> tuple[int, str]:
    request = urllib.request.Request(url, data=f"reason={reason}".encode(), method="POST")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"alice:s3cret").decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(Users.line("alice", "s3cret") + "\n")
    return path


def state(name: str, ended: bool) -> tuple[str, str, str, str, dict[str, Any]]:
    body = {"batch": name, "state": "Complete" if ended else "Running", "seq": 5, "ended": ended}
    return ("site-a", "cleanroom-7", name, "state", body)


def test_requests_are_refused_with_a_reason_and_every_one_is_audited(
    broker: BrokerConfig, tmp_path: Path
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> tuple[dict[str, tuple[int, str]], list[tuple[Any, ...]], Any, Any]:
        site = ControlSite(
            broker.url("control"),
            str(tmp_path / "cs.sqlite"),
            "127.0.0.1",
            port,
            users_file(tmp_path),
        )
        await site.start()
        site.store.ingest([state("running1", ended=False), state("done1", ended=True)])
        url = BrokerURL.parse(broker.url("site-a"))
        answers: dict[str, tuple[int, str]] = {}
        try:
            async with aiomqtt.Client(**url.client_kwargs(), clean_session=True) as client:
                await client.subscribe("poc-twin/site-a/cleanroom-7/running1/command", qos=1)
                for name, path in [
                    ("hold", "/batch/site-a/running1/hold"),
                    ("hold ended", "/batch/site-a/done1/hold"),
                    ("hold unknown batch", "/batch/site-a/nobatch/hold"),
                    ("hold unknown site", "/batch/site-z/running1/hold"),
                    ("hold unsafe name", "/batch/site-a/a%20b/hold"),
                    ("suspend unknown site", "/site/site-z/suspend"),
                    ("reinstate unknown site", "/site/site-z/reinstate"),
                    ("reinstate never suspended", "/site/site-a/reinstate"),
                    ("suspend", "/site/site-a/suspend"),
                    ("reinstate", "/site/site-a/reinstate"),
                ]:
                    answers[name] = await asyncio.to_thread(post, base + path)
                async with asyncio.timeout(10):
                    command = json.loads((await anext(client.messages)).payload)
            audit = site.store.query(
                "SELECT site, batch, action, operator, outcome FROM requests ORDER BY at"
            )
            sites = site.store.query("SELECT site, suspended, operator FROM sites")
            return answers, audit, command, sites
        finally:
            await site.stop()

    answers, audit, command, sites = asyncio.run(scenario())
    assert {k: v[0] for k, v in answers.items()} == {
        "hold": 200,
        "hold ended": 409,
        "hold unknown batch": 404,
        "hold unknown site": 404,
        "hold unsafe name": 400,
        "suspend unknown site": 404,
        "reinstate unknown site": 404,
        "reinstate never suspended": 200,
        "suspend": 200,
        "reinstate": 200,
    }
    assert "batch done1 at site site-a has ended" in answers["hold ended"][1]
    assert "no batch nobatch at site site-a" in answers["hold unknown batch"][1]
    assert "'a b' is not a safe name" in answers["hold unsafe name"][1]
    assert "no site site-z" in answers["reinstate unknown site"][1]
    assert command["command"] == "hold" and command["operator"] == "alice"
    assert len(audit) == len(answers)  # every request, refused ones too
    assert all(row[3] == "alice" for row in audit)
    outcomes = [(row[2], row[4].split(":")[0]) for row in audit]
    assert outcomes == [
        ("hold", "sent"),
        ("hold", "batch done1 at site site-a has ended"),
        ("hold", "no batch nobatch at site site-a"),
        ("hold", "no batch running1 at site site-z"),
        ("hold", "batch 'a b' is not a safe name"),
        ("suspend", "no site site-z"),
        ("reinstate", "no site site-z"),
        ("reinstate", "sent"),
        ("suspend", "sent"),
        ("reinstate", "sent"),
    ]
    assert sites == [("site-a", 0, "alice")]


def test_without_a_broker_a_reinstatement_is_refused_503_and_audited(tmp_path: Path):
    async def scenario() -> tuple[tuple[int, str], list[tuple[Any, ...]]]:
        store = open_store(str(tmp_path / "cs.sqlite"))
        store.ingest([state("running1", ended=False)])
        ingest = Ingest(BrokerURL.parse("mqtt://control:x@127.0.0.1:1/"), store)  # not started
        runner = web.AppRunner(make_app(ingest, Users(users_file(tmp_path))))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            answer = await asyncio.to_thread(post, f"http://127.0.0.1:{port}/site/site-a/reinstate")
            return answer, store.query("SELECT action, operator, outcome FROM requests")
        finally:
            await runner.cleanup()
            store.close()

    (status, text), audit = asyncio.run(scenario())
    assert status == 503 and "not connected to the broker" in text
    assert audit == [
        ("reinstate", "alice", "not sent: the control site is not connected to the broker")
    ]
