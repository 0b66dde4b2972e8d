"""Anchored chain heads for `verify --anchor`: from a file, or fetched from the control site.

A head the control site anchored (signature checked, extending what it held before) is
the only evidence a site cannot take back: a tail cut, or a rewrite re-signed with the
site's own key, shows against it. A validator gives a file of anchor records (JSON lines,
as `poc-twin site anchor` prints them) or the control site's URL; the URL is read with
the validator's control-site login, the password never on the command line.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from twin.errors import JournalError
from twin.journal import read_events
from twin.signing import Anchor, parse_anchors, read_anchors

__all__ = ["ANCHORS_PATH", "anchors_url", "fetch_anchors", "is_url", "load_anchors"]

#: Where the control site serves a batch's anchored heads: ``/api/anchors/SITE/BATCH``.
ANCHORS_PATH = "/api/anchors/"
TIMEOUT_S = 10.0


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _journal_names(journal: Path) -> tuple[str, str]:
    """(site, batch id) as the journal's ``batch_started`` records them."""
    for event in read_events(journal):
        if event.kind == "batch_started":
            return str(event.data.get("site", "local")), str(event.data.get("batch_id", ""))
        break
    raise JournalError(f"{journal}: no batch_started event: no batch to ask anchors for")


def anchors_url(base: str, journal: Path) -> tuple[str, str | None]:
    """The full anchors URL for ``journal`` (unless ``base`` names one) and the URL's user."""
    try:
        parts = urlsplit(base)
        user, host, port = parts.username, parts.hostname, parts.port
    except ValueError as exc:  # a port that is no number, a bracket left open
        raise JournalError(f"--anchor {base}: not a URL ({exc})") from None
    if not host:
        raise JournalError(f"--anchor {base}: the URL names no host")
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path
    if ANCHORS_PATH not in path:
        site, batch = _journal_names(journal)
        path = path.rstrip("/") + ANCHORS_PATH + quote(site, safe="") + "/" + quote(batch, safe="")
    return urlunsplit((parts.scheme, netloc, path, parts.query, "")), user


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the Authorization header to wherever it points: refused."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("the control site answered with a redirect (not followed)")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def fetch_anchors(url: str, user: str | None, password: str) -> list[Anchor]:
    """GET the anchor records (JSON lines) with HTTP Basic auth; JournalError saying why not.

    A password goes over HTTPS only (plain HTTP to this machine's loopback excepted), and
    never follows a redirect."""
    parts = urlsplit(url)
    if user and parts.scheme != "https" and not _loopback(parts.hostname or ""):
        raise JournalError(
            f"{url}: a password is sent over https:// only (or to 127.0.0.1); no anchors fetched"
        )
    request = urllib.request.Request(url, headers={"Accept": "application/x-ndjson"})
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=TIMEOUT_S) as reply:
            text = reply.read(4_000_000).decode("utf-8")
    except urllib.error.HTTPError as exc:
        why = {
            401: "login refused",
            403: "not allowed",
            404: "the control site holds no such batch",
        }
        raise JournalError(
            f"{url}: {why.get(exc.code, f'HTTP {exc.code}')}; no anchors fetched"
        ) from None
    except (urllib.error.URLError, OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JournalError(f"{url}: cannot fetch anchors ({reason})") from None
    except http.client.HTTPException as exc:  # not HTTP at all (an SSH or MQTT port)
        raise JournalError(f"{url}: no HTTP answer ({type(exc).__name__})") from None
    return parse_anchors(text.splitlines(), url)


def load_anchors(value: str, journal: Path, password: str | None = None) -> list[Anchor]:
    """Anchors from a file path or a control-site URL (``password`` for the URL's user)."""
    if not is_url(value):
        return read_anchors(Path(value))
    url, user = anchors_url(value, journal)
    return fetch_anchors(url, user, password or "")
