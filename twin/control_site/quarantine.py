"""The quarantine on the dashboard: which site sent what that was refused, and why.

A refused message is not an error of the control site but of a site (a bug in
its software, a corrupted disk, or someone with its credentials); the control
room must see it to chase it, next to the batches, without it stopping them.
Rows are per (site, topic, reason) with a count, newest first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from twin.control_site.store import Store

__all__ = ["quarantine_html", "quarantine_rows"]

#: Rows shown on the overview (the API gives them all).
_SHOWN = 20


def quarantine_rows(store: Store, limit: int | None = None) -> list[dict[str, Any]]:
    """Quarantined messages, newest first: site, topic, kind, reason, count, size, excerpt."""
    sql = (
        "SELECT site, topic, kind, reason, count, size, excerpt, first_at, last_at "
        "FROM quarantine ORDER BY last_at DESC, site, topic"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    keys = ("site", "topic", "kind", "reason", "count", "size", "excerpt", "first_at", "last_at")
    return [dict(zip(keys, row, strict=True)) for row in store.query(sql)]


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def quarantine_html(store: Store) -> str:
    """The overview's quarantine section (empty when nothing was refused)."""
    total = store.query("SELECT count(*), coalesce(sum(count), 0) FROM quarantine")[0]
    if not total[0]:
        return "<div id='quarantine'></div>"
    rows = "".join(
        f"<tr><td>{escape(r['site'])}</td><td><code>{escape(r['topic'])}</code></td>"
        f"<td class='bad'>{escape(r['reason'])}</td><td>{r['count']}</td>"
        f"<td>{r['size']}</td><td>{_when(r['last_at'])}</td>"
        f"<td><code>{escape(r['excerpt'][:120])}</code></td></tr>"
        for r in quarantine_rows(store, _SHOWN)
    )
    more = f" (latest {_SHOWN} shown; more at /api/quarantine)" if total[0] > _SHOWN else ""
    return (
        f"<div id='quarantine'><h2 class='bad'>Quarantined messages: {total[1]}</h2>"
        f"<p>Refused on arrival and kept aside; everything else was stored.{more}</p>"
        "<table><tr><th>site</th><th>topic</th><th>reason</th><th>times</th><th>bytes</th>"
        f"<th>last (UTC)</th><th>start of payload</th></tr>{rows}</table></div>"
    )
