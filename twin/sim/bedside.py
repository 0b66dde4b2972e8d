"""The twin's simulated person at the bag: scans what the batch asks for, after a delay.

A simulated bench stands in for the equipment; for an unattended run of a product
recipe (``make demo``, CI against the twin, an ensemble batch) something must also
stand in for the nurse who scans the wristband and the bag, and the material
containers. This is that person, part of the simulated world like the twin's
devices: ``poc-twin run --simulated-operator MIN`` attaches one, and only to a bench
whose plant is the twin. It scans exactly what the batch asks for (the identity the
batch was started with, the lot it expects, an expiry a year after the batch's date:
the twin's containers are in date), ``scan_after_s`` of batch time after
the request, and its acts are journalled under the name ``twin:bedside`` — not a
site user, so they carry no e-signature and the batch record says a simulated
person confirmed them.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from twin.access.esign import SIMULATED_PERSON
from twin.clock import Clock
from twin.engine.lots import LotScan, NoScanWanted
from twin.journal import Event

__all__ = ["NAME", "BedsideOperator"]

#: What the journal names the simulated person (no site user is named so).
NAME = f"{SIMULATED_PERSON}bedside"
#: How long after the batch's date the twin's material containers expire.
SHELF_LIFE = timedelta(days=365)


class BedsideOperator:
    """Subscribe :meth:`hear` to the journal and hand over the batch with :meth:`attend`."""

    def __init__(self, clock: Clock, scan_after_s: float) -> None:
        if not scan_after_s >= 0.0:
            raise ValueError(f"a scan delay is 0 or more seconds: {scan_after_s}")
        self.clock = clock
        self.scan_after_s = scan_after_s
        self.batch: Any = None
        self.scans = 0

    def attend(self, batch: Any) -> None:
        self.batch = batch

    def hear(self, event: Event) -> None:
        if event.kind == "identity_requested":
            patient, bag = str(event.data["patient_id"]), str(event.data["bag_id"])
            self.clock.call_later(self.scan_after_s, self._identity, patient, bag)
        elif event.kind == "lot_requested":
            material = str(event.data["material"])
            lot = str(event.data.get("expected_lot") or f"twin-{material}")
            self.clock.call_later(self.scan_after_s, self._lot, material, lot)

    def _identity(self, patient: str, bag: str) -> None:
        # Only while the batch asks (a hold came first: it asks again, and is heard again).
        if self.batch is not None and self.batch.identity_wanted:
            self.scans += 1
            self.batch.present_identity(
                patient, bag, who=NAME, why="the twin's simulated operator at the bag"
            )

    def _lot(self, material: str, lot: str) -> None:
        if self.batch is not None and not self.batch.state.is_final:
            with contextlib.suppress(NoScanWanted):  # a hold came first: it asks again
                self.scans += 1
                expiry = self.clock.batch_date() + SHELF_LIFE
                self.batch.present_lot(
                    LotScan(material, lot, expiry), who=NAME, why="the twin's simulated operator"
                )
