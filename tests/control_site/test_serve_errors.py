"""`control-site serve` and `add-user`: what cannot start says what, where and what to do.

Before, each serve failure printed "dashboard on ..." first and then a bare errno or a
Python exception ("ValueError: not enough values to unpack"), exit 1; a second control site
started on a taken address connected to the broker as `control` first, and the broker
closed the running one's connection. `add-user` for an existing name appended a second
line (the last won: a silent password reset) and took a 1-character password.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.control_site.web import Users

cli = CliRunner()
BROKER = "mqtt://control:secret@127.0.0.1:1"  # nothing listens: reached only if all else is fine


def serve(*args: str) -> tuple[int, str]:
    result = cli.invoke(app, ["control-site", "serve", "--broker", BROKER, *args])
    return result.exit_code, result.output


@pytest.fixture
def taken_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_an_address_in_use_is_refused_before_the_broker_is_reached(
    tmp_path: Path, taken_port: int
) -> None:
    code, out = serve("--http", f"127.0.0.1:{taken_port}", "--db", str(tmp_path / "cs.sqlite"))
    assert code == 2, out
    assert f"--http 127.0.0.1:{taken_port}: cannot listen there" in out
    assert "another control site?" in out and "nothing started" in out
    assert "dashboard on" not in out and "broker" not in out.split("error:")[1]


@pytest.mark.parametrize(
    ("users", "said"),
    [
        ("garbage\n", "users:1: not a user line (NAME:scrypt:SALT:HASH)"),
        ("alice:scrypt:zz:00\n", "users:1: not a user line"),
        (f"{Users.line('alice', 'long-enough')}\n# c\n{Users.line('alice', 'another-one')}\n",
         "users:3: user alice is in the file twice"),
    ],
)  # fmt: skip
def test_a_users_file_that_cannot_be_read_names_its_line(
    tmp_path: Path, taken_port: int, users: str, said: str
) -> None:
    path = tmp_path / "users"
    path.write_text(users)
    code, out = serve("--users", str(path), "--db", str(tmp_path / "cs.sqlite"))
    assert code == 2, out
    assert said in out and "nothing started" in out and "Traceback" not in out


def test_a_store_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    code, out = serve("--db", str(tmp_path / "no" / "such" / "cs.sqlite"))
    assert code == 2 and "cannot open the store" in out and "no/such/cs.sqlite" in out, out
    bad = tmp_path / "notes.sqlite"
    bad.write_text("shift handover notes, not a store")
    code, out = serve("--db", str(bad))
    assert code == 2 and "file is not a database" in out, out
    assert bad.read_text() == "shift handover notes, not a store"


def test_a_broker_that_never_answers_is_named_once_the_wait_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("twin.control_site.serve.CONNECT_S", 1.0)  # 10 s in service
    code, out = serve("--db", str(tmp_path / "cs.sqlite"), "--http", "127.0.0.1:0")
    assert code == 2, out
    assert "--broker 127.0.0.1:1: not connected within 1 s" in out and "Connection refused" in out
    assert "secret" not in out


def add_user(users: Path, name: str, password: str, *more: str) -> tuple[int, str]:
    pw = users.with_name(f"{name}.pw")
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    args = ["control-site", "add-user", str(users), name, "--password-file", str(pw), *more]
    result = cli.invoke(app, args)
    return result.exit_code, result.output


def test_add_user_refuses_an_existing_name_unless_replacing(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert add_user(users, "alice", "first-password")[0] == 0
    before = users.read_text()
    code, out = add_user(users, "alice", "second-password")
    assert code == 2 and "alice is already a user" in out and "--replace" in out, out
    assert users.read_text() == before
    assert add_user(users, "bob", "bobs-password")[0] == 0
    code, out = add_user(users, "alice", "second-password", "--replace")
    assert code == 0 and "alice has a new password" in out, out
    known = Users(users)
    assert known.verify("alice", "second-password") and not known.verify("alice", "first-password")
    assert known.verify("bob", "bobs-password") and len(known) == 2
    assert (users.stat().st_mode & 0o777) == 0o600
    code, out = add_user(users, "carol", "carols-password", "--replace")
    assert code == 2 and "carol is not a user" in out, out


def test_add_user_refuses_a_short_password(tmp_path: Path) -> None:
    users = tmp_path / "users"
    code, out = add_user(users, "alice", "short")
    assert code == 2 and "at least 8 characters" in out, out
    assert not users.exists()
