"""The HIL run's scripted person at the bag: on the twin or at real equipment alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from twin.journal import Event

#: The patient and bag a HIL batch is made for (the identity the scripted person scans).
PATIENT, BAG = "P-HIL-001", "BAG-HIL-001"


def scan_at_the_bag(batches: list[Any]) -> Callable[[Event], None]:
    """A journal subscriber that scans wristband and bag as soon as the batch asks (chain of
    identity), handing the scan to ``batches[0]``, the batch the runner started."""

    def scan(patient_id: str, bag_id: str) -> None:
        if batches[0].identity_wanted:  # a hold came first: it asks again, heard again
            batches[0].present_identity(
                patient_id, bag_id, who="hil-operator", why="scanned for the HIL run"
            )

    def hear(event: Event) -> None:
        if event.kind == "identity_requested":  # the scan journals itself: after this event
            asyncio.get_running_loop().call_soon(
                scan, event.data["patient_id"], event.data["bag_id"]
            )

    return hear
