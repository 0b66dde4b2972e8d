"""A product recipe run unattended on the twin: the batch's identity and the simulated person
at the bag who scans it (``run --simulated-operator``), as ``make demo`` runs it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PATIENT, BAG = "P-TWIN-001", "BAG-TWIN-001"
#: ``poc-twin run`` options: the identity the batch is made for, scanned at once when asked.
UNATTENDED = ("--patient-id", PATIENT, "--bag-id", BAG, "--simulated-operator", "0")


def scanned_smoke(folder: Path, extra: str = "") -> Path:
    """The smoke recipe whose activator dose waits for its container's scan (``scan_lot``),
    with ``extra`` fields on that add phase (e.g. ``lot: TA-7``)."""
    fields = f", {extra}" if extra else ""
    path = folder / "scanned.yaml"
    path.write_text(
        (ROOT / "recipes" / "smoke.yaml")
        .read_text()
        .replace(
            "material: activator, volume_ml: 2.0}",
            f"material: activator, volume_ml: 2.0{fields}, scan_lot: true}}",
        )
    )
    return path
