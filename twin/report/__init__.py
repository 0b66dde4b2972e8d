"""The batch record: a self-contained HTML report read from the journal alone.

``write_report`` checks the journal (chain, and signatures when a public key is
given) and writes the report either way; a journal that does not verify is
marked in red at the top, so a broken record is never mistaken for a good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twin.report.html import render_html
from twin.report.record import BatchRecord, build_record

__all__ = ["BatchRecord", "build_record", "render_html", "write_report"]


def write_report(
    journal: Path | str, out: Path | str, public_key: Any = None, anchors: Any = None
) -> BatchRecord:
    """Build the batch record of ``journal`` and write it to ``out`` (HTML)."""
    record = build_record(journal, public_key, anchors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(record), encoding="utf-8")
    return record
