"""How a batch's state is worded for a person: one wording for the engine, the live panel,
the operator station and the control site (they read it from different places)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["HOLDS_THROUGH_PAUSE", "status_words"]

#: What a Pausing or Paused procedure shows of the elements below it: a hold (or an
#: ending) below stands through the pause; their mirrored pause is not shown.
HOLDS_THROUGH_PAUSE = frozenset({"Holding", "Held", "Stopping", "Aborting"})


def status_words(
    state: str, below: Iterable[tuple[str, str]], *, identity_wanted: bool, lot_wanted: str
) -> str:
    """The procedure's ``state`` with what a person must see beside it: the first element
    of ``below`` (element, its state) not running, "Running (unit:x Held)", "Paused
    (phase:... Held)"; or the scan a phase waits for."""
    if state == "Running":
        for element, shown in below:
            return f"Running ({element} {shown})"
        if lot_wanted:
            return f"Running (waiting for a scan of the {lot_wanted} container)"
        if identity_wanted:
            return "Running (waiting for the identity scan)"
    elif state in ("Pausing", "Paused"):
        for element, shown in below:
            if shown in HOLDS_THROUGH_PAUSE:
                return f"{state} ({element} {shown})"
    return state
