"""The operator station over real HTTP on loopback: sign-in, forms, signed acts on an ended
batch, and what reaches the page. The site's users file and journals are real files."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from bedside import scanned_smoke
from site_users import PEOPLE, Site, make_site
from station_harness import Person, RunningStation, ended_batch, events_of, wait_for_event

from twin.access.esign import check_signatures
from twin.access.roles import Act
from twin.access.users import UserStore
from twin.journal import read_events, verify

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("poc-twin"))


def kinds(path: Path) -> list[str]:
    return [e.kind for e in read_events(path)]


def run(runs: Path, users: Path, scenario: Callable[[RunningStation], Awaitable[None]]) -> None:
    async def main() -> None:
        async with RunningStation(runs, users) as station:
            await scenario(station)

    asyncio.run(main())  # a real-time loop: the station serves real sockets


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    ended_batch(folder / "b1.sqlite")
    return folder


async def signed_in(station: RunningStation, user: str) -> Person:
    person = station.person()
    status, where, text = await person.sign_in(user, PEOPLE[user][2])
    assert (status, where) == (200, "/"), text
    return person


def test_every_page_and_act_needs_a_signed_in_user(runs: Path, site: Site) -> None:
    journal = runs / "b1.sqlite"
    before = kinds(journal)

    async def scenario(station: RunningStation) -> None:
        stranger = station.person()
        for path in ("/", "/batch/b1", "/batch/b1/record", "/batch/nope"):
            status, where, text = await stranger.get(path)
            assert (status, where) == (200, "/login"), path
            assert "Sign in" in text and "b1" not in text.split("<main>")[1].split("next")[0]
        for path in ("/live", "/batch/b1/live"):
            assert (await stranger.get(path))[0] == 401, path
        form = {"command": "hold", "reason": "r", "password": PEOPLE["kim"][2], "alarm": "4"}
        for act in ("command", "identity", "ack", "qc", "review"):
            status, _, _ = await stranger.post(f"/batch/b1/{act}", form, csrf=False)
            assert status == 401, act
        assert (await stranger.post("/logout", {}, csrf=False))[0] == 401

    run(runs, site.users, scenario)
    assert kinds(journal) == before  # nothing reached the record


def test_sign_in_is_checked_and_sign_out_ends_the_session(runs: Path, site: Site) -> None:
    async def scenario(station: RunningStation) -> None:
        person = station.person()
        status, _, wrong = await person.sign_in("kim", "not-kims-password")
        status_unknown, _, unknown = await person.sign_in("nobody", "not-kims-password")
        assert status == status_unknown == 401
        assert "refused" in wrong and "refused" in unknown
        assert (
            "unknown user or wrong password" in wrong
            and "unknown user or wrong password" in unknown
        )
        status, where, page = await person.sign_in("kim", PEOPLE["kim"][2])
        assert (status, where) == (200, "/")
        assert 'href="/batch/b1"' in page and "Kim Lee" in page
        assert (await person.get("/live"))[0] == 200
        assert (await person.post("/logout", {}))[1] == "/login"
        assert (await person.get("/batch/b1"))[1] == "/login"
        assert (await person.get("/live"))[0] == 401

    run(runs, site.users, scenario)


def test_a_locked_account_cannot_sign_in(runs: Path, tmp_path: Path) -> None:
    own = make_site(tmp_path / "own-site")  # lockout must not reach the shared site's users

    async def scenario(station: RunningStation) -> None:
        person = station.person()
        for _ in range(5):
            assert (await person.sign_in("kim", "wrong-password-1"))[0] == 401
        status, _, text = await person.sign_in("kim", PEOPLE["kim"][2])
        assert status == 401 and "locked" in text

    run(runs, own.users, scenario)


def test_after_sign_in_only_a_path_of_this_station(runs: Path, site: Site) -> None:
    async def scenario(station: RunningStation) -> None:
        person = station.person()
        for target, lands in (("//evil.example/x", "/"), ("/batch/b1", "/batch/b1")):
            form = {"user": "kim", "password": PEOPLE["kim"][2], "next": target}
            status, where, _ = await person.post("/login", form, csrf=False)
            assert (status, where) == (200, lands)

    run(runs, site.users, scenario)


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "/ /evil.example"])
def test_a_next_path_with_a_control_character_cannot_leave_the_station(
    runs: Path, site: Site, target: str
) -> None:
    """``/<TAB>/evil.example`` passed the check and aiohttp, writing the Location header,
    dropped the TAB: the browser went to //evil.example after signing in (an open redirect
    a phishing link could use, ?next= in the sign-in form included)."""
    import aiohttp

    async def scenario(station: RunningStation) -> None:
        form = {"user": "kim", "password": PEOPLE["kim"][2], "next": target}
        async with aiohttp.ClientSession() as http:
            async with http.post(station.base + "/login", data=form, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/"
            async with http.get(station.base + "/login", params={"next": target}) as r:
                page = await r.text()
                assert 'name="next" value="/"' in page and "evil" not in page

    run(runs, site.users, scenario)


def test_a_page_refreshing_itself_does_not_keep_a_station_signed_in(
    runs: Path, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A station left alone with a batch page open: its 2 s refresh (/live) is not a
    person's use, so the 15 min idle sign-out comes (EU GMP Annex 11 §12). Before, every
    refresh restarted the idle timer: signed in for ever."""
    import twin.station.sessions as sessions

    now = [1000.0]
    monkeypatch.setattr(sessions, "wall_monotonic", lambda: now[0])

    async def scenario(station: RunningStation) -> None:
        person = await signed_in(station, "kim")
        assert (await person.get("/batch/b1"))[1] == "/batch/b1"
        for _ in range(8):  # 16 min of a page refreshing itself every 2 min
            now[0] += 120.0
            status = (await person.get("/batch/b1/live"))[0]
        assert status == 401
        assert (await person.get("/batch/b1"))[1] == "/login"
        person = await signed_in(station, "kim")
        now[0] += 14 * 60.0
        assert (await person.get("/batch/b1"))[1] == "/batch/b1"  # a person's use
        now[0] += 14 * 60.0
        assert (await person.get("/batch/b1/live"))[0] == 200

    run(runs, site.users, scenario)


@pytest.mark.parametrize("user", ["k\x1bim", "kim\x00", "k" * 5000, "kim\n"])
def test_a_sign_in_with_no_user_id_is_refused_unaudited_and_not_shown(
    runs: Path, site: Site, user: str
) -> None:
    """Anyone who reaches the form could write an escape sequence, a NUL or 5,000
    characters into the users file's audit and get them echoed on the page."""
    import sqlite3

    def audited() -> int:
        with sqlite3.connect(site.users) as db:
            return int(db.execute("SELECT count(*) FROM audit").fetchone()[0])

    before = audited()

    async def scenario(station: RunningStation) -> None:
        status, _, page = await station.person().sign_in(user, "whatever-password")
        assert status == 401 and "not a user id" in page
        assert "\x1b" not in page and "\x00" not in page and "k" * 100 not in page

    run(runs, site.users, scenario)
    assert audited() == before


def test_a_form_without_this_sessions_token_is_refused(runs: Path, site: Site) -> None:
    journal = runs / "b1.sqlite"
    before = kinds(journal)

    async def scenario(station: RunningStation) -> None:
        kim = await signed_in(station, "kim")
        form = {"alarm": "4", "reason": "seen", "password": PEOPLE["kim"][2]}
        assert (await kim.post("/batch/b1/ack", form, csrf=False))[0] == 403
        assert (await kim.post("/batch/b1/ack", {**form, "csrf": "forged"}, csrf=False))[0] == 403
        other = {"Origin": "http://192.0.2.7:8090"}
        assert (await kim.post("/batch/b1/ack", form, **other))[0] == 403
        sam = await signed_in(station, "sam")  # another person's token is not kim's
        assert (await kim.post("/batch/b1/ack", {**form, "csrf": sam.csrf}, csrf=False))[0] == 403

    run(runs, site.users, scenario)
    assert kinds(journal) == before


def test_alarms_are_acknowledged_with_a_signature_by_who_may(runs: Path, site: Site) -> None:
    journal = runs / "b1.sqlite"

    async def scenario(station: RunningStation) -> None:
        kim = await signed_in(station, "kim")
        _, _, page = await kim.get("/batch/b1")
        assert 'data-alarm="4"' in page  # an operator may acknowledge the minor alarm ...
        assert 'data-alarm="5"' not in page  # ... and is not offered the critical one
        form = {"alarm": "4", "reason": "DO recovered after the gas line was reseated"}
        _, where, page = await kim.post("/batch/b1/ack", {**form, "password": "wrong-pass-01"})
        assert where == "/batch/b1" and "unknown user or wrong password" in page
        _, _, page = await kim.post("/batch/b1/ack", {**form, "password": PEOPLE["kim"][2]})
        assert "alarm 4 acknowledged by Kim Lee" in page
        assert "Kim" in page and "DO recovered after the gas line was reseated" in page
        _, _, page = await kim.post("/batch/b1/ack", {**form, "password": PEOPLE["kim"][2]})
        assert "acknowledged already" in page
        crit = {"alarm": "5", "reason": "seen", "password": PEOPLE["kim"][2]}
        _, _, page = await kim.post("/batch/b1/ack", crit)
        assert "may not acknowledge-critical" in page
        sam = await signed_in(station, "sam")
        crit = {"alarm": "5", "reason": "probe replaced", "password": PEOPLE["sam"][2]}
        _, _, page = await sam.post("/batch/b1/ack", crit)
        assert "alarm 5 acknowledged by Sam Roe" in page

    run(runs, site.users, scenario)
    events = list(read_events(journal))
    acks = [e for e in events if e.kind == "alarm_ack"]
    assert [(a.data["alarm_seq"], a.data["user"]) for a in acks] == [(4, "kim"), (5, "sam")]
    refusals = [e.data for e in events if e.kind == "access_refused"]
    assert [r["user"] for r in refusals] == ["kim", "kim"]
    assert verify(journal).ok and check_signatures(events).ok


def test_qa_enters_qc_results_and_approves_the_record(runs: Path, site: Site) -> None:
    journal = runs / "b1.sqlite"

    async def scenario(station: RunningStation) -> None:
        kim = await signed_in(station, "kim")
        _, _, page = await kim.get("/batch/b1")
        assert "/batch/b1/review" not in page and "/batch/b1/qc" not in page
        form = {"comment": "looks fine", "approve": "1", "password": PEOPLE["kim"][2]}
        _, _, page = await kim.post("/batch/b1/review", form)
        assert "may not approve" in page
        quinn = await signed_in(station, "quinn")
        _, _, page = await quinn.get("/batch/b1")
        assert "/batch/b1/review" in page and "/batch/b1/record" in page
        qc = {"results": "cd3 = 92.5\ncar=oops", "reason": "QC lab", "password": PEOPLE["quinn"][2]}
        _, _, page = await quinn.post("/batch/b1/qc", qc)
        assert "car: &#x27;oops&#x27; is not a number" in page  # nothing entered: all or none
        qc["results"] = "cd3=92.5\ncar=35"
        for unfit in ({"reason": "QC\x1b[31m lab"}, {"lab_ref": "LAB-7\nforged line"}):
            _, _, page = await quinn.post("/batch/b1/qc", {**qc, **unfit})
            assert "QC results entered" not in page  # refused before anyone signs
        bad = {"comment": "fine\u202e", "password": PEOPLE["quinn"][2]}
        _, _, page = await quinn.post("/batch/b1/review", bad)
        assert "control or invisible character" in page
        _, _, page = await quinn.post("/batch/b1/qc", {**qc, "lab_ref": "LAB-7"})
        assert "QC results entered by Quinn Ash" in page and "CD3" in page
        _, _, record = await quinn.get("/batch/b1/record")
        assert "Batch record" in record or "batch record" in record
        review = {"comment": "record reviewed", "password": PEOPLE["quinn"][2]}
        _, _, page = await quinn.post("/batch/b1/review", review)
        assert "record reviewed by Quinn Ash" in page
        _, _, page = await quinn.post("/batch/b1/review", {**review, "approve": "1"})
        assert "record approved by Quinn Ash" in page

    run(runs, site.users, scenario)
    events = list(read_events(journal))
    assert [e.data["test"] for e in events if e.kind == "qc_result"] == ["cd3", "car"]
    signed = [e.data["meaning"] for e in events if e.kind == "record_signature"]
    assert signed == ["reviewed", "approved"]
    assert [e.data["user"] for e in events if e.kind == "access_refused"] == ["kim"]
    assert verify(journal).ok and check_signatures(events).ok


def test_what_people_and_batches_wrote_is_shown_as_text(tmp_path: Path, site: Site) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    ended_batch(runs / "b2.sqlite", message='<img src=x onerror="alert(1)">')
    (runs / "not a batch.sqlite").write_text("x")  # no safe name: never listed or opened

    async def scenario(station: RunningStation) -> None:
        sam = await signed_in(station, "sam")
        form = {"alarm": "5", "reason": "<script>alert(2)</script>", "password": PEOPLE["sam"][2]}
        _, _, page = await sam.post("/batch/b2/ack", form)
        assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
        assert "<script>alert(2)" not in page and "&lt;script&gt;alert(2)" in page
        _, _, overview = await sam.get("/")
        assert "not a batch" not in overview
        assert (await sam.get("/batch/..%2Fb2"))[0] == 404
        assert (await sam.get("/batch/nope"))[0] == 404
        _, _, page = await sam.post("/batch/b2/ack", {**form, "alarm": "abc"})
        assert "no such alarm" in page
        _, _, page = await sam.post("/batch/b2/ack", {**form, "reason": "  "})
        assert "reason: required; nothing was signed" in page

    run(runs, site.users, scenario)


def test_the_batch_page_shows_its_latest_forecast(runs: Path, site: Site) -> None:
    """`poc-twin forecast` keeps the batch's forecast beside its journal; the operator sees
    harvest day and P(release) with their intervals, and a newer forecast replaces it."""
    from twin.ensemble.forecast import save

    journal = runs / "b1.sqlite"
    record = {
        "made_at_day": 5.02,
        "samples_used": 3,
        "spec": "car-t-release-example",
        "harvest_day": {"p5": 6.12, "p50": 7.12, "p95": 9.12},
        "p_release": 0.87,
        "p_release_interval": [0.74, 0.94],
        "ready_by": 10.0,
        "p_ready": 0.81,
        "effective_batches": 30.0,
        "library_batches": 200,
    }

    async def scenario(station: RunningStation) -> None:
        kim = await signed_in(station, "kim")
        _, _, page = await kim.get("/batch/b1")
        assert "no forecast yet" in page
        save(journal, record)
        _, _, page = await kim.get("/batch/b1")
        assert "day 7.12 (90 %: 6.12–9.12)" in page
        assert "P(release, car-t-release-example)</th><td>87 % (90 %: 74 %–94 %)" in page
        assert "P(releasable by day 10)</th><td>81 %" in page
        assert "on day 5.02 from 3 sample(s), 30 effective of 200 twin batches" in page
        save(journal, {**record, "made_at_day": 6.02, "p_release": 0.5})
        _, _, page = await kim.get("/batch/b1")
        assert "on day 6.02" in page and "50 %" in page and "on day 5.02" not in page

    run(runs, site.users, scenario)


def test_the_station_scans_a_material_container_for_the_addition_waiting_on_it(
    tmp_path: Path, site: Site
) -> None:
    """A real batch waits to dose the activator until its container is scanned: the station
    says so, offers the scan to an operator (not to QA), refuses a wrong lot, a label with no
    expiry, a label it cannot read and a lot keyed in without its expiry, and the right label
    (as a scanner types it) doses that lot."""
    runs = tmp_path / "runs"
    runs.mkdir()
    recipe = scanned_smoke(tmp_path)
    journal = runs / "lots1.sqlite"
    proc = subprocess.Popen(
        [
            *(EXE, "run", str(recipe), "--bench", str(ROOT / "benches/sim.yaml"), "-q"),
            *("--journal", str(journal), "--operator", "eve", "--pace", "60"),
            *("--lot", "activator=TA-2291"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )

    async def scenario(station: RunningStation) -> None:
        quinn = await signed_in(station, "quinn")
        _, _, page = await quinn.get("/batch/lots1")
        assert "/batch/lots1/lot" not in page  # QA does not scan at the bedside
        kim = await signed_in(station, "kim")
        _, _, page = await kim.get("/batch/lots1")
        assert "waits for a scan of the activator container" in page
        assert '<option value="activator" selected>' in page
        form = {"material": "activator", "reason": "at the bedside", "password": PEOPLE["kim"][2]}
        keyed = {**form, "lot": "TA-0001", "expiry": "2030-12-31"}
        _, _, page = await kim.post("/batch/lots1/lot", keyed)
        assert "refused — lot TA-0001 scanned, the batch is to use lot TA-2291" in page
        _, _, page = await kim.post("/batch/lots1/lot", {**form, "gs1": "(10)TA-2291"})
        assert "refused — lot TA-2291 scanned without an expiry date" in page
        _, _, page = await kim.post("/batch/lots1/lot", {**form, "lot": "TA-2291"})
        assert "without its expiry" in page and "nothing was signed" in page
        _, _, page = await kim.post("/batch/lots1/lot", {**form, "gs1": "(10)TA-2291(17)301399"})
        assert "not a GS1 label" in page and "nothing was signed" in page
        label = "]d2010950600013435217301231" + "10TA-2291"
        _, _, page = await kim.post("/batch/lots1/lot", {**form, "gs1": label})
        assert "lot TA-2291 of activator verified" in page

    try:
        wait_for_event(journal, "lot_requested", proc)
        run(runs, site.users, scenario)
        wait_for_event(journal, "sample", proc)  # dosed, and the culture goes on
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    events = events_of(journal)
    scans = [e.data for e in events if e.kind == "lot_scan"]
    assert [(s["lot"], s["accepted"], s["operator"]) for s in scans] == [
        ("TA-0001", False, "kim"),
        ("TA-2291", False, "kim"),  # no expiry on the label
        ("TA-2291", True, "kim"),
    ]
    dose = next(
        e for e in events if e.kind == "setpoint" and e.data["parameter"] == "add_activator"
    )
    assert dose.data["lot"] == "TA-2291"
    assert verify(journal).ok and check_signatures(events).ok


def test_a_hold_below_the_procedure_is_restarted_at_its_own_level(
    tmp_path: Path, site: Site
) -> None:
    """A unit held (an operator's hold at unit level): the station offered only the
    procedure's Pause and Hold (and a supervisor's Stop and Abort), none of which lifts it.
    It offers Restart of the held unit at its level (a supervisor also Stop and Abort there,
    where the batch takes them), and that restart lifts the hold."""
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = runs / "unit1.sqlite"
    proc = subprocess.Popen(
        [
            *(
                EXE,
                "run",
                str(ROOT / "recipes/smoke.yaml"),
                "--bench",
                str(ROOT / "benches/sim.yaml"),
            ),
            *("-q", "--journal", str(journal), "--operator", "eve", "--pace", "60"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    unit = "unit:expansion_bioreactor"

    async def scenario(station: RunningStation) -> None:
        kim = await signed_in(station, "kim")
        _, _, page = await kim.get("/batch/unit1")
        assert f"Restart {unit}" not in page  # nothing held yet
        form = {"command": "hold", "level": "unit", "reason": "look at the bag"}
        _, _, page = await kim.post("/batch/unit1/command", {**form, "password": PEOPLE["kim"][2]})
        assert "hold" in page and "accepted" in page, page
        while "(unit:expansion_bioreactor Held)" not in page:
            await asyncio.sleep(0.1)
            _, _, page = await kim.get("/batch/unit1")
        assert f'data-what="Restart {unit}" data-command="restart" data-level="unit"' in page, page
        assert f"Stop {unit}" not in page and f"Abort {unit}" not in page  # an operator
        sam = await signed_in(station, "sam")
        _, _, page = await sam.get("/batch/unit1")
        for act in ("Restart", "Stop", "Abort"):
            assert f'data-what="{act} {unit}"' in page, act
        # The button's form: command and level as the page gives them.
        form = {"command": "restart", "level": "unit", "reason": "bag checked"}
        _, _, page = await kim.post("/batch/unit1/command", {**form, "password": PEOPLE["kim"][2]})
        assert "accepted" in page, page
        while '<span class="state" id="state">Running</span>' not in page:  # restarted
            await asyncio.sleep(0.1)
            _, _, page = await kim.get("/batch/unit1")
        assert f"Restart {unit}" not in page

    try:
        wait_for_event(journal, "setpoint", proc)  # running, its command socket open
        run(runs, site.users, scenario)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    events = events_of(journal)
    commands = [
        (e.data["command"], e.data["level"], e.data["accepted"])
        for e in events
        if e.kind == "command"
    ]
    assert commands == [("hold", "unit", True), ("restart", "unit", True)]
    moves = [e.data["to"] for e in events if e.kind == "transition" and e.source == unit]
    assert moves[-4:] == ["Holding", "Held", "Restarting", "Running"]


def test_an_act_on_an_ended_batch_names_its_final_state_not_the_servers_files(
    runs: Path, site: Site
) -> None:
    """A command or scan for an ended batch said "hold: no running batch is writing
    /srv/.../runs/b1.sqlite": the server's path, and not why. It says the batch has ended
    and in which state, as ``poc-twin command`` does."""
    before = kinds(runs / "b1.sqlite")

    async def scenario(station: RunningStation) -> None:
        sam = await signed_in(station, "sam")
        password = PEOPLE["sam"][2]
        acts = {
            "/batch/b1/command": {"command": "hold", "level": "procedure"},
            "/batch/b1/identity": {"patient_id": "P-1", "bag_id": "BAG-1"},
            "/batch/b1/lot": {"material": "activator", "lot": "TA-1", "expiry": "2030-12-31"},
        }
        said = []
        for path, form in acts.items():
            _, where, page = await sam.post(path, {**form, "reason": "r", "password": password})
            assert where == "/batch/b1"
            said += re.findall(r'class="flash-error" role="status">([^<]*)<', page)
            assert str(runs) not in page and "sqlite" not in page, page
        assert said == [
            "hold: batch b1 has ended Complete: no command can change it",
            "identity scan: batch b1 has ended Complete: no command can change it",
            "material scan: batch b1 has ended Complete: no command can change it",
        ]

    run(runs, site.users, scenario)
    assert kinds(runs / "b1.sqlite") == before


def test_a_session_of_a_user_locked_or_disabled_since_ends_at_its_next_request(
    runs: Path, tmp_path: Path
) -> None:
    """kim locked (five wrong passwords in signatures) and sam disabled by the administrator
    while signed in: their open sessions kept showing pages until the idle timeout. Each
    ends at its next request: back to sign-in, saying why; quinn's goes on."""
    own = make_site(tmp_path / "own-site")  # lockout must not reach the shared site's users

    async def scenario(station: RunningStation) -> None:
        kim, sam, quinn = [await signed_in(station, u) for u in ("kim", "sam", "quinn")]
        form = {"alarm": "4", "reason": "seen", "password": "wrong-password-1"}
        for _ in range(5):
            _, where, page = await kim.post("/batch/b1/ack", form)
        assert where == "/login" and "You were signed out: your account is locked" in page
        assert (await kim.get("/batch/b1"))[:2] == (200, "/login")
        admin = UserStore.open(own.users)
        admin.disable("sam", by=admin.sign("root", PEOPLE["root"][2], Act.MANAGE_USERS))
        admin.close()
        status, where, page = await sam.get("/batch/b1/live")
        assert status == 401 and "locked or disabled" in page
        status, where, page = await sam.get("/batch/b1")  # the refresh reloads the page
        assert (status, where) == (200, "/login") and "Batch b1" not in page
        assert "You were signed out: your account is locked or disabled" in page
        assert (await sam.get("/"))[:2] == (200, "/login")  # and stays ended
        assert (await quinn.get("/batch/b1"))[:2] == (200, "/batch/b1")

    run(runs, own.users, scenario)


def test_station_serve_on_port_0_names_the_port_it_bound(tmp_path: Path, site: Site) -> None:
    """`station serve --http 127.0.0.1:0` asks for a free port: the line it prints names the
    one bound, where a browser reaches the station. Before, it printed ':0'."""
    import sys
    import urllib.request

    runs = tmp_path / "runs"
    runs.mkdir()
    exe = str(Path(sys.executable).with_name("poc-twin"))
    argv = [exe, "station", "serve", "--http", "127.0.0.1:0", "--runs", str(runs)]
    proc = subprocess.Popen(
        [*argv, "--users", str(site.users)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match is not None and match.group(1) != "0", line
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/login", timeout=10) as page:
            assert page.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_station_serve_on_an_address_in_use_says_so_in_one_line(tmp_path: Path, site: Site) -> None:
    """Before: a raw errno, exit 1."""
    import socket

    from typer.testing import CliRunner

    from twin.cli import app

    runs = tmp_path / "runs"
    runs.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["station", "serve", "--http", f"127.0.0.1:{port}", "--runs", str(runs)]
        result = CliRunner().invoke(app, [*argv, "--users", str(site.users)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert f"--http 127.0.0.1:{port}: cannot listen there" in said and "in use" in said
    assert "another station?" in said and "nothing started" in said and "Errno" not in said


def test_the_batch_page_says_who_held_the_batch_and_why(tmp_path: Path) -> None:
    """The operator at the bag reads who held the batch and why on its page (before: only
    "Held", the reason in the record alone). Escaped, as everything people wrote."""
    from twin.access.roles import Role
    from twin.journal import Journal
    from twin.station.board import BatchBoard
    from twin.station.pages import batch_live

    clock = iter(float(t) for t in range(0, 10**6, 60))
    path = tmp_path / "h1.sqlite"
    j = Journal(path, lambda: next(clock), signer=None)
    j.append("batch_started", "batch", {"batch_id": "h1", "operator": "kim", "recipe": {}})
    j.append("transition", "procedure:p", {"from": "Idle", "to": "Running", "who": "kim"})
    hold = {"from": "Running", "to": "Holding", "who": "sam", "why": "bag <leak> check"}
    j.append("transition", "procedure:p", hold)
    j.append("transition", "procedure:p", {"from": "Holding", "to": "Held", "who": "engine"})
    j.close()
    board = BatchBoard(path)
    board.refresh()
    page = batch_live(board, True, frozenset({Role.OPERATOR}))
    assert 'id="held">Held by sam: bag &lt;leak&gt; check' in page
    j = Journal.reopen(path, lambda: next(clock))
    j.append("transition", "procedure:p", {"from": "Held", "to": "Restarting", "who": "sam"})
    j.append("transition", "procedure:p", {"from": "Restarting", "to": "Running"})
    j.close()
    board.refresh()
    assert 'id="held"' not in batch_live(board, True, frozenset({Role.OPERATOR}))
