"""A web page's ``--http`` address, listened on: what cannot be bound is one sentence.

The operator station and the control site both serve on an address a person typed; one
already taken (a second station or control site started by mistake) or not this machine's
is said as what, where and a likely cause, not as an errno.
"""

from __future__ import annotations

import errno

from aiohttp import web

__all__ = ["listen"]


async def listen(runner: web.AppRunner, host: str, port: int, serving: str) -> web.TCPSite:
    """Listen on ``host:port`` for ``runner`` (set up); OSError, in a sentence, if it cannot
    (``serving``: what serves there, "station", "control site")."""
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            why += f" (another {serving}?)"
        raise OSError(exc.errno, f"--http {host}:{port}: cannot listen there: {why}") from None
    return site
