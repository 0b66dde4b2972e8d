"""Signed entries into the journal of a batch that has ended: QC results, alarm
acknowledgements, and QA's review and approval of the batch record.

A running batch takes signed acts through its command socket (its own process
writes its journal); once it has ended, the command line appends to the journal
itself, on the same chain, each act followed by its signature event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twin.access.esign import journal_refusal, sign_event
from twin.access.users import AccessRefused, Signer
from twin.engine.inbox import command_address
from twin.errors import JournalError
from twin.journal import Event, HeadSigner, Journal, read_events

__all__ = ["batch_is_running", "ended_journal", "journal_refusal_in"]


async def _running(journal: Path) -> bool:
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_unix_connection(path=command_address(journal))
        writer.close()
        return True
    return False


def batch_is_running(journal: Path) -> bool:
    """True while a batch process answers on ``journal``'s command socket."""
    return asyncio.run(_running(journal))


class EndedJournal:
    """An ended batch's journal, reopened to take signed entries."""

    def __init__(self, book: Journal) -> None:
        self.book = book

    def append_signed(self, kind: str, source: str, data: dict[str, Any], person: Signer) -> Event:
        """The act, then its signature."""
        event = self.book.append(kind, source, data)
        sign_event(self.book, event, person)
        return event

    def events(self) -> Iterator[Event]:
        return read_events(self.book.path)


@contextlib.contextmanager
def ended_journal(
    journal: Path, what: str, *, site_signer: HeadSigner | None = None
) -> Iterator[EndedJournal]:
    """Reopen ``journal`` for signed entries; JournalError while its batch still runs."""
    if batch_is_running(journal):
        raise JournalError(
            f"{journal}: a batch process is still writing this journal; {what} through it "
            "(its command socket), or after the batch has ended"
        )
    events = list(read_events(journal))
    if not any(e.kind == "batch_started" for e in events):
        raise JournalError(f"{journal}: no batch in this journal")
    last = max((e.batch_time for e in events), default=0.0)
    book = Journal.reopen(journal, lambda: last, signer=site_signer)
    try:
        yield EndedJournal(book)
    finally:
        book.close()


def journal_refusal_in(journal: Path, refused: AccessRefused) -> None:
    """Journal a refused signature in an ended batch's journal (best effort: a file that
    is not a batch journal, or a running batch, keeps nothing)."""
    with (
        contextlib.suppress(JournalError, OSError),
        ended_journal(journal, "refusals are journalled") as ended,
    ):
        journal_refusal(ended.book, refused)
