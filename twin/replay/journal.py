"""The journal a replayed engine writes into: each event is compared with the recorded one.

The engine does not know it is being replayed: it appends events as always.
Each append is held against the record's next event (kind, source, data and
batch time; wall-clock stamps and signed checkpoints are not the engine's
decisions and are not compared). The first that differs is the divergence.
For resume, events the engine derives past the end of the record are kept
and, at the hand-over, written to the real journal, which then takes every
append.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.journal import READING_COMMIT_WALL_S, Event, Journal, _canonical

__all__ = ["Divergence", "ReplayJournal"]


@dataclass(frozen=True)
class Divergence:
    """Where the replayed engine first did something other than the record says."""

    seq: int | None
    batch_time: float
    reason: str
    recorded: Event | None = None
    replayed: tuple[str, str, dict[str, Any]] | None = None

    def describe(self) -> str:
        where = f"event {self.seq}" if self.seq is not None else "after the last event"
        lines = [f"first divergence at {where} (batch time {self.batch_time:.3f} s): {self.reason}"]
        if self.recorded is not None:
            rec = self.recorded
            lines.append(
                f"  recorded: {rec.kind} {rec.source} at {rec.batch_time:.3f} s "
                f"{_canonical(rec.data)[:300]}"
            )
        if self.replayed is not None:
            kind, source, data = self.replayed
            lines.append(f"  replayed: {kind} {source} {_canonical(data)[:300]}")
        return "\n".join(lines)


#: How much later than the replay makes it a wall-clock bench's record may have an event
#: (batch seconds): the engine's work between two events, a timer the loop ran late. A
#: record later than that (or earlier than the replay) is a divergence, as on the twin.
WALL_LAG_S = 1.0


class ReplayJournal(Journal):
    """Compares instead of writing (until a resume hands over to a live journal)."""

    def __init__(
        self,
        recorded: list[Event],
        batch_time: Callable[[], float],
        *,
        path: Path,
        beyond_the_record: bool = False,
        catch_up: Callable[[float], None] | None = None,
    ) -> None:
        self.path = path
        #: A record of a wall-clock bench: moves the replay's clock on to a recorded event's
        #: batch time when the engine makes it at most ``WALL_LAG_S`` earlier (see append).
        self._catch_up = catch_up
        self.recorded = recorded
        self.cursor = 0
        self.divergence: Divergence | None = None
        self.live: Journal | None = None
        #: Events derived past the end of the record, before the hand-over (resume only).
        self.beyond: list[tuple[float, str, str, dict[str, Any], bool]] = []
        #: The events ``append`` handed back for those (seq 0: not yet written), and what
        #: each became in the live journal (by the placeholder's id).
        self._placeholders: list[Event] = []
        self._written: dict[int, Event] = {}
        self._beyond_allowed = beyond_the_record
        self._batch_time = batch_time
        self._subscribers = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        #: Set when every recorded event has been reproduced, or at the first divergence.
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not recorded:
            self.done.set_result(None)

    @property
    def head(self) -> str:
        if self.live is not None:
            return self.live.head
        return self.recorded[self.cursor - 1].hash if self.cursor else ""

    @property
    def last_seq(self) -> int:
        if self.live is not None:
            return self.live.last_seq
        return self.recorded[self.cursor - 1].seq if self.cursor else 0

    @property
    def exhausted(self) -> bool:
        return self.cursor >= len(self.recorded)

    def append(
        self,
        kind: str,
        source: str,
        data: dict[str, Any],
        *,
        durable: bool = True,
        at: float | None = None,
    ) -> Event:
        if self.live is not None:
            return self.live.append(kind, source, data, durable=durable, at=at)
        t = self._batch_time() if at is None else at
        if self.divergence is None and self.exhausted:
            if self._beyond_allowed:
                self.beyond.append((t, kind, source, data, durable))
                placeholder = Event(0, t, "", kind, source, data, "", "")
                self._placeholders.append(placeholder)
                return placeholder
            else:
                self.diverge(
                    None,
                    "the replayed batch goes on past the end of the record",
                    replayed=(kind, source, data),
                )
        if self.divergence is not None or self.exhausted:
            return Event(0, t, "", kind, source, data, "", "")
        rec = self.recorded[self.cursor]
        reason = ""
        if (rec.kind, rec.source) != (kind, source):
            reason = f"recorded {rec.kind} from {rec.source}, replayed {kind} from {source}"
        elif _canonical(rec.data) != _canonical(data):
            reason = f"{kind} from {source} with other data"
        elif rec.batch_time != t:
            if self._catch_up is not None and 0.0 < rec.batch_time - t <= WALL_LAG_S:
                # On the wall the engine's own work (and a loop's late timer) took real
                # time before this event; the replay's clock follows the record's on.
                self._catch_up(rec.batch_time)
            else:
                reason = f"{kind} from {source} at another batch time ({t:.6f} s)"
        if reason:
            self.diverge(rec, reason, replayed=(kind, source, data))
            return Event(0, t, "", kind, source, data, "", "")
        self.cursor += 1
        self._wake()
        if self.exhausted and not self.done.done():
            self.done.set_result(None)
        for subscriber in self._subscribers:
            subscriber(rec)
        return rec

    def diverge(
        self,
        recorded: Event | None,
        reason: str,
        *,
        replayed: tuple[str, str, dict[str, Any]] | None = None,
    ) -> None:
        """Note the first divergence (later ones follow from it) and end the comparison."""
        if self.divergence is not None:
            return
        if recorded is None and not self.exhausted:
            recorded = self.recorded[self.cursor]
        self.divergence = Divergence(
            recorded.seq if recorded is not None else None,
            self._batch_time(),
            reason,
            recorded,
            replayed,
        )
        if not self.done.done():
            self.done.set_result(None)

    async def reached(self, index: int) -> None:
        """Wait until every recorded event before ``index`` has been reproduced."""
        if self.cursor >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((index, fut))
        await fut

    def _wake(self) -> None:
        keep = []
        for index, fut in self._waiters:
            if self.cursor >= index:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((index, fut))
        self._waiters = keep

    def hand_over(self, live: Journal) -> int:
        """From now on write to ``live``; first the events derived past the record's end."""
        self.live = live
        for subscriber in self._subscribers:
            live.subscribe(subscriber)
        for placeholder, (t, kind, source, data, durable) in zip(
            self._placeholders, self.beyond, strict=True
        ):
            self._written[id(placeholder)] = live.append(kind, source, data, durable=durable, at=t)
        return len(self.beyond)

    def as_written(self, event: Event) -> Event:
        """An event derived past the record's end as the live journal then wrote it."""
        return self._written.get(id(event), event)

    def sign_head(self) -> Event | None:
        return self.live.sign_head() if self.live is not None else None

    def commit(self) -> None:
        if self.live is not None:
            self.live.commit()

    def commit_lagging(self, wall_s: float = READING_COMMIT_WALL_S) -> None:
        if self.live is not None:
            self.live.commit_lagging(wall_s)

    def together(self) -> contextlib.AbstractContextManager[None]:
        """As :meth:`Journal.together` once live; a replayed record commits nothing."""
        return self.live.together() if self.live is not None else contextlib.nullcontext()

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
