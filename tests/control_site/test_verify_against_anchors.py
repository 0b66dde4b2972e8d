"""`poc-twin verify --anchor URL`: a validator checks a site's journal against the heads the
control site anchored, fetched with their own control-site login.

Real parts: the signed smoke batch forwarded over Mosquitto, anchored in PostgreSQL, served
by the control site's aiohttp app; the validator's `poc-twin verify` is a child process.
What only an anchor catches without the site's key: a tail cut back to a checkpoint with a
forged end chained on (the chain alone verifies), and, even against the key, a history
rewritten and re-signed with the site's own key.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path

from site_journals import SignedBatch, poc_twin, rewrite
from test_signed_heads import heads, last_signed, wait_for

from twin.control_site.serve import ControlSite
from twin.control_site.web import Users
from twin.journal import event_hash
from twin.telemetry.broker import BrokerConfig, free_port
from twin.telemetry.forwarder import Forwarder
from twin.telemetry.topics import BrokerURL

QA_PASSWORD = "anchor-check-9"


def password_file(tmp_path: Path, name: str, password: str) -> Path:
    path = tmp_path / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return path


def cut_back_and_end_again(source: Path, dest: Path) -> None:
    """The tail cut after the first checkpoint and a ``batch_ended`` chained on with a
    correct hash (no key needed): the chain verifies and the batch looks finished."""
    shutil.copy(source, dest)
    with sqlite3.connect(dest) as db:
        first = db.execute("SELECT min(seq) FROM events WHERE kind = 'checkpoint'").fetchone()[0]
        ended = db.execute(
            "SELECT batch_time, wall_time, kind, source, data FROM events "
            "WHERE kind = 'batch_ended'"
        ).fetchone()
        db.execute("DELETE FROM events WHERE seq > ?", (first,))
        (prev,) = db.execute("SELECT hash FROM events WHERE seq = ?", (first,)).fetchone()
        seq = first + 1
        digest = event_hash(prev, seq, *ended)
        db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", (seq, *ended, prev, digest))


def test_verify_fetches_the_anchored_head_and_catches_what_only_it_can(
    broker: BrokerConfig, postgres: str, signed_batch: SignedBatch, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text(Users.line("qa", QA_PASSWORD) + "\n")
    good = password_file(tmp_path, "qa.pw", QA_PASSWORD)
    wrong = password_file(tmp_path, "wrong.pw", "not-it")
    cut = tmp_path / "cut.sqlite"  # cut back to the first checkpoint, a forged end appended
    cut_back_and_end_again(signed_batch.journal, cut)
    resigned = tmp_path / "resigned.sqlite"  # an insider with the site's own key
    rewrite(signed_batch.journal, resigned, key=signed_batch.key, edit_seq=40)
    port = free_port()
    anchor = f"http://qa@127.0.0.1:{port}"
    site_url = BrokerURL.parse(broker.url("site-a", unit="cleanroom-1"))

    def verify(journal: Path, pw: Path, *extra: str) -> tuple[int, str]:
        done = poc_twin(
            "verify", str(journal), *extra, "--anchor", anchor, "--control-password-file", str(pw)
        )
        return done.returncode, done.stdout + done.stderr

    async def scenario() -> dict[str, tuple[int, str]]:
        site = ControlSite(
            broker.url("control"), postgres, "127.0.0.1", port, users, site_keys=[signed_batch.keys]
        )
        await site.start()
        try:
            assert await Forwarder(signed_batch.journal, site_url).run()
            final = last_signed(signed_batch.journal)
            await wait_for(lambda: [h[:2] for h in heads(site, "sig1")] == [final])
            seen = {}
            for name, journal, pw in [
                ("original", signed_batch.journal, good),
                ("cut", cut, good),
                ("resigned", resigned, good),
                ("wrong password", signed_batch.journal, wrong),
            ]:
                seen[name] = await asyncio.to_thread(verify, journal, pw)
            return seen
        finally:
            await site.stop()

    seen = asyncio.run(scenario())
    assert poc_twin("verify", str(cut)).returncode == 0  # the chain alone cannot tell
    code, said = seen["original"]
    assert code == 0 and "anchors: 1 anchored heads match the journal" in said, said
    code, said = seen["cut"]
    assert code == 1 and "was anchored but the journal ends at" in said and "truncated" in said
    code, said = seen["resigned"]
    assert code == 1 and "differs from the head anchored elsewhere (rewritten)" in said, said
    code, said = seen["wrong password"]
    assert code == 1 and "login refused; no anchors fetched" in said, said


def test_the_password_never_travels_in_clear_to_another_machine_nor_on_a_redirect(
    signed_batch: SignedBatch, tmp_path: Path
) -> None:
    """Refused before connecting: plain http to a host that is not this machine; refused
    after: a redirect (it would carry the Authorization header), and an answer that is
    not HTTP (a port of the wrong service) is one line, not a traceback."""
    import socket
    import threading

    pw = password_file(tmp_path, "qa.pw", QA_PASSWORD)
    remote = poc_twin(
        "verify",
        str(signed_batch.journal),
        *("--anchor", "http://qa@192.0.2.10:8080", "--control-password-file", str(pw)),
    )
    assert remote.returncode == 1 and "sent over https:// only" in remote.stderr

    replies = {
        "redirect": b"HTTP/1.1 302 Found\r\nLocation: http://192.0.2.10/\r\n"
        b"Content-Length: 0\r\n\r\n",
        "ssh": b"SSH-2.0-OpenSSH_9.6\r\n",
    }
    for name, reply in replies.items():
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def answer(server: socket.socket = server, reply: bytes = reply) -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(reply)
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        done = poc_twin(
            "verify",
            str(signed_batch.journal),
            *("--anchor", f"http://qa@127.0.0.1:{port}", "--control-password-file", str(pw)),
        )
        server.close()
        assert done.returncode == 1, (name, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.count("\n") <= 1, done.stderr
        expected = "redirect (not followed)" if name == "redirect" else "no HTTP answer"
        assert expected in done.stderr, (name, done.stderr)
