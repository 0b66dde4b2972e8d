"""A product recipe run unattended on the twin: the batch's identity and the simulated person
at the bag who scans it (``run --simulated-operator``), as ``make demo`` runs it."""

from __future__ import annotations

PATIENT, BAG = "P-TWIN-001", "BAG-TWIN-001"
#: ``poc-twin run`` options: the identity the batch is made for, scanned at once when asked.
UNATTENDED = ("--patient-id", PATIENT, "--bag-id", BAG, "--simulated-operator", "0")
