"""What a relayed request says is checked at the site before anything is journalled.

The site trusts the broker's word that a ``command`` message came from a control
login; it does not trust the words in it. A user that is not a safe name, a reason
with a control character or none at all: invalid, nothing reaches the batch's
journal, and the site's record says what came, escaped. Real Mosquitto, a real
batch, the control login publishing by hand as ``mosquitto_pub`` would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest
from site_journals import running_batch, wait_until
from site_users import PEOPLE

from twin.control_site.logins import Users
from twin.engine.inbox import send_command
from twin.journal import read_events
from twin.telemetry.broker import BrokerConfig
from twin.telemetry.site import SiteRecord
from twin.telemetry.topics import BrokerURL, TelemetryError
from twin.words import escaped

ESCAPE = "eve\x1b[2J\nsignature: sam"


def kinds(journal: Path, kind: str) -> list[dict]:
    try:
        return [e.data for e in read_events(journal) if e.kind == kind]
    except Exception:  # the batch has not written its tables yet
        return []


def test_forged_users_and_unfit_reasons_are_refused_at_the_site(
    broker: BrokerConfig, alarm_recipe: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "rw1.sqlite"
    url = broker.url("site-a", unit="cleanroom-5")
    command_topic = "poc-twin/site-a/cleanroom-5/rw1/command"

    async def scenario() -> int:
        # no control site here: its forwarder must not linger for one (it would take site-a's
        # session from the next test's forwarder)
        no_wait = {"POC_TWIN_TELEMETRY_CONFIRM_S": "0"}
        async with running_batch(alarm_recipe, journal, "rw1", url, **no_wait) as proc:
            await wait_until(lambda: kinds(journal, "alarm"))
            # its forwarder has subscribed once it has delivered a chunk (ack file written)
            await wait_until(Path(f"{journal}.telemetry.json").exists)
            alarm = next(e.seq for e in read_events(journal) if e.kind == "alarm")
            forged = [
                {"command": "acknowledge", "operator": "mallory (never signed)", "reason": "x"},
                {"command": "acknowledge", "operator": ESCAPE, "reason": "forged ack"},
                {"command": "acknowledge", "operator": "eve", "reason": "two\nlines"},
                {"command": "acknowledge", "operator": "eve", "reason": "\x1b]0;pwned\x07"},
                {"command": "acknowledge", "operator": "eve", "reason": "   "},
                {"command": "acknowledge", "operator": "eve"},
                {"command": "acknowledge", "reason": "no user"},
                {"command": "acknowledge", "operator": 7, "reason": "a number"},
                {"command": "hold", "operator": "control-site:eve", "reason": "doubled prefix"},
                {"command": "hold", "operator": "eve\u202e", "reason": "bidi mark"},
            ]
            control = BrokerURL.parse(broker.url("control")).client_kwargs()
            async with aiomqtt.Client(**control) as client:
                for n, body in enumerate(forged):
                    body = {"v": 1, "id": f"f{n}", "alarm": alarm, **body}
                    await client.publish(command_topic, json.dumps(body), qos=1)
                good = {"v": 1, "id": "ok", "command": "acknowledge", "alarm": alarm}
                good |= {"operator": "alice", "reason": "probe checked"}
                await client.publish(command_topic, json.dumps(good), qos=1)
            # one forwarder, one listener, in order: once the good one is in, all were seen
            await wait_until(lambda: kinds(journal, "alarm_ack"))
            abort = await send_command(
                journal, "abort", operator="sam", password=PEOPLE["sam"][2], reason="over"
            )
            assert abort["status"] == "accepted", abort
            return await proc.wait()

    assert asyncio.run(scenario()) == 3
    acks = kinds(journal, "alarm_ack")
    assert [(a["user"], a["comment"]) for a in acks] == [("control-site:alice", "probe checked")]
    commands = kinds(journal, "command")
    # the alarm's own hold and sam's abort: no forged hold, accepted or refused
    assert [c["operator"] for c in commands] == ["alarm:culture temperature", "sam"]
    text = journal.read_bytes()
    assert b"mallory" not in text and b"\x1b" not in text and b"doubled prefix" not in text
    rows = SiteRecord.beside(journal).requests()
    refused = [r for r in rows if r[3].startswith("invalid:")]
    assert len(refused) == 10
    assert all("nothing was journalled" in r[3] for r in refused)
    shown = " ".join(" ".join(r) for r in rows)
    assert "\x1b" not in shown and "\n" not in shown and "\u202e" not in shown
    assert f"control-site:{escaped(ESCAPE)}" in [r[1] for r in refused]
    assert ("acknowledge alarm", "control-site:alice", "probe checked", "accepted") in [
        (r[0].rsplit(" ", 1)[0], r[1], r[2], r[3]) for r in rows
    ]


def test_a_control_site_users_file_names_only_safe_user_ids(tmp_path: Path) -> None:
    """The control site sends its signed-in user's id; a hand-edited users file cannot make
    that id something a site would refuse (or worse, journal)."""
    path = tmp_path / "users"
    path.write_text(Users.line("alice", "s3cret") + "\n")
    assert len(Users(path)) == 1
    path.write_text(Users.line("mallory (never signed)", "s3cret") + "\n")
    with pytest.raises(TelemetryError, match="not a safe name"):
        Users(path)


def test_escaped_words_are_one_inert_line() -> None:
    assert escaped(ESCAPE) == "eve\\x1b[2J\\nsignature: sam"
    assert escaped("a\u200bb\u2028c") == "a\\u200bb\\u2028c"
    assert len(escaped("x" * 500, 50)) == 50
