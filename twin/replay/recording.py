"""A recorded batch as replay and resume read it: its events, recipe and bench, from the journal.

Everything comes from the journal file (the recipe's and the bench's text are
recorded in ``batch_started``), so a batch can be replayed years later, on
another machine, without the files it was started from.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.bench import LoadedBench, load_bench, with_seed
from twin.errors import JournalError
from twin.journal import CHECKPOINT, Event, read_events, require_intact
from twin.recipe import LoadedRecipe, load_recipe
from twin.sourcemap import recorded_text

__all__ = ["NOT_THE_ENGINES", "Recording", "load_recording"]

#: Event kinds in a batch's journal that no engine decision wrote.
NOT_THE_ENGINES = frozenset(
    {
        CHECKPOINT,
        "qc_result",
        "signature",
        "access_refused",
        "record_signature",
        "alarm_ack",
        "equipment_identity",  # the runner's, read from the devices before the engine starts
    }
)

#: What people write to a batch's journal from other processes, also while the batch's
#: process is dead (each may be followed by its signature and a site-key checkpoint).
WRITTEN_FROM_OUTSIDE = frozenset({"access_refused", "qc_result", "alarm_ack", "record_signature"})


@dataclass(frozen=True)
class Recording:
    """One batch's journal, checked and read: what replay compares against."""

    path: Path
    events: list[Event]

    @property
    def started(self) -> Event:
        return self.events[0]

    @property
    def header(self) -> dict[str, Any]:
        return self.started.data

    @property
    def ended(self) -> bool:
        """True when the batch ran to its end (the record closes with ``batch_ended``)."""
        return any(e.kind == "batch_ended" for e in self.events)

    @property
    def last_of_the_batch(self) -> Event:
        """The last event the batch's own process wrote: where an interruption begins.

        Others may write to a dead batch's journal after it: a refused ``resume``'s
        ``access_refused``, a QC result, an alarm acknowledgement or a record signature,
        each with its signature and the site key's checkpoint. The interruption is measured
        from before the first of those in the journal's tail, not from the last of them."""
        events = self.events
        last = len(events) - 1
        for index in range(len(events) - 1, 0, -1):
            kind = events[index].kind
            if kind in WRITTEN_FROM_OUTSIDE:
                last = index - 1
            elif kind not in ("signature", CHECKPOINT):
                break
        return events[last]

    @property
    def decisions(self) -> list[Event]:
        """The events an engine re-run must reproduce: not the site key's signatures, not QC
        results entered after the batch."""
        return [e for e in self.events if e.kind not in NOT_THE_ENGINES]

    @contextlib.contextmanager
    def recipe(self, override: Path | None = None) -> Iterator[LoadedRecipe]:
        """The recorded recipe (its recorded text and parameters), or ``override`` with them."""
        recorded = self.header["recipe"]
        params = {k: str(v) for k, v in (recorded.get("parameters") or {}).items()}
        if override is not None:
            yield load_recipe(override, params)
            return
        with _as_file(recorded["path"], recorded["text"]) as path:
            with recorded_text():  # as the version that ran it read it
                recipe = load_recipe(path, params)
            yield recipe

    @contextlib.contextmanager
    def bench(self) -> Iterator[LoadedBench]:
        """The recorded bench (its recorded text, wherever the file is now)."""
        recorded = self.header["bench"]
        with _as_file(recorded["path"], recorded["text"]) as path:
            with recorded_text():
                bench = with_seed(load_bench(path), recorded.get("seed"))
            yield bench


@contextlib.contextmanager
def _as_file(original: str, text: str) -> Iterator[Path]:
    """The original file when it still holds the recorded text, else a copy of that text."""
    path = Path(original)
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            yield path
            return
    with tempfile.TemporaryDirectory(prefix="poc-twin-recorded-") as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(text, encoding="utf-8")
        yield copy


def load_recording(path: Path | str) -> Recording:
    """Read a journal for replay or resume; refuse one that does not verify or never started."""
    path = Path(path)
    require_intact(path, "a broken record is neither replayed nor resumed")
    events = list(read_events(path))
    if not events or events[0].kind != "batch_started":
        raise JournalError(f"{path}: no batch_started event; nothing to replay or resume")
    return Recording(path, events)
