"""Signed acts on an ended batch, and what `verify` says of signatures that were moved,
replayed or are missing. Real journals, the real command line, the site's users file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from site_users import Site
from typer.testing import CliRunner

from twin.access.esign import REQUIRED_FLAG
from twin.cli import app
from twin.journal import GENESIS, Journal, _canonical, event_hash, read_events
from twin.report.html import render_html
from twin.report.record import build_record

cli = CliRunner()


def ended_batch(path: Path) -> Path:
    """A finished batch that required signatures, with a critical and a minor alarm."""
    clock = iter(float(t) for t in range(0, 100000, 60))
    j = Journal(path, lambda: next(clock), signer=None)
    j.append("batch_started", "batch", {"batch_id": "B-1", "operator": "kim", REQUIRED_FLAG: True})
    j.append("alarm", "bioreactor", {"alarm": "temp", "kind": "limit", "reaction": "hold"})
    j.append("alarm", "bioreactor", {"alarm": "do", "kind": "limit", "reaction": "hold_phase"})
    j.append("batch_ended", "batch", {"state": "Complete"})
    j.close()
    return path


def kinds(path: Path) -> list[str]:
    return [e.kind for e in read_events(path)]


def test_alarms_are_acknowledged_by_who_may_and_only_once(tmp_path: Path, site: Site) -> None:
    journal = ended_batch(tmp_path / "b.sqlite")
    assert any("2 alarm(s) not acknowledged" in t for _, t in build_record(journal).exceptions)
    ack = ["ack", str(journal)]
    critical = cli.invoke(app, [*ack, "2", *site.signed("kim"), "--comment", "seen"])
    assert critical.exit_code == 4
    assert "role operator may not acknowledge-critical (allowed: supervisor)" in critical.output
    assert kinds(journal)[-1] == "access_refused"
    by_supervisor = cli.invoke(app, [*ack, "2", *site.signed("sam"), "--comment", "bag checked"])
    assert by_supervisor.exit_code == 0, by_supervisor.output
    minor = cli.invoke(app, [*ack, "3", *site.signed("kim"), "--comment", "DO recovered"])
    assert minor.exit_code == 0, minor.output
    again = cli.invoke(app, [*ack, "3", *site.signed("sam"), "--comment", "again"])
    assert again.exit_code == 4 and "acknowledged already" in again.output
    not_an_alarm = cli.invoke(app, [*ack, "1", *site.signed("sam"), "--comment", "x"])
    assert not_an_alarm.exit_code == 2
    no_comment = cli.invoke(app, [*ack, "3", *site.signed("sam"), "--comment", "  "])
    assert no_comment.exit_code == 2 and "--comment must say" in no_comment.output
    acks = [e for e in read_events(journal) if e.kind == "alarm_ack"]
    assert [(a.data["alarm_seq"], a.data["user"], a.data["critical"]) for a in acks] == [
        (2, "sam", True),
        (3, "kim", False),
    ]
    verified = cli.invoke(app, ["verify", str(journal)])
    assert verified.exit_code == 0, verified.output
    assert "e-signatures: 2 bound to the acts they sign" in verified.output
    record = build_record(journal)
    assert not any("not acknowledged" in t for _, t in record.exceptions)
    assert record.acknowledged[2][:2] == ("sam", "bag checked")
    page = render_html(record)
    assert "Sam Roe (sam), performed" in page and "DO recovered" in page
    assert "refused signature" in page  # kim's refused critical acknowledgement


def test_qa_reviews_and_approves_and_nobody_else_does(tmp_path: Path, site: Site) -> None:
    journal = ended_batch(tmp_path / "b.sqlite")
    for user in ("kim", "sam", "root", "eve"):
        refused = cli.invoke(app, ["review", str(journal), *site.signed(user), "--comment", "x"])
        assert refused.exit_code == 4, (user, refused.output)
    wrong = ["--operator", "quinn", "--password-file", str(site.password_file("quinn", "nope"))]
    assert cli.invoke(app, ["review", str(journal), *wrong, "--comment", "x"]).exit_code == 4
    reviewed = cli.invoke(app, ["review", str(journal), *site.signed("quinn"), "--comment", "ok"])
    assert reviewed.exit_code == 0 and "reviewed by Quinn Ash" in reviewed.output
    approved = cli.invoke(
        app, ["review", str(journal), *site.signed("quinn"), "--comment", "release", "--approve"]
    )
    assert approved.exit_code == 0 and "approved by Quinn Ash" in approved.output
    signatures = [e.data for e in read_events(journal) if e.kind == "signature"]
    assert [(s["user"], s["meaning"]) for s in signatures] == [
        ("quinn", "reviewed"),
        ("quinn", "approved"),
    ]
    refusals = [e.data["user"] for e in read_events(journal) if e.kind == "access_refused"]
    assert refusals == ["kim", "sam", "root", "eve", "quinn"]
    approvals = build_record(journal).approvals
    assert [(m, who, note) for m, who, note, _ in approvals] == [
        ("reviewed", "Quinn Ash (quinn)", "ok"),
        ("approved", "Quinn Ash (quinn)", "release"),
    ]


def held_not_ended(journal: Path, *, alarm: bool) -> Path:
    """A batch's journal that stops Held with no end (its alarm, event 3, if ``alarm``)."""
    clock = iter(float(t) for t in range(0, 100000, 60))
    j = Journal(journal, lambda: next(clock), signer=None)
    j.append("batch_started", "batch", {"batch_id": "B-1", "operator": "kim", REQUIRED_FLAG: True})
    j.append("transition", "procedure:p", {"command": "start", "from": "Idle", "to": "Running"})
    if alarm:
        j.append("alarm", "bioreactor", {"alarm": "do", "kind": "limit", "reaction": "hold"})
    j.append("transition", "procedure:p", {"command": "hold", "from": "Running", "to": "Held"})
    j.close()
    return journal


def test_nothing_is_signed_into_a_batch_whose_process_died(tmp_path: Path, site: Site) -> None:
    """A journal with no end and no process: the batch is to be resumed, not released. QA's
    approval, QC results and an alarm acknowledgement are refused (exit 4) before any
    password, naming the state it stopped in and `poc-twin resume`; nothing is written.
    Before, the approval was accepted and a resume then ran on after it."""
    journal = held_not_ended(tmp_path / "died.sqlite", alarm=True)
    before = kinds(journal)
    acts = [
        ["review", str(journal), *site.signed("quinn"), "--comment", "release", "--approve"],
        ["review", str(journal), *site.signed("quinn"), "--comment", "read"],
        ["qc", str(journal), "--result", "cd3=90", *site.signed("quinn"), "--reason", "lab"],
        ["ack", str(journal), "3", *site.signed("sam"), "--comment", "seen"],
    ]
    for act in acts:
        refused = cli.invoke(app, act)
        assert refused.exit_code == 4, (act[0], refused.output)
        said = " ".join(refused.output.split())
        assert "has not ended" in said and "last Held" in said, said
        assert f"poc-twin resume {journal}" in said
    assert kinds(journal) == before  # not even a refused signature: nobody was asked
    assert cli.invoke(app, ["verify", str(journal)]).exit_code == 1  # INCOMPLETE, as before


def test_qa_on_a_batch_still_running_is_told_it_runs_not_to_resume_it(
    tmp_path: Path, site: Site
) -> None:
    """QC results or a review given while the batch's process still runs: refused (exit 4)
    saying the batch is still running. Before, the refusal said its process had stopped
    and to bring it back with ``poc-twin resume``, which then refused: it runs."""
    from twin.engine.inbox import claim_command_address

    journal = held_not_ended(tmp_path / "running.sqlite", alarm=False)
    before = kinds(journal)
    process = claim_command_address(journal)  # as the batch's own process holds it
    try:
        for act in (
            ["review", str(journal), *site.signed("quinn"), "--comment", "read"],
            ["qc", str(journal), "--result", "cd3=90", *site.signed("quinn"), "--reason", "lab"],
        ):
            refused = cli.invoke(app, act)
            assert refused.exit_code == 4, (act[0], refused.output)
            said = " ".join(refused.output.split())
            assert "the batch is still running (Held)" in said, said
            assert "resume" not in said and "process stopped" not in said
    finally:
        process.close()
    assert kinds(journal) == before


def test_a_review_into_a_journal_another_program_holds_says_try_again(
    tmp_path: Path, site: Site
) -> None:
    """Another program holds the ended batch's journal (an auditor's sqlite3 in a write
    transaction): QA's review is refused saying so, nothing written. Before, it read that
    the batch had been stopped where it stood, equipment left as last set, and to resume
    it (an ended batch, no equipment)."""
    journal = ended_batch(tmp_path / "b.sqlite")
    before = kinds(journal)
    other = sqlite3.connect(journal, isolation_level=None, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    try:
        args = ["review", str(journal), *site.signed("quinn"), "--comment", "read"]
        refused = cli.invoke(app, args)
    finally:
        other.execute("ROLLBACK")
        other.close()
    said = " ".join(refused.output.split())
    assert refused.exit_code != 0, said
    assert "locked" in said and "try again" in said, said
    assert "stopped where it stood" not in said and "resume" not in said
    assert kinds(journal) == before


def test_a_password_file_others_can_read_is_refused(tmp_path: Path, site: Site) -> None:
    journal = ended_batch(tmp_path / "b.sqlite")
    loose = site.password_file("sam")
    loose.chmod(0o644)
    result = cli.invoke(
        app, ["ack", str(journal), "2", "--operator", "sam", "--password-file", str(loose),
              "--comment", "x"],
    )  # fmt: skip
    assert result.exit_code == 2 and "chmod 600" in result.output


def test_a_password_file_of_something_else_is_refused_before_anything_is_sent(
    tmp_path: Path, site: Site
) -> None:
    """A 70,000-character first line is no password (the wrong file): exit 2, nothing
    signed, counted or journalled (before, it went to the batch, over its line limit)."""
    journal = ended_batch(tmp_path / "b.sqlite")
    before = kinds(journal)
    huge = tmp_path / "huge.pw"
    huge.write_text("a" * 70_000 + "\n")
    huge.chmod(0o600)
    args = ["ack", str(journal), "2", "--operator", "sam", "--password-file", str(huge)]
    result = cli.invoke(app, [*args, "--comment", "x"])
    assert result.exit_code == 2 and "longer than 1024 characters" in result.output
    assert kinds(journal) == before


def rechain(path: Path, rows: list[tuple]) -> None:
    """Rewrite the journal as someone without the site key could: every hash recomputed."""
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events")
    prev = GENESIS
    for seq, (bt, wt, kind, source, data) in enumerate(rows, start=1):
        digest = event_hash(prev, seq, bt, wt, kind, source, data)
        db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
            (seq, bt, wt, kind, source, data, prev, digest),
        )
        prev = digest
    db.commit()
    db.close()


def rows(path: Path) -> list[tuple]:
    return [
        (e.batch_time, e.wall_time, e.kind, e.source, _canonical(e.data)) for e in read_events(path)
    ]


def test_verify_names_a_replayed_a_moved_and_a_missing_signature(
    tmp_path: Path, site: Site
) -> None:
    journal = ended_batch(tmp_path / "b.sqlite")
    for alarm, user in (("2", "sam"), ("3", "kim")):
        ok = cli.invoke(app, ["ack", str(journal), alarm, *site.signed(user), "--comment", "c"])
        assert ok.exit_code == 0, ok.output
    original = rows(journal)
    signature = next(r for r in original if r[2] == "signature")

    rechain(journal, [*original, signature])  # the same signature once more
    replayed = cli.invoke(app, ["verify", str(journal)])
    assert replayed.exit_code == 1 and "a replayed signature" in replayed.output

    kim_ack = next(i for i, r in enumerate(original) if r[2] == "alarm_ack" and '"kim"' in r[4])
    moved = [r for r in original if r is not original[kim_ack]]  # the act gone, its signature left
    rechain(journal, moved)
    result = cli.invoke(app, ["verify", str(journal)])
    assert result.exit_code == 1 and "does not sign the event it names" in result.output

    unsigned = [r for r in original if not (r[2] == "signature" and '"kim"' in r[4])]
    rechain(journal, unsigned)  # kim's acknowledgement without kim's signature
    result = cli.invoke(app, ["verify", str(journal)])
    assert result.exit_code == 1 and "alarm_ack by 'kim') has no e-signature" in result.output

    rechain(journal, original)
    assert cli.invoke(app, ["verify", str(journal)]).exit_code == 0


SMOKE_RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "smoke.yaml")


def test_a_run_on_a_development_bench_is_an_engineers_signed_act(
    tmp_path: Path, site: Site
) -> None:
    """The twin is a development bench: with site users in force only an engineer starts a
    batch on it, signing with the password; anyone else is refused before anything starts."""
    run = ["run", SMOKE_RECIPE, "-q"]
    refused = {
        "an operator": ["--operator", "kim", "--password-file", str(site.password_file("kim"))],
        "a wrong password": [
            *("--operator", "eve"),
            *("--password-file", str(site.password_file("eve", "not-eves-password"))),
        ],
        "someone unknown": [
            "--operator",
            "mallory",
            "--password-file",
            str(site.password_file("eve")),
        ],
    }
    for who, options in refused.items():
        journal = tmp_path / f"{who.replace(' ', '-')}.sqlite"
        result = cli.invoke(app, [*run, "--journal", str(journal), *options])
        assert result.exit_code == 4, (who, result.output)
        assert "run-development refused" in result.stderr and "nothing started" in result.stderr
        assert not journal.exists(), who
    journal = tmp_path / "eve.sqlite"
    result = cli.invoke(app, [*run, "--journal", str(journal), *site.signed("eve")])
    assert result.exit_code == 0, result.output
    events = list(read_events(journal))
    started, signature = events[0], events[1]
    assert started.kind == "batch_started" and started.data["operator"] == "eve"
    assert signature.kind == "signature"
    assert (signature.data["user"], signature.data["act"]) == ("eve", "run-development")
    assert signature.data["signed_seq"] == started.seq
    assert cli.invoke(app, ["verify", str(journal)]).exit_code == 0

    rechain(journal, [r for k, r in enumerate(rows(journal)) if k != 1])  # signature taken out
    unsigned = cli.invoke(app, ["verify", str(journal)])
    assert unsigned.exit_code == 1
    assert "event 1 (batch_started by 'eve') has no e-signature" in unsigned.output


def test_without_site_users_a_run_asks_no_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo: a fresh clone has no users file, and the twin batch runs all the same."""
    monkeypatch.delenv("POC_TWIN_USERS")
    monkeypatch.chdir(tmp_path)  # no site/users.sqlite here
    journal = tmp_path / "demo.sqlite"
    result = cli.invoke(app, ["run", SMOKE_RECIPE, "-q", "--journal", str(journal)])
    assert result.exit_code == 0, result.output
    assert "no site users file" in result.stderr
    assert "signature" not in kinds(journal)
