"""Holds, stops and aborts given to a unit procedure, operation or phase, told from those
mirrored down to it.

A command goes to one element and is mirrored down the chain below it (ISA-88): one hold
of the procedure is a transition of the procedure, its unit, operation and phase; one
abort of an operation is that operation's and its phase's. A reviewer must see each hold,
stop and abort once, at the element it was given to: :class:`Episodes` reads the
journal's transitions in order and names the element's own (no element above it, nor the
procedure, is Holding, Stopping or Aborting as it is at that moment).
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.journal import Event

__all__ = ["ENDED", "HOLD_STATES", "Episode", "Episodes", "span", "timed"]

HOLD_STATES = {"Holding", "Held", "Restarting"}
#: The transition a stop or an abort starts with.
ENDED = {"Stopping": "stop", "Aborting": "abort"}
LEVELS = ("unit", "operation", "phase")


@dataclass
class Episode:
    """A hold, stop or abort given to an element below the procedure (not mirrored to it)."""

    seq: int
    start: float
    kind: str  # "hold", "stop" or "abort"
    level: str  # "unit", "operation" or "phase" (the journal's source prefix)
    path: str
    who: str
    why: str
    #: A hold: when the element ran again (or ended); a stop or abort: when it was Stopped
    #: (Aborted). None: not in the journal (the batch ended or died first).
    end: float | None = None

    @property
    def element(self) -> str:
        """``phase expansion_bioreactor/culture/2:culture``, ``unit expansion_bioreactor``: as
        the record's table of elements names it (and ``--level`` the command)."""
        return f"{self.level} {self.path}"

    @property
    def done(self) -> str:
        """What was done to the element: ``held``, ``stopped`` or ``aborted``."""
        return {"hold": "held", "stop": "stopped", "abort": "aborted"}[self.kind]


def _above(source: str) -> list[str]:
    """The sources of the elements above an element, nearest first (the procedure last)."""
    kind, _, path = source.partition(":")
    parts = path.split("/", 2)
    if kind == "phase" and len(parts) == 3:
        return [f"operation:{parts[0]}/{parts[1]}", f"unit:{parts[0]}", "procedure"]
    if kind == "operation" and len(parts) >= 2:
        return [f"unit:{parts[0]}", "procedure"]
    return ["procedure"]


class Episodes:
    """Every element's own holds, stops and aborts, from the journal's transitions in order."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.episodes: list[Episode] = []
        #: Each element's open episode (its own hold until it runs again, or its own stop
        #: or abort until it ended), by source.
        self.open: dict[str, Episode] = {}

    def see(self, e: Event) -> tuple[Episode | None, bool]:
        """Take one transition event (of any element, the procedure's too).

        Returns the episode it starts (None: none, or a mirrored transition) and whether the
        transition belongs to an element's own episode (a row for the timeline of states)."""
        kind, _, path = e.source.partition(":")
        to = str(e.data.get("to") or "")
        if kind == "procedure":
            self.state["procedure"] = to
            return None, False
        if kind not in LEVELS:
            return None, False
        above = [self.state.get(s) for s in _above(e.source)]
        started: Episode | None = None
        current = self.open.get(e.source)
        shown = current is not None
        if current is not None and (
            (current.kind == "hold" and to not in HOLD_STATES)
            or (current.kind != "hold" and to in ("Stopped", "Aborted", "Complete", "Idle"))
        ):
            current.end = e.batch_time
            del self.open[e.source]
        if to == "Holding" and "Holding" not in above:
            started = Episode(e.seq, e.batch_time, "hold", kind, path, _who(e), _why(e))
        elif to in ENDED and not any(s in ENDED for s in above):
            started = Episode(e.seq, e.batch_time, ENDED[to], kind, path, _who(e), _why(e))
        if started is not None:
            if e.source in self.open:  # held again while restarting, aborted while stopping
                self.open[e.source].end = e.batch_time
            self.episodes.append(started)
            self.open[e.source] = started
            shown = True
        self.state[e.source] = to
        return started, shown


def _who(e: Event) -> str:
    return str(e.data.get("who") or "?")


def _why(e: Event) -> str:
    return str(e.data.get("why") or "")


def span(seconds: float) -> str:
    """A length of batch time as a reviewer reads it: minutes, hours or days."""
    hours = seconds / 3600.0
    if hours < 1.0:
        return f"{seconds / 60.0:.0f} min"
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def timed(episode: Episode, end_time: float, *, ended: bool = True) -> str:
    """How long a hold lasted: ``30 min``, ``5.0 h, to the end of the batch``, or (a journal
    with no ``batch_ended``: the batch runs on, or its process died) ``5.0 h so far, still
    held at the journal's last event``."""
    if episode.end is not None:
        return span(episode.end - episode.start)
    if not ended:
        return f"{span(end_time - episode.start)} so far, still held at the journal's last event"
    return f"{span(end_time - episode.start)}, to the end of the batch"
