"""`poc-twin site keygen`, `verify --public-key/--anchor` and `site anchor` as a user runs them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from twin.cli import app
from twin.journal import Journal
from twin.signing import load_site_key

runner = CliRunner()


def make_signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    keys = tmp_path / "keys"
    result = runner.invoke(app, ["site", "keygen", "lyon-huc", "--dir", str(keys)])
    assert result.exit_code == 0, result.output
    assert "POC_TWIN_SITE_KEY" in result.output
    path = tmp_path / "j.sqlite"
    j = Journal(path, lambda: 0.0, signer=load_site_key(keys / "lyon-huc.key"), checkpoint_every=4)
    for i in range(10):
        j.append("setpoint", "bioreactor", {"parameter": "x", "value": i})
    j.append("batch_ended", "batch", {"state": "Complete"})
    j.close()
    return path, keys / "lyon-huc.key", keys / "lyon-huc.pub"


def test_verify_with_public_key_and_anchors(tmp_path: Path) -> None:
    path, _, public = make_signed(tmp_path)
    result = runner.invoke(app, ["verify", str(path), "--public-key", str(public)])
    assert result.exit_code == 0, result.output
    assert "checkpoints verified" in result.output and "does not detect" in result.output
    anchors = runner.invoke(app, ["site", "anchor", str(path)])
    assert anchors.exit_code == 0
    records = [json.loads(line) for line in anchors.output.splitlines()]
    assert records and all(r["site"] == "lyon-huc" for r in records)
    (tmp_path / "a.jsonl").write_text(anchors.output)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE seq > 6")  # cut the tail, chain stays whole
    db.commit()
    db.close()
    result = runner.invoke(
        app,
        ["verify", str(path), "--public-key", str(public), "--anchor", str(tmp_path / "a.jsonl")],
    )
    assert result.exit_code == 1 and "truncated" in result.output


def test_verify_refuses_a_rewritten_head(tmp_path: Path) -> None:
    path, _, public = make_signed(tmp_path)
    db = sqlite3.connect(path)
    # Forge a checkpoint's head (the chain is then broken too): verify exits 1 naming the event.
    db.execute("UPDATE events SET data=replace(data, '\"signed_seq\":4', '\"signed_seq\":3')")
    db.commit()
    db.close()
    result = runner.invoke(app, ["verify", str(path), "--public-key", str(public)])
    assert result.exit_code == 1 and "event 5" in result.output


def test_unsigned_journal_says_what_is_not_covered(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path, lambda: 0.0, signer=None)
    j.append("setpoint", "bioreactor", {"parameter": "x", "value": 1})
    j.append("batch_ended", "batch", {"state": "Complete"})
    j.close()
    result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 0
    assert "signatures: none" in result.output and "rewrite of the whole chain" in result.output


def test_a_journal_whose_batch_never_ended_is_incomplete(tmp_path: Path) -> None:
    """No batch_ended and no batch process writing it: interrupted or cut short, never
    'intact' (a running batch's journal verifies: see test_people_in_the_loop)."""
    path = tmp_path / "j.sqlite"
    j = Journal(path, lambda: 0.0, signer=None)
    for i in range(3):
        j.append("setpoint", "bioreactor", {"parameter": "x", "value": i})
    j.close()
    result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 1
    assert "INCOMPLETE after event 3: the batch did not end" in result.stderr
    assert "poc-twin resume" in result.stderr


def test_a_listener_on_the_batch_socket_does_not_make_a_cut_journal_running(
    tmp_path: Path,
) -> None:
    """Abstract sockets have no permissions: a process that binds a journal's command socket
    without writing the journal (here: this test) must not turn INCOMPLETE into intact."""
    import socket

    from twin.engine.inbox import command_address

    path = tmp_path / "j.sqlite"
    j = Journal(path, lambda: 0.0, signer=None)
    for i in range(3):
        j.append("setpoint", "bioreactor", {"parameter": "x", "value": i})
    j.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as impostor:
        impostor.bind(command_address(path))
        impostor.listen()
        result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 1
    assert "INCOMPLETE after event 3" in result.stderr
