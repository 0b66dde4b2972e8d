"""Journals from the command line: a batch writes only where the user pointed, and every
reader of a journal says in one line what is wrong with a file that is not one (issue 18)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from twin.cli import app

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
SIM = str(ROOT / "benches" / "sim.yaml")
LAB = str(ROOT / "benches" / "example-lab.yaml")
cli = CliRunner()


def text_file(tmp: Path) -> Path:
    path = tmp / "notes.sqlite"
    path.write_text("shift handover notes\n")
    return path


def one_byte_file(tmp: Path) -> Path:
    """Too short for SQLite's header: SQLite itself takes it for an empty database."""
    path = tmp / "x"
    path.write_bytes(b"x")
    return path


def sqlite_header_cut_short(tmp: Path) -> Path:
    path = tmp / "cut.sqlite"
    path.write_bytes(b"SQLite format")
    return path


def empty_file(tmp: Path) -> Path:
    path = tmp / "empty.sqlite"
    path.write_bytes(b"")
    return path


def foreign_sqlite(tmp: Path) -> Path:
    path = tmp / "foreign.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stock (item TEXT)")
    return path


def non_json_events(tmp: Path) -> Path:
    path = tmp / "nonjson.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE events (seq INTEGER, batch_time REAL, wall_time TEXT, kind TEXT, "
            "source TEXT, data TEXT, prev_hash TEXT, hash TEXT)"
        )
        db.execute("INSERT INTO events VALUES (1, 0, '', 'x', 'y', '{not json', '', '')")
    return path


def directory(tmp: Path) -> Path:
    path = tmp / "adir"
    path.mkdir()
    return path


BAD_JOURNALS: list[Callable[[Path], Path]] = [
    text_file,
    empty_file,
    foreign_sqlite,
    non_json_events,
    directory,
]


@pytest.mark.parametrize("make", BAD_JOURNALS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "command",
    [
        ["verify"],
        ["report"],
        ["export", "--format", "json"],
        ["replay"],
        ["resume", "--operator", "kim", "--reason", "power back"],
    ],
    ids=lambda c: c[0],
)
def test_every_journal_reader_names_a_bad_file_in_one_line(
    tmp_path: Path, make: Callable[[Path], Path], command: list[str]
) -> None:
    path = make(tmp_path)
    result = cli.invoke(app, [command[0], str(path), *command[1:]], catch_exceptions=False)
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    said = result.output.lower()
    assert str(path) in result.output and ("error" in said or "broken" in said)


@pytest.mark.parametrize(
    "make",
    [text_file, one_byte_file, sqlite_header_cut_short, foreign_sqlite, directory],
    ids=lambda f: f.__name__,
)
def test_run_never_writes_its_journal_over_something_else(
    tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    result = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(path), "-q"])
    assert result.exit_code == 2, result.output
    assert "nothing started" in result.output
    assert (path.read_bytes() if path.is_file() else None) == before


def test_run_refuses_a_device_as_its_journal() -> None:
    result = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", "/dev/null", "-q"])
    assert result.exit_code == 2 and "not a regular file" in result.output


def test_a_new_batch_never_reuses_a_finished_batch_journal(tmp_path: Path) -> None:
    journal = tmp_path / "b.sqlite"
    first = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(journal), "-q"])
    assert first.exit_code == 0, first.output
    size = journal.stat().st_size
    again = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(journal), "-q"])
    assert again.exit_code == 2 and "already holds a batch" in again.output
    assert journal.stat().st_size == size
    assert cli.invoke(app, ["verify", str(journal)]).exit_code == 0  # untouched, intact


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--patient-id", "P-1"], "confirms the chain of identity"),  # no bag id
        (["--bag-id", "BAG-1"], "confirms the chain of identity"),
        (
            [
                "--patient-id",
                "P-1",
                "--bag-id",
                "BAG-1",
                "--simulated-operator",
                "2",
                "--bench",
                LAB,
            ],
            "has real equipment",
        ),
        (
            ["--patient-id", "P-1", "--bag-id", "BAG-1", "--simulated-operator", "-1"],
            "simulated-operator",
        ),
    ],
)
def test_a_product_batch_without_its_identity_or_a_simulated_person_at_real_equipment_never_starts(
    tmp_path: Path, args: list[str], said: str
) -> None:
    journal = tmp_path / "b.sqlite"
    recipe = str(ROOT / "recipes" / "car_t_autologous.yaml")
    result = cli.invoke(app, ["run", recipe, "--journal", str(journal), "-q", *args])
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert not journal.exists()


UNFIT_REASONS = [
    "  ",  # says nothing
    "line one\nline two",  # a forged second line in every record
    "look \x1b[31mred\x1b[0m",  # recolours every console that shows it
    "\u200b\u200b",  # reads blank
    "ok \u202eevil",  # a bidirectional override: reads other than it is
    "x" * 1001,
    "bad \ufffd\ufffd bytes",  # what a decoder left of bytes that were not text (a station
    # form posted in another encoding was signed as "���")
]


@pytest.mark.parametrize("reason", UNFIT_REASONS)
@pytest.mark.parametrize(
    "act",
    [
        ["command", "J", "hold", "--operator", "kim"],
        ["confirm-identity", "J", "--patient-id", "P-1", "--bag-id", "B-1", "--operator", "kim"],
        [
            *("scan-lot", "J", "--material", "vector", "--lot", "L-1"),
            *("--expiry", "2030-12-31", "--operator", "kim"),
        ],
        ["resume", "J", "--operator", "sam"],
        ["ack", "J", "7", "--operator", "sam"],
        ["qc", "J", "--result", "viability=90", "--operator", "qa"],
    ],
    ids=lambda act: act[0],
)
def test_an_unfit_reason_is_invalid_before_anyone_signs(
    tmp_path: Path, act: list[str], reason: str
) -> None:
    """Every signed act refuses an unfit reason or comment with exit 2 before it reads a
    journal or asks for a password (so nothing is signed, counted or written)."""
    journal = tmp_path / "absent.sqlite"  # never opened: the words are checked first
    option = "--comment" if act[0] == "ack" else "--reason"
    args = [str(journal) if a == "J" else a for a in act]
    result = cli.invoke(app, [*args, option, reason])
    assert result.exit_code == 2, result.output
    assert "nothing was signed or written" in result.stderr
    assert not journal.exists()


@pytest.mark.parametrize(
    ("patient", "bag"),
    [
        ("  ", "B-1"),
        ("P-1", ""),
        (" P-1", "B-1"),
        ("P-1", "B-1\t"),
        ("P\x1b]0;x\x07", "B-1"),
        ("\u0420-1", "B-1"),  # a Cyrillic look-alike: typed, never scanned
        ("P-1", "B\uff0d1"),  # a full-width hyphen
    ],
)
def test_a_scanned_id_no_label_prints_is_invalid_before_anyone_signs(
    tmp_path: Path, patient: str, bag: str
) -> None:
    """A blank, padded or unprintable id is no scan: exit 2, nothing sent (a blank patient
    id once reached the batch as a mismatch and aborted it)."""
    args = ["confirm-identity", str(tmp_path / "absent.sqlite"), "--patient-id", patient]
    result = cli.invoke(app, [*args, "--bag-id", bag, "--operator", "kim", "--reason", "scan"])
    assert result.exit_code == 2, result.output
    assert "nothing sent" in result.stderr


@pytest.mark.parametrize(
    ("label", "why"),
    [
        (["--lot", "TA-2291"], "without its expiry"),  # every label prints one
        (["--lot", "TA-2291", "--expiry", " "], "without its expiry"),
        (["--lot", "TA-2291", "--expiry", "2030-02-30"], "is not a date"),
        (["--lot", "TA-2291", "--expiry", "2030-W01-1"], "is not a date"),  # read as 2029-12-31
        (["--lot", "TA-2291", "--expiry", "20301231"], "is not a date"),
        (["--lot", "TA-2291", "--expiry", "31/12/2030"], "is not a date"),
        (["--lot", "TA\x1b[31m-2291", "--expiry", "2030-12-31"], "printable"),
        (["--gs1", "(10)X(10)TA-2291"], "(10) twice"),  # the last lot must not win
        (["--gs1", "(17)301231(17)200131(10)TA-2291"], "(17) twice"),
        (["--gs1", "]d21730123110X\x1d10TA-2291"], "(10) twice"),  # as a scanner sends it
        (["--gs1", "(01)09506000134352(17)301231(10)TA-2291(01)09506000134352"], "(01) twice"),
        (["--gs1", "(17)300231(10)TA-2291"], "not a GS1 label"),  # no 31 February
        (["--gs1", "(17)301231(10)TA 2291\x1b"], "not a GS1 label"),
    ],
)
def test_a_container_scan_no_label_can_give_is_invalid_before_anyone_signs(
    tmp_path: Path, label: list[str], why: str
) -> None:
    """A lot keyed in without its expiry, a date that is not YYYY-MM-DD, a label that gives
    its lot or expiry twice (which one?): exit 2, nothing sent, no password asked."""
    journal = tmp_path / "absent.sqlite"
    args = ["scan-lot", str(journal), "--material", "activator", *label]
    result = cli.invoke(app, [*args, "--operator", "kim", "--reason", "scan"])
    assert result.exit_code == 2, result.output
    assert why in result.stderr and "nothing sent" in result.stderr, result.stderr
    assert not journal.exists()


def test_an_unknown_level_is_invalid_before_anyone_signs(tmp_path: Path) -> None:
    args = ["command", str(tmp_path / "absent.sqlite"), "hold", "--level", "bogus"]
    result = cli.invoke(app, [*args, "--operator", "kim", "--reason", "check"])
    assert result.exit_code == 2, result.output
    assert "unknown level 'bogus'; levels: procedure, unit, operation, phase" in result.stderr


@pytest.mark.parametrize("user", ["kim\n", " kim", "kïm", "k" * 101, "../kim"])
def test_a_signer_id_no_site_user_can_hold_is_invalid_before_a_password(user: str) -> None:
    result = cli.invoke(
        app, ["site", "user", "disable", "bob", "--admin", user], input="pw-pw-pw\n"
    )
    assert result.exit_code == 2, result.output
    assert "is not a safe name" in result.stderr and "nothing was signed" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--operator", "eve\x1b[31m"],  # journalled, and the owner of every Ctrl-C
        ["--operator", "Dr Eve"],
        ["--patient-id", "P-1 ", "--bag-id", "B-1"],  # no scan could ever match it
        ["--patient-id", "P-1", "--bag-id", "\tB-1"],
        ["--patient-id", "P-\u0661", "--bag-id", "B-1"],  # an Arabic-Indic digit one
    ],
)
def test_run_takes_a_starter_and_ids_as_site_users_and_labels_have_them(
    tmp_path: Path, args: list[str]
) -> None:
    journal = tmp_path / "j.sqlite"
    result = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(journal), *args])
    assert result.exit_code == 2, result.output
    assert "nothing started" in result.stderr and not journal.exists()


def test_run_lot_is_refused_only_where_no_addition_would_dose_it(tmp_path: Path) -> None:
    """Every activator addition fixes its lot: another --lot is refused. With one more
    activator addition that fixes none, the --lot is that one's, and taken."""
    fixed = "{phase: add, material: activator, volume_ml: 2.0, lot: ACT-1}"
    text = (
        Path(SMOKE).read_text().replace("{phase: add, material: activator, volume_ml: 2.0}", fixed)
    )
    recipe = tmp_path / "fixed.yaml"
    recipe.write_text(text)
    args = ["run", str(recipe), "--bench", SIM, "--lot", "activator=OTHER", "-q"]
    result = cli.invoke(app, [*args, "--journal", str(tmp_path / "a.sqlite")])
    assert result.exit_code == 2 and "would never be dosed" in result.stderr, result.output
    both = text.replace(
        fixed, fixed + "\n          - {phase: add, material: activator, volume_ml: 1.0}"
    )
    recipe.write_text(both)
    result = cli.invoke(app, [*args, "--journal", str(tmp_path / "b.sqlite")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--lot", "activator=A-1", "--lot", "activator=B-2"], "--lot activator given twice"),
        (["--param", "moi=5", "--param", "moi=50"], "moi given twice"),
        (["--param", "moi=50", "--param", "moi=5"], "moi given twice"),  # either order
    ],
)
def test_an_option_given_twice_with_two_values_is_refused_not_taken_by_its_order(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """Which of two values is meant is not for the order of the options to decide: before,
    the last lot was taken silently, and the last --param decided whether a recipe was
    valid at all."""
    journal = tmp_path / "j.sqlite"
    result = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(journal), *args])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split()) and not journal.exists()
    again = ["--lot", "activator=A-1", "--lot", "activator=A-1"]  # the same twice: one
    same = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(journal), *again, "-q"])
    assert same.exit_code == 0, same.output


def test_pace_on_a_bench_on_the_wall_clock_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """--pace is the twin's (how fast a waiting batch's clock follows the wall); real
    equipment keeps real time, so a --pace there is refused, as --simulated-operator is.
    Before, it was taken and ignored."""
    lab = tmp_path / "served.yaml"  # a development bench reached over the wire, as a real one
    lab.write_text(
        "bench: served\nclock: wall\ndevelopment: true\nequipment:\n"
        "  bioreactor:\n    type: bioreactor\n    driver: modbus_tcp_bioreactor\n"
        "    config: {host: 127.0.0.1, port: 9, unit: 1}\n"
        "  gas:\n    type: gas_dispenser\n    driver: alicat_gas\n"
        "    config: {port: /dev/null}\n"
    )
    journal = tmp_path / "j.sqlite"
    args = ["run", SMOKE, "--bench", str(lab), "--journal", str(journal), "--pace", "60", "-q"]
    result = cli.invoke(app, args)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "--pace 60: bench" in said and "wall's clock" in said and "nothing started" in said
    assert not journal.exists()


@pytest.fixture(scope="module")
def finished_journal(tmp_path_factory: pytest.TempPathFactory, _site_users: object) -> Path:
    """The journal of one ended smoke batch, copied by each test that could change it."""
    journal = tmp_path_factory.mktemp("finished") / "done.sqlite"
    result = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(journal), "-q"])
    assert result.exit_code == 0, result.output
    return journal


@pytest.mark.parametrize(
    ("command", "onto"),
    [
        (["report", "-o"], "itself"),
        (["report", "-o"], "another"),
        (["export", "--format", "csv", "-o"], "itself"),
        (["export", "--format", "json", "-o"], "another"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else v,
)
def test_a_report_or_export_is_never_written_over_a_journal(
    tmp_path: Path, finished_journal: Path, command: list[str], onto: str
) -> None:
    journal = tmp_path / "b.sqlite"
    other = tmp_path / "other.sqlite"
    journal.write_bytes(finished_journal.read_bytes())
    other.write_bytes(finished_journal.read_bytes())
    target = journal if onto == "itself" else other
    before = {p: p.read_bytes() for p in (journal, other)}
    result = cli.invoke(app, [command[0], str(journal), *command[1:], str(target)])
    assert result.exit_code == 2, result.output
    assert "is an SQLite database" in result.output and "nothing written" in result.output
    assert {p: p.read_bytes() for p in (journal, other)} == before
    assert cli.invoke(app, ["verify", str(target)]).exit_code == 0


@pytest.mark.parametrize(
    "command",
    [["report", "-o"], ["export", "--format", "csv", "-o"]],
    ids=lambda v: v[0],
)
def test_a_report_or_export_under_a_file_is_invalid_input(
    tmp_path: Path, finished_journal: Path, command: list[str]
) -> None:
    """An output path through a file (notes.sqlite/r.html) cannot be written: exit 2 naming
    the file, nothing written, as `run --journal` says. Before, exit 1 'File exists'."""
    journal = tmp_path / "b.sqlite"
    journal.write_bytes(finished_journal.read_bytes())
    notes = text_file(tmp_path)
    result = cli.invoke(app, [command[0], str(journal), *command[1:], str(notes / "out" / "r")])
    assert result.exit_code == 2, result.output
    assert "is a file, not a folder; nothing written" in result.output
    assert notes.read_text() == "shift handover notes\n"


def test_a_journal_named_as_the_users_file_is_refused_and_left_unchanged(
    tmp_path: Path, finished_journal: Path, site: Any
) -> None:
    journal = tmp_path / "b.sqlite"
    journal.write_bytes(finished_journal.read_bytes())
    before = journal.read_bytes()
    listed = cli.invoke(app, ["site", "user", "list", "--users", str(journal)])
    assert listed.exit_code == 4, listed.output
    assert "not a users file (tables: events)" in listed.output
    added = cli.invoke(
        app,
        [
            *("site", "user", "add", "bob", "--name", "Bob", "--role", "operator"),
            *("--users", str(journal), "--admin", "root"),
            *("--admin-password-file", str(site.password_file("root"))),
            *("--password-file", str(site.password_file("kim"))),
        ],
    )
    assert added.exit_code == 4, added.output
    new = tmp_path / "new.sqlite"
    started = cli.invoke(
        app, ["run", SMOKE, "--bench", SIM, "--journal", str(new), "--users", str(journal), "-q"]
    )
    assert started.exit_code == 2 and "nothing started" in started.output, started.output
    assert not new.exists()
    assert journal.read_bytes() == before
    with sqlite3.connect(journal) as db:
        assert [t for (t,) in db.execute("SELECT name FROM sqlite_master")] == ["events"]


@pytest.fixture
def locked_users(
    tmp_path: Path, site: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[sqlite3.Connection]:
    """A copy of the site's users file that another process holds locked for writing (as
    an administrator's open ``sqlite3`` session would): every sign-in must wait, then fail."""
    import shutil

    from twin.access import users as users_module

    copy = tmp_path / "users.sqlite"
    shutil.copy(site.users, copy)
    monkeypatch.setenv(users_module.ENV_USERS, str(copy))
    monkeypatch.setattr(users_module, "BUSY_TIMEOUT_S", 0.05)
    holder = sqlite3.connect(copy, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE users SET failures = failures")
    yield holder
    holder.execute("ROLLBACK")
    holder.close()


def test_a_users_file_locked_by_another_process_refuses_in_one_line(
    tmp_path: Path, finished_journal: Path, site: Any, locked_users: sqlite3.Connection
) -> None:
    journal = tmp_path / "b.sqlite"
    journal.write_bytes(finished_journal.read_bytes())
    before = journal.read_bytes()
    reviewed = cli.invoke(
        app, ["review", str(journal), "--comment", "record reviewed", *site.signed("quinn")]
    )
    assert reviewed.exit_code == 4, reviewed.output
    assert "cannot be used now" in reviewed.output and "try again" in reviewed.output
    assert journal.read_bytes() == before
    new = tmp_path / "new.sqlite"
    started = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(new), "-q"])
    assert started.exit_code == 4 and "nothing started" in started.output, started.output
    assert not new.exists()


def test_a_running_batch_answers_a_command_while_its_users_file_is_locked(
    site: Any, locked_users: sqlite3.Connection
) -> None:
    from twin.access.users import UserStore, users_path
    from twin.engine.inbox import _answer

    class Target:  # the batch's side: nothing may be journalled for a busy users file
        status = "Running"
        journal = None

    store = UserStore.open(users_path())
    try:
        request = {"command": "hold", "operator": "kim", "reason": "bag check"}
        reply = _answer(Target(), {**request, "password": "kim-pass-0001"}, store)  # type: ignore[arg-type]
    finally:
        store.close()
    assert reply["status"] == "refused" and "cannot be used now" in reply["message"]


async def test_a_running_batch_waits_on_a_locked_users_file_only_briefly(
    tmp_path: Path, site: Any
) -> None:
    """A command reaches the batch while another process holds the users file: the batch
    checks the signature on its own loop (its control modules and the twin's devices stand
    still meanwhile), so it waits only briefly (BATCH_BUSY_TIMEOUT_S) before refusing, not
    the 10 s a command line may wait. Before, a locked file stopped the batch for 10 s."""
    import shutil
    import time

    from twin.access.users import BATCH_BUSY_TIMEOUT_S, UserStore
    from twin.engine.inbox import send_command, serve_commands

    class Target:  # the batch's side: a busy users file refuses before anything is done
        status = "Running"
        journal = None

        async def between_scans(self) -> None:
            """No control modules here: always between scans."""

    copy = tmp_path / "users.sqlite"
    shutil.copy(site.users, copy)
    store = UserStore.open(copy)
    journal = tmp_path / "j.sqlite"
    server = await serve_commands(Target(), journal, store)  # type: ignore[arg-type]
    holder = sqlite3.connect(copy, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        began = time.monotonic()
        reply = await send_command(
            journal, "hold", operator="kim", password="kim-pass-0001", reason="bag check"
        )
        waited = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        server.close()
        await server.wait_closed()
        store.close()
    assert reply["status"] == "refused" and "cannot be used now" in reply["message"]
    assert waited < 20 * BATCH_BUSY_TIMEOUT_S  # not the command line's 10 s


@pytest.mark.parametrize("below", ["j.sqlite", "a/b/j.sqlite"])
def test_run_refuses_a_journal_under_a_file_before_anything_starts(
    tmp_path: Path, below: str
) -> None:
    notes = text_file(tmp_path)
    before = notes.read_bytes()
    target = notes / below
    result = cli.invoke(app, ["run", SMOKE, "--bench", SIM, "--journal", str(target), "-q"])
    assert result.exit_code == 2, result.output
    assert "is a file, not a folder; nothing started" in result.output
    assert notes.read_bytes() == before


@pytest.mark.parametrize(
    "written", ["\ufeffquinn-pass-0001\n", "quinn-pass-0001\x00\n"], ids=["bom", "nul"]
)
def test_a_password_file_with_a_bom_or_a_nul_signs_nothing_and_counts_nothing(
    tmp_path: Path, finished_journal: Path, site: Any, written: str
) -> None:
    from twin.access.users import UserStore

    journal = tmp_path / "b.sqlite"
    journal.write_bytes(finished_journal.read_bytes())
    before = journal.read_bytes()
    password = tmp_path / "quinn.pw"
    password.write_text(written, encoding="utf-8")
    password.chmod(0o600)
    store = UserStore.open(site.users)
    audited, quinn = len(store.audit()), store.get("quinn")
    store.close()
    result = cli.invoke(
        app,
        [
            *("review", str(journal), "--comment", "record reviewed"),
            *("--operator", "quinn", "--password-file", str(password)),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "control or invisible character" in result.output
    assert journal.read_bytes() == before
    store = UserStore.open(site.users)
    assert len(store.audit()) == audited and store.get("quinn") == quinn  # nothing counted
    store.close()
