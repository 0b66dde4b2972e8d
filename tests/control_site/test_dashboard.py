"""The dashboard as a control-site supervisor uses it (issue 15), served for real on loopback.

Batches are real ones (the shipped CAR-T recipe run on the twin, and copies of it cut
short or with an alarm added), stored as the forwarder publishes them, in the same
store the control site uses (SQLite here; PostgreSQL where the store's own queries
differ). A person signs in with the form and reads the pages over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from dashboard import (
    PASSWORD,
    USER,
    Person,
    copy_batch,
    messages_of,
    page_as_supervisor,
    users_file,
)

from twin.control_site.ingest import Ingest
from twin.control_site.keys import SiteKeys
from twin.control_site.logins import Users
from twin.control_site.store import Store, open_store
from twin.control_site.views import overview_rows
from twin.control_site.web import make_app
from twin.journal import read_events
from twin.signing import generate_site_key
from twin.telemetry.broker import free_port
from twin.telemetry.topics import BrokerURL

DAY = 86400.0


@asynccontextmanager
async def dashboard(store: Store, users: Path) -> AsyncIterator[str]:
    """The real app on a free loopback port; its ingest not started (no broker needed)."""
    ingest = Ingest(BrokerURL.parse("mqtt://control:x@127.0.0.1:1/"), store)
    runner = web.AppRunner(make_app(ingest, Users(users)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def served(store: Store, users: Path, steps: Callable[[str], Any]) -> Any:
    """Run ``steps(base_url)`` (blocking HTTP, in a thread) against the served dashboard."""

    async def scenario() -> Any:
        async with dashboard(store, users) as base:
            return await asyncio.to_thread(steps, base)

    return asyncio.run(scenario())


def row_of(html: str, batch: str) -> str:
    """The overview's table row of one batch."""
    return html.split(f"data-batch='{batch}'")[1].split("</tr>")[0]


def flash(html: str) -> list[str]:
    return re.findall(r"class='flash-(?:ok|error)' role='status'>([^<]*)<", html)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(str(tmp_path / "control.sqlite"))
    yield s
    s.close()


def test_every_page_needs_a_sign_in(store: Store, cart_journal: Path, tmp_path: Path) -> None:
    store.ingest(messages_of(cart_journal, "site-a", "cleanroom-1", "cart1"))

    def steps(base: str) -> dict[str, Any]:
        stranger = Person(base)
        seen: dict[str, Any] = {
            path: stranger.get(path)[:2]
            for path in (
                "/",
                "/?site=site-a",
                "/batch/site-a/cart1",
                "/batch/site-a/cart1/record",
                "/batch/site-a/cart1/hold",
                "/site/site-a/suspend",
                "/api/overview",
                "/api/batch/site-a/cart1",
            )
        }
        seen["post hold"] = stranger.post("/batch/site-a/cart1/hold", {"reason": "x"})[0]
        for api in ("/api/batches", "/api/quarantine"):
            seen[api] = stranger.get(api)[0]
            seen[f"{api} wrong password"] = stranger.get_as_program(api, USER, "guess")[0]
            seen[f"{api} program"] = stranger.get_as_program(api)
        seen["wrong password"] = stranger.sign_in(USER, "guess")
        seen["signed in"] = stranger.sign_in()
        seen["after"] = stranger.get("/batch/site-a/cart1")[0]
        seen["api after"] = stranger.get("/api/batches")[0]  # the session reads the API too
        stranger.post("/logout", {})
        seen["signed out"] = stranger.get("/")[:2]
        return seen

    seen = served(store, users_file(tmp_path), steps)
    assert seen["/"] == (200, "/login")
    assert seen["/batch/site-a/cart1"] == (200, "/login")
    assert seen["/batch/site-a/cart1/record"] == (200, "/login")
    assert seen["/batch/site-a/cart1/hold"] == (200, "/login")
    assert seen["/site/site-a/suspend"] == (200, "/login")
    assert seen["/api/overview"][0] == seen["/api/batch/site-a/cart1"][0] == 401
    assert seen["post hold"] == 401
    for api in ("/api/batches", "/api/quarantine"):
        assert seen[api] == seen[f"{api} wrong password"] == 401, api
        status, _, text = seen[f"{api} program"]
        assert status == 200, (api, text)
    assert json.loads(seen["/api/batches program"][2])[0]["batch"] == "cart1"
    status, path, text = seen["wrong password"]
    assert (status, path) == (401, "/login") and "wrong user name or password" in text
    status, path, text = seen["signed in"]
    assert (status, path) == (200, "/") and "signed in as alice" in text
    assert "data-batch='cart1'" in text
    assert seen["after"] == seen["api after"] == 200
    assert seen["signed out"] == (200, "/login")


def test_after_sign_in_the_browser_returns_to_the_page_it_asked_for_and_only_here(
    store: Store, cart_journal: Path, tmp_path: Path
) -> None:
    store.ingest(messages_of(cart_journal, "site-a", "cleanroom-1", "cart1"))

    def steps(base: str) -> tuple[str, str]:
        person = Person(base)
        person.get("/batch/site-a/cart1")  # sent to sign in, with where it was going
        went = person.post(
            "/login", {"user": USER, "password": PASSWORD, "next": "/batch/site-a/cart1"}, False
        )[1]
        other = Person(base)
        away = other.post(
            "/login", {"user": USER, "password": PASSWORD, "next": "//evil.example/"}, False
        )[1]
        return went, away

    assert served(store, users_file(tmp_path), steps) == ("/batch/site-a/cart1", "/")


def test_a_batch_whose_time_runs_past_its_recipe_is_flagged(
    store: Store, cart_journal: Path, tmp_path: Path
) -> None:
    """A batch stuck at day 194 of a 10-day recipe showed a green "ok" (issue 15)."""
    on_time = copy_batch(cart_journal, tmp_path / "b1.sqlite", "b1", upto=2000)
    stuck = copy_batch(
        cart_journal,
        tmp_path / "b2.sqlite",
        "b2",
        upto=2000,
        extra=[(194 * DAY, "reading", "bioreactor", {"what": "pv", "values": {"ph": 7.1}})],
    )
    for name, journal in (("b1", on_time), ("b2", stuck)):
        store.ingest(messages_of(journal, "site-a", "cleanroom-1", name))
    store.ingest(messages_of(cart_journal, "site-a", "cleanroom-1", "cart1"))  # ended, day 8
    rows = {r["batch"]: r for r in overview_rows(store)}
    assert rows["b2"]["past_recipe"] and rows["b2"]["planned_days"] == pytest.approx(10.23, 0.01)
    assert (
        "day 194.0 of a recipe planned for at most 10.2 days: past its recipe"
        in rows["b2"]["attention"]
    )
    assert not rows["b1"]["past_recipe"] and rows["b1"]["attention"] == []
    assert not rows["cart1"]["past_recipe"] and rows["cart1"]["attention"] == []

    def steps(base: str) -> tuple[str, str]:
        person = Person(base)
        person.sign_in()
        return person.get("/")[2], person.get("/batch/site-a/b2")[2]

    overview, page = served(store, users_file(tmp_path), steps)
    assert "past its recipe" in row_of(overview, "b2")
    assert "194.00 of ≤10.2" in row_of(overview, "b2")
    assert "<span id='day' class='bad'>day 194.00 of at most 10.2 planned</span>" in page


def test_trends_have_a_batch_time_axis_setpoints_and_alarm_limits(
    store: Store, cart_journal: Path, tmp_path: Path
) -> None:
    store.ingest(messages_of(cart_journal, "site-a", "cleanroom-1", "cart1"))

    page = served(store, users_file(tmp_path), page_as_supervisor("/batch/site-a/cart1"))
    trends = page.split("<h2>Trends</h2>")[1].split("<h2>Alarms</h2>")[0]
    assert trends.count('<svg class="trend"') == 5
    for title in ("Temperature (°C)", "Dissolved oxygen (% air sat.)", "pH", "Volume (mL)"):
        assert f"<h3>{title}</h3>" in trends
    assert trends.count("batch time (day)") == 5  # a time axis on every trend, in days
    assert "culture temperature high 38.5" in trends and "culture temperature low 35" in trends
    assert "dissolved oxygen low 15" in trends  # the recipe's monitors, as limit lines
    # and the range between them shaded as a band (to the plot's edge on an open side)
    assert "within alarm limits: 35 to 38.5" in trends and "within alarm limits: 15 to -" in trends
    assert trends.count('class="sp"') >= 2  # temperature and DO setpoints as step lines
    assert "<polyline" in trends and "sparkline" not in trends
    values = page.split("id='process-values'")[1].split("</table>")[0]
    assert "<th>setpoint</th><th>low alarm</th><th>high alarm</th>" in values


def test_alarms_and_commands_are_tables_with_who_and_why(
    store: Store, cart_journal: Path, tmp_path: Path
) -> None:
    alarm = {"alarm": "temp", "kind": "limit", "reaction": "hold", "message": "temperature 39.1"}
    command = {
        "command": "hold",
        "level": "procedure",
        "operator": "control-site:alice",
        "reason": "contamination <alert>",
        "accepted": True,
        "state": "Running",
        "via": "control-site",
    }
    ack = {"alarm_seq": 1001, "alarm": "temp", "critical": True, "user": "sam", "comment": "seen"}
    journal = copy_batch(
        cart_journal,
        tmp_path / "a1.sqlite",
        "a1",
        upto=1000,
        extra=[
            (1.5 * DAY, "alarm", "bioreactor", alarm),
            (1.6 * DAY, "command", "procedure:car-t", command),
            (1.7 * DAY, "alarm_ack", "bioreactor", ack),
        ],
    )
    store.ingest(messages_of(journal, "site-a", "cleanroom-1", "a1"))

    page = served(store, users_file(tmp_path), page_as_supervisor("/batch/site-a/a1"))
    alarms = page.split("<table id='alarms'>")[1].split("</table>")[0]
    assert "<th>acknowledged (who, when, comment)</th>" in alarms
    assert "<td>1001</td><td>1.50</td><td>bioreactor</td><td>temperature 39.1</td>" in alarms
    assert "critical" in alarms and re.search(
        r"sam</span>, \d{4}-\d\d-\d\d \d\d:\d\d UTC: seen", alarms
    )
    assert "Acknowledge" not in alarms  # acknowledged already: nothing to offer
    commands = page.split("<table id='commands'>")[1].split("</table>")[0]
    assert "<th>who</th><th>command</th><th>level</th><th>reason</th>" in commands
    assert "control-site:alice" in commands and "contamination &lt;alert&gt;" in commands
    assert "accepted" in commands
    assert '{"' not in alarms + commands  # no raw JSON


def test_every_registered_site_is_listed_idle_or_not(store: Store, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    for site in ("site-a", "site-c"):
        generate_site_key(site, keys)
    for site in ("site-a", "site-c"):
        (keys / f"{site}.key").unlink()  # the control site holds public keys only
    registered = open_store(str(tmp_path / "keyed.sqlite"), SiteKeys([keys]))
    registered.ingest(
        [("site-b", "u1", "B-1", "state", {"batch": "B-1", "state": "Running", "seq": 3})]
    )

    page = served(registered, users_file(tmp_path), page_as_supervisor("/"))
    registered.close()
    sites = page.split("<table id='sites'>")[1].split("</table>")[0]
    for site in ("site-a", "site-b", "site-c"):
        assert f"data-site='{site}'" in sites
    idle = sites.split("data-site='site-c'")[1].split("</tr>")[0]
    assert "idle: no batch" in idle and "registered" in idle and ">Suspend</a>" in idle
    busy = sites.split("data-site='site-b'")[1].split("</tr>")[0]
    assert "1 running, 1 in all" in busy
    assert "3 sites (2 idle, 0 suspended)" in page


def test_the_batch_list_sorts_and_filters(store: Store, tmp_path: Path) -> None:
    def state(site: str, batch: str, state: str, day: float, ended: bool = False) -> Any:
        body = {"batch": batch, "state": state, "seq": 3, "batch_time": day * DAY, "ended": ended}
        return (site, "u1", batch, "state", body)

    store.ingest(
        [
            state("site-a", "A-1", "Running", 2.0),
            state("site-a", "A-2", "Complete", 9.0, ended=True),
            state("site-b", "B-1", "Held", 5.0),
            state("site-b", "B-2", "Running", 1.0),
        ]
    )

    def steps(base: str) -> dict[str, str]:
        person = Person(base)
        person.sign_in()
        queries = {
            "site": "/?site=site-b",
            "ended": "/?state=ended",
            "held": "/?state=held",
            "active": "/?state=active&sort=day&order=desc",
            "by day": "/?sort=day",
            "nonsense": "/?state=nope&sort=nope",
        }
        seen = {name: person.get(path)[2] for name, path in queries.items()}
        seen["live"] = person.get("/api/overview?site=site-b")[2]
        return seen

    seen = served(store, users_file(tmp_path), steps)

    def shown(html: str) -> list[str]:
        table = html.split("id='batches'")[1].split("</table>")[0]
        return re.findall(r"data-batch='([^']+)'", table)

    assert shown(seen["site"]) == ["B-1", "B-2"]
    assert shown(seen["ended"]) == ["A-2"]
    assert shown(seen["held"]) == ["B-1"]
    assert shown(seen["active"]) == ["B-1", "A-1", "B-2"]  # day 5, 2, 1
    assert shown(seen["by day"]) == ["B-2", "A-1", "B-1", "A-2"]
    assert shown(seen["nonsense"]) == ["B-1", "A-1", "A-2", "B-2"]  # attention first
    assert "data-api='/api/overview?site=site-b'" in seen["site"]  # updates keep the filter
    assert "A-1" not in shown(seen["live"].replace('\\"', "'"))
    assert "<select name='site'>" in seen["site"] and "value='site-b' selected" in seen["site"]


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_each_batch_links_to_its_record_built_from_the_stored_events(
    where: str, cart_journal: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres") if where == "postgres" else str(tmp_path / "cs.db")
    store = open_store(url)
    batch = f"rec-{where}-{free_port()}"  # PostgreSQL is shared by the session's tests
    gap = f"{batch}-gap"
    store.ingest(messages_of(cart_journal, "site-a", "cleanroom-1", batch))
    store.ingest(messages_of(cart_journal, "site-a", "cleanroom-1", gap, skip=[500]))

    def steps(base: str) -> tuple[str, str, str, str]:
        person = Person(base)
        person.sign_in()
        return (
            person.get("/")[2],
            person.get(f"/batch/site-a/{batch}")[2],
            person.get(f"/batch/site-a/{batch}/record")[2],
            person.get(f"/batch/site-a/{gap}/record")[2],
        )

    overview, page, record, broken = served(store, users_file(tmp_path), steps)
    store.close()
    link = f"/batch/site-a/{batch}/record"
    assert f"<a class='record' href='{link}'>record</a>" in row_of(overview, batch)
    assert f"id='record-link' href='{link}'" in page
    assert "Journal verified" in record and "Batch record" in record
    assert "Autologous anti-CD19 CAR-T" in record  # the record QA reads, not a summary
    events = len(list(read_events(cart_journal)))
    assert f"from the {events} events of batch {batch}" in record
    assert "JOURNAL DOES NOT VERIFY" in broken and "broken at event 500" in broken


def _moved(src: str, dst: str, command: str, why: str) -> dict[str, str]:
    """A transition event's data, as the batch journals it."""
    return {"from": src, "to": dst, "command": command, "who": "kim", "why": why}


def test_a_hold_below_the_procedure_a_pause_and_a_scan_awaited_need_attention(
    store: Store, cart_journal: Path, tmp_path: Path
) -> None:
    """A held unit showed "Running", ok, with "Request hold" offered; a batch waiting for the
    identity scan showed only its phase; a paused one was not flagged. Each now reads as the
    batch itself words it (``Batch.status``, as the station shows it) and needs attention."""
    unit, op = "unit:expansion_bioreactor", "operation:expansion_bioreactor/activation"
    why = "look at the bag"
    held = copy_batch(
        cart_journal,
        tmp_path / "u1.sqlite",
        "u1",
        upto=2000,
        extra=[
            (0.7 * DAY, "transition", unit, _moved("Running", "Holding", "hold", why)),
            (0.7 * DAY, "transition", op, _moved("Running", "Holding", "hold", why)),
            (0.7 * DAY, "transition", op, _moved("Holding", "Held", "finish", "")),
            (0.7 * DAY, "transition", unit, _moved("Holding", "Held", "finish", "")),
        ],
    )
    procedure = "procedure:car-t-autologous-lv"
    paused = copy_batch(
        cart_journal,
        tmp_path / "p1.sqlite",
        "p1",
        upto=2000,
        extra=[
            (
                0.7 * DAY,
                "transition",
                procedure,
                _moved("Running", "Pausing", "pause", "shift change"),
            ),
            (
                0.7 * DAY,
                "transition",
                procedure,
                _moved("Pausing", "Paused", "finish", ""),
            ),
        ],
    )
    scan = copy_batch(cart_journal, tmp_path / "i1.sqlite", "i1", upto=3240)  # identity asked
    running = copy_batch(cart_journal, tmp_path / "r1.sqlite", "r1", upto=2000)
    for name, journal in (("u1", held), ("p1", paused), ("i1", scan), ("r1", running)):
        store.ingest(messages_of(journal, "site-a", "cleanroom-1", name))

    def steps(base: str) -> dict[str, Any]:
        person = Person(base)
        person.sign_in()
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        hold = urllib.request.Request(
            f"{base}/batch/site-a/u1/hold", data=b"reason=check", method="POST"
        )
        hold.add_header("Authorization", f"Basic {token}")
        try:
            urllib.request.urlopen(hold, timeout=30)
            refused: tuple[int, str] = (200, "")
        except urllib.error.HTTPError as exc:
            refused = (exc.code, exc.read().decode())
        return {
            "api": json.loads(person.get("/api/batches")[2]),
            "overview": person.get("/")[2],
            "held only": person.get("/?state=held")[2],
            "u1": person.get("/batch/site-a/u1")[2],
            "i1": person.get("/batch/site-a/i1")[2],
            "p1": person.get("/batch/site-a/p1")[2],
            "hold u1": refused,
        }

    seen = served(store, users_file(tmp_path), steps)
    api = {r["batch"]: r for r in seen["api"]}
    assert api["u1"]["state"] == "Running (unit:expansion_bioreactor Held)"
    assert api["u1"]["procedure_state"] == "Running"
    assert api["u1"]["attention"] == [
        "Running (unit:expansion_bioreactor Held): unit:expansion_bioreactor: look at the bag"
    ]
    assert api["i1"]["state"] == "Running (waiting for the identity scan)"
    assert api["i1"]["attention"] == [
        "Running (waiting for the identity scan): a person at the site must scan it"
    ]
    assert api["p1"]["state"] == "Paused"
    assert api["p1"]["attention"] == ["Paused: shift change"]
    assert api["r1"]["state"] == "Running" and api["r1"]["attention"] == []
    assert "unit:expansion_bioreactor Held" in row_of(seen["overview"], "u1")
    assert "a person at the site must scan it" in row_of(seen["overview"], "i1")
    assert "data-batch='u1'" in seen["held only"] and "data-batch='r1'" not in seen["held only"]
    # No hold offered over a held unit, and none sent if asked for (409, audited).
    assert "Request hold" not in seen["u1"]
    assert (
        "The batch is Running (unit:expansion_bioreactor Held): there is nothing to hold."
        in seen["u1"]
    )
    status, text = seen["hold u1"]
    assert status == 409 and "is Running (unit:expansion_bioreactor Held)" in text, text
    # A batch waiting for a scan, or paused, can still be held from here.
    assert "Request hold" in seen["i1"] and "Request hold" in seen["p1"]
    assert "<b id='state'>Running (waiting for the identity scan)</b>" in seen["i1"]


def test_alarm_counts_are_every_alarm_raised_and_those_not_acknowledged(
    store: Store, cart_journal: Path, tmp_path: Path
) -> None:
    """129 alarms raised showed as "20 alarm(s)" (the message lists the latest 20), and the
    count never went down as they were acknowledged."""
    alarms = [
        (0.7 * DAY + i, "alarm", "bioreactor", {"alarm": "t", "message": f"temperature {i}"})
        for i in range(129)
    ]
    journal = copy_batch(cart_journal, tmp_path / "a1.sqlite", "a1", upto=2000, extra=alarms)
    store.ingest(messages_of(journal, "site-a", "cleanroom-1", "a1"))
    first = [e.seq for e in read_events(journal) if e.kind == "alarm"]
    row = {r["batch"]: r for r in overview_rows(store)}["a1"]
    assert row["attention"] == [
        "129 alarm(s) not acknowledged of 129 raised, last: temperature 128"
    ]
    acks = [
        (0.8 * DAY, "alarm_ack", "bioreactor", {"alarm_seq": seq, "user": "sam", "comment": "ok"})
        for seq in first[:100]
    ]
    acked = copy_batch(
        cart_journal, tmp_path / "a2.sqlite", "a1", upto=2000, extra=[*alarms, *acks]
    )
    store.ingest(messages_of(acked, "site-a", "cleanroom-1", "a1")[-1:])  # its newer state
    row = {r["batch"]: r for r in overview_rows(store)}["a1"]
    assert row["attention"] == ["29 alarm(s) not acknowledged of 129 raised, last: temperature 128"]
    assert (row["alarms_raised"], row["alarms_unacknowledged"]) == (129, 29)
    acks = [
        (0.8 * DAY, "alarm_ack", "bioreactor", {"alarm_seq": seq, "user": "sam", "comment": "ok"})
        for seq in first
    ]
    acked = copy_batch(
        cart_journal, tmp_path / "a3.sqlite", "a1", upto=2000, extra=[*alarms, *acks]
    )
    store.ingest(messages_of(acked, "site-a", "cleanroom-1", "a1")[-1:])
    row = {r["batch"]: r for r in overview_rows(store)}["a1"]
    assert row["attention"] == [] and row["alarms_unacknowledged"] == 0
