"""Signed entries into the journal of a batch that has ended: QC results, alarm
acknowledgements, and QA's review and approval of the batch record.

A running batch takes signed acts through its command socket (its own process
writes its journal); once it has ended, the command line appends to the journal
itself, on the same chain, each act followed by its signature event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twin.access.esign import journal_refusal, sign_event
from twin.access.roles import Act
from twin.access.users import AccessRefused, Signer
from twin.engine.inbox import (
    BatchProcessRunning,
    address_held,
    claim_command_address,
    command_address,
)
from twin.errors import JournalError, JournalWriteFailed, PocTwinError
from twin.journal import Event, HeadSigner, Journal, VerifyResult, read_events, verify

__all__ = [
    "EntryRefused",
    "alarm_to_acknowledge",
    "batch_is_running",
    "batch_running",
    "ended_batch",
    "ended_journal",
    "journal_refusal_in",
    "record_to_sign",
    "write_alarm_ack",
    "write_record_signature",
]


async def batch_running(journal: Path) -> bool:
    """True while a batch process answers on ``journal``'s command socket (in a loop)."""
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_unix_connection(path=command_address(journal))
        writer.close()
        return True
    return False


def batch_writes(journal: Path) -> bool:
    """True when the process answering on ``journal``'s command socket is one that could be
    writing it: same user as the journal file's owner (abstract sockets have no file
    permissions: anyone may bind a name), and, where /proc shows it, holding the file open.
    What verify trusts before it calls a journal without an end "running", not cut short."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.settimeout(2.0)
            probe.connect(command_address(journal))
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return False
    pid, uid, _ = struct.unpack("3i", creds)
    try:
        target = journal.resolve()
        if uid != target.stat().st_uid and uid != 0:
            return False
        fds = Path(f"/proc/{pid}/fd")
        if not fds.is_dir():
            return True  # no /proc here: the user check is what there is
        return any(_points_to(fd, target) for fd in fds.iterdir())
    except PermissionError:
        return True  # another user's /proc: the uid check above already passed
    except OSError:
        return False


def _points_to(fd: Path, target: Path) -> bool:
    try:
        return Path(os.readlink(fd)) == target
    except OSError:
        return False


def batch_is_running(journal: Path) -> bool:
    """True while a batch process answers on ``journal``'s command socket."""
    return asyncio.run(batch_running(journal))


class EndedJournal:
    """An ended batch's journal, reopened to take signed entries."""

    def __init__(self, book: Journal) -> None:
        self.book = book

    def append_signed(self, kind: str, source: str, data: dict[str, Any], person: Signer) -> Event:
        """The act, then its signature: one commit (no kill leaves the act unsigned)."""
        with self.book.together():
            event = self.book.append(kind, source, data)
            sign_event(self.book, event, person)
        return event

    def events(self) -> Iterator[Event]:
        return read_events(self.book.path)


@contextlib.contextmanager
def ended_journal(
    journal: Path,
    what: str,
    *,
    site_signer: HeadSigner | None = None,
    held: bool = False,
    ended: bool = True,
) -> Iterator[EndedJournal]:
    """Reopen ``journal`` for signed entries; JournalError while its batch still runs.

    The batch's command address is claimed while the entry is written (one process writes
    a journal: not while a batch runs, starts or is being resumed); ``held``: the caller
    (a resume refusing its supervisor's signature) holds it already. ``ended``: the batch
    must have ended (EntryRefused otherwise); a refused signature, an audit entry, is
    journalled in a batch whose process died too.
    """
    claimed = None
    if not held:
        try:
            claimed = claim_command_address(journal)
        except BatchProcessRunning:
            raise JournalError(
                f"{journal}: a batch process is still writing this journal (running, starting "
                f"or being resumed); {what} through it (its command socket), or after the "
                "batch has ended"
            ) from None
    try:
        events = list(read_events(journal))
        if not any(e.kind == "batch_started" for e in events):
            raise JournalError(f"{journal}: no batch in this journal")
        if ended:
            _ended_in(journal, events, what)
        last = max((e.batch_time for e in events), default=0.0)
        book = Journal.reopen(journal, lambda: last, signer=site_signer)
        try:
            yield EndedJournal(book)
        except JournalWriteFailed as exc:
            # An entry into a record, not a running batch: nothing stopped, no equipment,
            # nothing to resume (before, QA read that the batch was stopped where it stood).
            busy = isinstance(exc.cause, sqlite3.OperationalError) and "locked" in str(exc.cause)
            hint = "another program holds it; try again" if busy else "mend the file or disk"
            raise JournalError(
                f"{journal}: the entry could not be written ({exc.cause}); nothing of it is in "
                f"the record: {hint}"
            ) from None
        finally:
            book.close()
    finally:
        if claimed is not None:
            claimed.close()


def journal_refusal_in(journal: Path, refused: AccessRefused, *, held: bool = False) -> None:
    """Journal a refused signature in an ended batch's journal (best effort: a file that
    is not a batch journal, or a running batch, keeps nothing); ``held``: as for
    :func:`ended_journal`."""
    with (
        contextlib.suppress(JournalError, OSError),
        ended_journal(journal, "refusals are journalled", held=held, ended=False) as ended,
    ):
        journal_refusal(ended.book, refused)


class EntryRefused(PocTwinError):
    """A signed entry that cannot be made (no such alarm, acknowledged already, a record
    that does not verify); ``refused`` tells a state refusal from bad input."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _ended_in(journal: Path, events: list[Event], what: str) -> Event:
    """The ``batch_ended`` event of ``events``; refused (state) when the batch never ended.

    A journal with no end and no process writing it is a batch whose process died: its
    record is not final (``poc-twin resume`` carries it on, after anything signed now), so
    nothing is signed into it as if it were an ended batch's."""
    end = next((e for e in reversed(events) if e.kind == "batch_ended"), None)
    if end is not None:
        return end
    state = next(
        (
            e.data.get("to")
            for e in reversed(events)
            if e.kind == "transition" and e.source.startswith("procedure:")
        ),
        None,
    )
    if address_held(journal):  # its process is there: running, or a resume taking over
        now = f" ({state})" if state else ""
        raise EntryRefused(
            f"{journal}: the batch is still running{now}; {what} once it has ended",
            refused=True,
        )
    last = f", last {state}" if state else ""
    raise EntryRefused(
        f"{journal}: the batch has not ended (its process stopped{last}, after event "
        f"{events[-1].seq if events else 0}); {what} once it has ended: bring it back with "
        f"poc-twin resume {journal}",
        refused=True,
    )


def ended_batch(journal: Path, what: str) -> Event:
    """The end of ``journal``'s batch; EntryRefused (a state refusal) if it has not ended.

    Asked before anyone signs (a password is not asked for an entry refused anyway), and
    again by :func:`ended_journal` as the entry is written."""
    events = list(read_events(journal))
    if not any(e.kind == "batch_started" for e in events):
        raise JournalError(f"{journal}: no batch in this journal")
    return _ended_in(journal, events, what)


def alarm_to_acknowledge(journal: Path, alarm: int) -> tuple[Event, Act]:
    """The alarm event ``alarm`` of an ended batch and the act acknowledging it needs."""
    from twin.engine.alarms import is_critical

    events = list(read_events(journal))
    if any(e.kind == "batch_started" for e in events):
        _ended_in(journal, events, "acknowledge its alarms")
    raised = next((e for e in events if e.seq == alarm and e.kind == "alarm"), None)
    if raised is None:
        raise EntryRefused(f"event {alarm} of {journal} is not an alarm")
    if any(e.kind == "alarm_ack" and e.data.get("alarm_seq") == alarm for e in events):
        raise EntryRefused(f"alarm {alarm} was acknowledged already", refused=True)
    return raised, Act.ACKNOWLEDGE_CRITICAL if is_critical(raised) else Act.ACKNOWLEDGE


def write_alarm_ack(journal: Path, raised: Event, person: Signer, comment: str) -> Event:
    """Append the signed acknowledgement of ``raised`` to an ended batch's journal."""
    data = {
        "alarm_seq": raised.seq,
        "alarm": raised.data.get("alarm", ""),
        "critical": person.act == Act.ACKNOWLEDGE_CRITICAL.value,
        "user": person.user,
        "comment": comment,
    }
    with ended_journal(journal, "acknowledge alarms") as ended:
        return ended.append_signed("alarm_ack", raised.source, data, person)


def record_to_sign(journal: Path) -> VerifyResult:
    """The chain of an ended batch's record, which must verify before QA signs it."""
    intact = verify(journal)
    if not intact.ok:
        raise EntryRefused(f"{journal} does not verify: a broken record is not signed")
    ended_batch(journal, "review or approve its record")
    return intact


def write_record_signature(
    journal: Path, intact: VerifyResult, person: Signer, comment: str
) -> Event:
    """Append QA's signed review or approval of the record ``intact`` describes."""
    data = {
        "user": person.user,
        "meaning": person.meaning,
        "comment": comment,
        "record_head": intact.head,
        "record_events": intact.events,
    }
    with ended_journal(journal, "sign the record") as ended:
        return ended.append_signed("record_signature", "batch", data, person)
