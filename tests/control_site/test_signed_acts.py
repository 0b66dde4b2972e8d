"""Hold, suspend, reinstate and alarm acknowledgement from the dashboard's buttons:
confirmed, signed, audited.

A signed-in supervisor's act carries the reason and their password again (the
session alone never signs), the session's CSRF token and this origin; it is
answered with the page it came from and a message, never JSON. Only the acts that
make sense are offered, and a stale page's act that makes none is refused. The
control site runs for real against Mosquitto; the hold reaches the site's topic.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
from dashboard import Person, started_site
from site_journals import poc_twin, running_batch, wait_until
from site_users import PEOPLE

from twin.access.roles import Role
from twin.control_site.serve import ControlSite
from twin.engine.inbox import send_command
from twin.journal import read_events
from twin.station.board import BatchBoard
from twin.station.pages import batch_live
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.site import SiteRecord
from twin.telemetry.topics import BrokerURL


def flash(html: str) -> list[str]:
    return re.findall(r"class='flash-(?:ok|error)' role='status'>([^<]*)<", html)


def state(batch: str, state: str, ended: bool = False) -> tuple[str, str, str, str, Any]:
    body = {"batch": batch, "state": state, "seq": 5, "ended": ended}
    return ("site-a", "cleanroom-7", batch, "state", body)


def foreign_post(base: str, path: str, form: dict[str, str], cookie: str) -> int:
    """A form another site's page makes the signed-in browser send (it names its origin)."""
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    request = urllib.request.Request(base + path, data=body, method="POST")
    request.add_header("Origin", "http://evil.example")
    request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_acts_are_confirmed_signed_audited_and_offered_only_when_they_make_sense(
    broker: BrokerConfig, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def steps() -> dict[str, Any]:
        person = Person(base)
        person.sign_in()
        seen: dict[str, Any] = {}
        seen["running page"] = person.get("/batch/site-a/run1")[2]
        seen["ended page"] = person.get("/batch/site-a/done1")[2]
        seen["held page"] = person.get("/batch/site-a/held1")[2]
        seen["confirm"] = person.get("/batch/site-a/run1/hold")[2]
        seen["confirm ended"] = person.get("/batch/site-a/done1/hold")
        hold = "/batch/site-a/run1/hold"
        form = {"reason": "contamination alert", "next": "/batch/site-a/run1"}
        seen["no token"] = person.post(hold, {**form, "password": "s3cret"}, csrf=False)[0]
        cookie = "; ".join(f"{c.name}={c.value}" for c in person.jar)
        seen["other origin"] = foreign_post(
            base, hold, {**form, "password": "s3cret", "csrf": person.csrf}, cookie
        )
        seen["wrong password"] = person.post(hold, {**form, "password": "guess"})
        seen["no reason"] = person.post(hold, {"reason": " ", "password": "s3cret"})
        seen["held"] = person.post(hold, {**form, "password": "s3cret"})
        seen["hold ended"] = person.post(
            "/batch/site-a/done1/hold", {"reason": "late", "password": "s3cret"}
        )
        seen["overview"] = person.get("/")[2]
        site = {"reason": "audit pending", "password": "s3cret", "next": "/"}
        seen["suspend"] = person.post("/site/site-a/suspend", site)
        seen["suspend again"] = person.post("/site/site-a/suspend", site)
        seen["reinstate"] = person.post("/site/site-a/reinstate", {**site, "reason": "done"})
        seen["after"] = person.get("/")[2]
        return seen

    async def scenario() -> tuple[dict[str, Any], Any, list[tuple[Any, ...]]]:
        site = await started_site(broker, tmp_path, port)
        site.store.ingest(
            [
                state("run1", "Running"),
                state("done1", "Complete", ended=True),
                state("held1", "Held"),
            ]
        )
        url = BrokerURL.parse(broker.url("site-a"))
        try:
            async with aiomqtt.Client(**url.client_kwargs(), clean_session=True) as client:
                await client.subscribe("poc-twin/site-a/cleanroom-7/run1/command", qos=1)
                seen = await asyncio.to_thread(steps)
                async with asyncio.timeout(10):
                    command = json.loads((await anext(client.messages)).payload)
            audit = site.store.query(
                "SELECT batch, action, operator, reason, outcome FROM requests ORDER BY at"
            )
            return seen, command, audit
        finally:
            await site.stop()

    seen, command, audit = asyncio.run(scenario())
    # only the acts that make sense: hold while it can be held, none once held or ended
    assert ">Request hold</a>" in seen["running page"]
    assert "Request hold" not in seen["ended page"] and "has ended Complete" in seen["ended page"]
    assert "Request hold" not in seen["held page"] and "is Held" in seen["held page"]
    # the confirmation asks for the reason and the password again, with this session's token
    confirm = seen["confirm"]
    assert "Confirm: hold batch run1 at site site-a" in confirm
    assert "name='reason'" in confirm and "type='password' name='password'" in confirm
    assert "name='csrf'" in confirm and "Sign and send" in confirm
    status, path, text = seen["confirm ended"]
    assert path == "/batch/site-a/done1" and "done1 is Complete: there is nothing to hold" in text
    # forged or unsigned forms send nothing
    assert seen["no token"] == 403 and seen["other origin"] == 403
    status, path, text = seen["wrong password"]
    assert (status, path) == (200, "/batch/site-a/run1")
    assert flash(text) == ["Not signed (wrong user name or password): nothing was sent."]
    assert "Not sent: a reason is required" in flash(seen["no reason"][2])[0]
    # the signed act is sent, answered as the page with a message, never JSON
    status, path, text = seen["held"]
    assert (status, path) == (200, "/batch/site-a/run1") and text.startswith("<!doctype html>")
    assert flash(text) == [
        "Sent: hold batch run1 at site site-a, signed by alice, reason “contamination alert”. "
        "The batch shows Held once the site has taken it."
    ]
    assert command["command"] == "hold" and command["operator"] == "alice"
    assert command["reason"] == "contamination alert"
    assert "has ended: there is nothing to hold" in flash(seen["hold ended"][2])[0]
    # site acts: suspend an active site, reinstate a suspended one, never both
    sites = seen["overview"].split("<table id='sites'>")[1].split("</table>")[0]
    assert ">Suspend</a>" in sites and "Reinstate" not in sites
    assert flash(seen["suspend"][2]) == [
        "Sent: suspend site site-a, signed by alice, reason “audit pending”."
    ]
    assert flash(seen["suspend again"][2]) == [
        "Not sent: site site-a is already suspended: nothing sent."
    ]
    assert flash(seen["reinstate"][2])[0].startswith("Sent: reinstate site site-a")
    sites = seen["after"].split("<table id='sites'>")[1].split("</table>")[0]
    assert "active" in sites and ">Suspend</a>" in sites
    # every attempt is in the audit, with who and what came of it
    assert [(b, a, o.split(":")[0]) for b, a, _, _, o in audit] == [
        ("run1", "hold", "not signed"),
        ("run1", "hold", "sent"),
        ("done1", "hold", "batch done1 at site site-a has ended"),
        ("-", "suspend", "sent"),
        ("-", "suspend", "site site-a is already suspended"),
        ("-", "reinstate", "sent"),
    ]
    assert {who for _, _, who, _, _ in audit} == {"alice"}
    requests = seen["after"].split("id='requests'")[1].split("</table>")[0]
    assert "<th>user</th><th>request</th>" in requests and "not signed" in requests


def test_an_alarm_is_acknowledged_from_the_batch_page_and_journalled_at_the_site(
    broker: BrokerConfig, alarm_recipe: Path, tmp_path: Path
) -> None:
    """A real batch raises a critical alarm and holds; the supervisor acknowledges it from
    its row (confirmation, reason, password); the request crosses Mosquitto to the batch's
    forwarder, the batch journals it, and the page shows who acknowledged it and when."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    journal = tmp_path / "ack1.sqlite"

    def stored(site: ControlSite, kind: str) -> list[tuple[Any, ...]]:
        return site.store.query(
            "SELECT seq, data FROM events WHERE site='site-a' AND batch='ack1' AND kind=?",
            (kind,),
        )

    def acknowledge(alarm: int) -> dict[str, Any]:
        person = Person(base)
        person.sign_in()
        page = f"/batch/site-a/ack1/alarm/{alarm}/acknowledge"
        seen: dict[str, Any] = {"before": person.get("/batch/site-a/ack1")[2]}
        seen["confirm"] = person.get(page)[2]
        form = {"reason": "probe checked, culture fine", "next": "/batch/site-a/ack1"}
        seen["no token"] = person.post(page, {**form, "password": "s3cret"}, csrf=False)[0]
        seen["wrong password"] = person.post(page, {**form, "password": "guess"})[2]
        seen["sent"] = person.post(page, {**form, "password": "s3cret"})
        seen["not an alarm"] = person.get("/batch/site-a/ack1/alarm/1/acknowledge")[0]
        return seen

    def after(alarm: int) -> dict[str, Any]:
        person = Person(base)
        person.sign_in()
        page = f"/batch/site-a/ack1/alarm/{alarm}/acknowledge"
        form = {"reason": "again", "password": "s3cret", "next": "/batch/site-a/ack1"}
        return {"page": person.get("/batch/site-a/ack1")[2], "again": person.post(page, form)[2]}

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any], list[tuple[Any, ...]]]:
        site = await started_site(broker, tmp_path, port)
        url = broker.url("site-a", unit="cleanroom-9")
        try:
            async with running_batch(alarm_recipe, journal, "ack1", url) as proc:
                await wait_until(lambda: stored(site, "alarm"))
                await wait_until(lambda: site.store.batch_state("site-a", "ack1") == "Held")
                alarm = int(stored(site, "alarm")[0][0])
                seen = await asyncio.to_thread(acknowledge, alarm)
                await wait_until(lambda: stored(site, "alarm_ack"))
                later = await asyncio.to_thread(after, alarm)
                abort = await send_command(
                    journal, "abort", operator="sam", password=PEOPLE["sam"][2], reason="over"
                )
                assert abort["status"] == "accepted", abort
                assert await proc.wait() == 3
            audit = site.store.query(
                "SELECT action, operator, reason, outcome FROM requests WHERE batch='ack1' "
                "ORDER BY at"
            )
            return alarm, seen, later, audit
        finally:
            await site.stop()

    alarm, seen, later, audit = asyncio.run(scenario())
    # the row offers the act while the alarm waits for someone
    row = f"/batch/site-a/ack1/alarm/{alarm}/acknowledge"
    assert "not acknowledged" in seen["before"] and f"href='{row}'" in seen["before"]
    assert ">Acknowledge</a>" in seen["before"]
    assert f"Confirm: acknowledge alarm {alarm} of batch ack1 at site site-a" in seen["confirm"]
    assert "type='password' name='password'" in seen["confirm"] and "name='csrf'" in seen["confirm"]
    assert seen["no token"] == 403 and seen["not an alarm"] == 404
    assert flash(seen["wrong password"]) == [
        "Not signed (wrong user name or password): nothing was sent."
    ]
    status, path, text = seen["sent"]
    assert (status, path) == (200, "/batch/site-a/ack1")
    assert flash(text) == [
        f"Sent: acknowledge alarm {alarm} of batch ack1 at site site-a, signed by alice, "
        "reason “probe checked, culture fine”. The alarm shows acknowledged once the site has "
        "journalled it."
    ]
    # the site journalled it, with who and why, as the batch's own act
    acks = [e for e in read_events(journal) if e.kind == "alarm_ack"]
    assert [(e.data["alarm_seq"], e.data["user"], e.data["comment"]) for e in acks] == [
        (alarm, "control-site:alice", "probe checked, culture fine")
    ]
    assert acks[0].data["via"] == "control-site" and acks[0].data["critical"] is True
    verified = poc_twin("verify", str(journal))  # chain and signatures: a relayed act is
    assert verified.returncode == 0, verified.stdout + verified.stderr  # signed at the source
    record = tmp_path / "ack1.html"
    assert poc_twin("report", str(journal), "-o", str(record)).returncode == 0
    assert "control-site:alice" in record.read_text()  # in the batch record's alarm list
    # the operator station's alarm list (read from the same journal) shows it acknowledged
    board = BatchBoard(journal)
    board.refresh()
    station = batch_live(board, running=False, roles=frozenset(Role))
    station_alarms = station.split("<th>Acknowledgement</th>")[1].split("</table>")[0]
    assert "control-site:alice: probe checked, culture fine" in station_alarms
    assert f"Acknowledge alarm {alarm}" not in station_alarms
    site_record = SiteRecord.beside(journal).requests()
    assert (f"acknowledge alarm {alarm}", "control-site:alice") in [r[:2] for r in site_record]
    assert next(r for r in site_record if r[0].startswith("acknowledge"))[3] == "accepted"
    # and the dashboard shows it acknowledged, by whom, when; the button is gone
    alarms = later["page"].split("id='alarms'")[1].split("</table>")[0]
    assert "control-site:alice</span>, " in alarms and "probe checked, culture fine" in alarms
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC: probe checked", alarms)
    assert "not acknowledged" not in alarms and ">Acknowledge</a>" not in alarms
    assert flash(later["again"]) == [
        f"Not sent: alarm {alarm} was acknowledged already by control-site:alice."
    ]
    # every attempt audited at the control site, the one sent with the site's answer
    assert [(a, o.split(":")[0]) for a, _, _, o in audit] == [
        (f"acknowledge alarm {alarm}", "not signed"),
        (f"acknowledge alarm {alarm}", "accepted at the site (Held)"),
        (f"acknowledge alarm {alarm}", f"alarm {alarm} was acknowledged already by control-site"),
    ]
