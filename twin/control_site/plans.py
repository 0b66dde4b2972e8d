"""How long a batch's recipe may take, read from the recipe its ``batch_started`` recorded.

A batch stuck at day 194 of a 10-day recipe showed a green "ok" (issue 15): the
dashboard knew the day but not the recipe's length. The recipe's text travels in
the batch's first event, so the control site reads the plan from there (no copy
of the recipes of every site needed) and flags a batch whose batch time runs past
it. The plan is the longest the recipe allows: each culture's ``duration_h`` (its
maximum when a target may end it early), each wait's duration or timeout, each
temperature step's timeout and each media exchange at its rate. Phases that wait
for a person (an identity scan) have no bound; time spent there counts as late.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twin.control_site.store import Store
from twin.report.record import recorded_recipe
from twin.report.timing import overrun, planned_hours

__all__ = ["Plan", "Plans", "overrun", "planned_hours"]

#: Plans kept in memory (one per batch; each costs a recipe parse to make).
_CACHED = 4096


@dataclass(frozen=True)
class Plan:
    """The recipe a batch runs and the longest batch time it plans (None: unknown)."""

    recipe: str
    planned_h: float | None


def _plan_of(started: dict[str, Any]) -> Plan:
    recipe = started.get("recipe") if isinstance(started.get("recipe"), dict) else {}
    label = f"{recipe.get('id', '?')} v{recipe.get('version', '?')}" if recipe else "?"
    model = recorded_recipe(started)
    return Plan(label, planned_hours(model) if model is not None else None)


class Plans:
    """Each batch's plan, parsed once from its first event and kept by that event's hash.

    The overview asks for every batch's plan on every refresh; stored events are never
    overwritten, so a plan keyed by the hash of the event it came from never goes stale.
    """

    def __init__(self) -> None:
        self._by_hash: OrderedDict[str, Plan] = OrderedDict()
        self._lock = threading.Lock()

    def all(self, store: Store) -> dict[tuple[str, str], Plan]:
        """(site, batch) -> Plan for every batch whose ``batch_started`` is stored."""
        firsts = store.query(
            "SELECT e.site, e.batch, e.hash FROM batches b JOIN events e "
            "ON e.site=b.site AND e.batch=b.batch AND e.seq=1 WHERE e.kind='batch_started'"
        )
        plans: dict[tuple[str, str], Plan] = {}
        for site, batch, digest in firsts:
            plan = self._cached(digest)
            if plan is None:
                plan = self._load(store, site, batch, digest)
            plans[(site, batch)] = plan
        return plans

    def one(self, store: Store, site: str, batch: str) -> Plan | None:
        rows = store.query(
            "SELECT hash FROM events WHERE site=? AND batch=? AND seq=1 AND kind='batch_started'",
            (site, batch),
        )
        if not rows:
            return None
        return self._cached(rows[0][0]) or self._load(store, site, batch, rows[0][0])

    def _cached(self, digest: str) -> Plan | None:
        with self._lock:
            plan = self._by_hash.get(digest)
            if plan is not None:
                self._by_hash.move_to_end(digest)
            return plan

    def _load(self, store: Store, site: str, batch: str, digest: str) -> Plan:
        rows = store.query(
            "SELECT data FROM events WHERE site=? AND batch=? AND seq=1", (site, batch)
        )
        try:
            started = json.loads(rows[0][0]) if rows else {}
        except ValueError:
            started = {}
        plan = _plan_of(started if isinstance(started, dict) else {})
        with self._lock:
            self._by_hash[digest] = plan
            while len(self._by_hash) > _CACHED:
                self._by_hash.popitem(last=False)
        return plan
