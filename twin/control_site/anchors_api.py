"""A batch's anchored chain head, served to validators (`poc-twin verify --anchor URL`).

The control site anchors a site's head only once its signature verified and it extended
what was anchored before (:mod:`twin.control_site.anchoring`), so what it serves here is
what the site can no longer take back: a journal cut short or rewritten, even re-signed
with the site's own key, fails against it. Answered as the JSON lines `poc-twin site
anchor` prints, so a file and the URL are read alike.
"""

from __future__ import annotations

import json
from typing import Any

from twin.control_site.store import Store

__all__ = ["anchor_records"]


def anchor_records(store: Store, site: str, batch: str) -> list[dict[str, Any]]:
    """The anchored head of ``site``'s ``batch`` as anchor records (none if not anchored)."""
    rows = store.query(
        "SELECT seq, hash, signature, key_id, verified, received_at FROM heads "
        "WHERE site=? AND batch=?",
        (site, batch),
    )
    return [
        {
            "seq": int(seq),
            "head": str(digest),
            "signature": signature,
            "key_id": key_id,
            "site": site,
            "batch": batch,
            "verified_key": bool(verified),
            "received_at": float(received_at),
        }
        for seq, digest, signature, key_id, verified, received_at in rows
    ]


def as_json_lines(records: list[dict[str, Any]]) -> str:
    """One JSON object per line, keys sorted (what `read_anchors` reads)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
