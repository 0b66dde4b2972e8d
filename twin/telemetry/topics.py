"""The MQTT topic tree, the broker URL and the versioned JSON payloads (the wire contract).

Topics name the place: ``poc-twin/<site>/<unit>/<batch>/<kind>``. Site-wide
messages use ``-`` for unit and batch. Every payload is a JSON object with
``"v": SCHEMA_VERSION``; a reader ignores fields it does not know and refuses a
newer major version. The whole tree is documented in docs/telemetry.md.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twin.errors import PocTwinError
from twin.names import UnsafeName, check_safe_name

__all__ = [
    "ROOT",
    "SCHEMA_VERSION",
    "SITE_KINDS",
    "BrokerURL",
    "TelemetryError",
    "check_topic",
    "decode",
    "encode",
    "parse_topic",
    "topic",
]

ROOT = "poc-twin"
SCHEMA_VERSION = 1
#: What a site publishes: every journal event, retained state, retained chain head, online,
#: and its answer to each request (what became of it).
SITE_KINDS = ("event", "state", "head", "status", "answer")
#: What the control site publishes to a site: hold requests, retained ack and suspension.
CONTROL_KINDS = ("command", "ack", "suspension")


class TelemetryError(PocTwinError):
    """Telemetry or control-site configuration that cannot work (bad URL, bad name)."""


def _check_name(what: str, value: str) -> str:
    """A topic level must be a safe name (twin.names) or ``-`` for "none".

    A topic level names a batch on the dashboard, in the store and in the ack sent
    back; a space, a wildcard or a path in it broke each of those in turn.
    """
    if value == "-":
        return value
    try:
        return check_safe_name(value, what)
    except UnsafeName as exc:
        raise TelemetryError(f"{exc} (it names an MQTT topic level)") from None


def topic(site: str, unit: str, batch: str, kind: str) -> str:
    """The one place a topic string is made."""
    parts = [_check_name("site", site), _check_name("unit", unit), _check_name("batch", batch)]
    return "/".join([ROOT, *parts, kind])


def parse_topic(name: str) -> tuple[str, str, str, str] | None:
    """``(site, unit, batch, kind)`` of a poc-twin topic, or None for anything else."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != ROOT:
        return None
    return parts[1], parts[2], parts[3], parts[4]


def check_topic(name: str) -> tuple[str, str, str, str]:
    """``(site, unit, batch, kind)`` of a site's topic, every level checked; else TelemetryError.

    What a site publishes is read before use: the site is always named, unit and
    batch are safe names or ``-``, and the kind is one a site may send.
    """
    where = parse_topic(name)
    if where is None:
        raise TelemetryError(f"not a {ROOT}/<site>/<unit>/<batch>/<kind> topic")
    site, unit, batch, kind = where
    if site == "-":
        raise TelemetryError("a site's topic must name the site")
    _check_name("site", site)
    _check_name("unit", unit)
    _check_name("batch", batch)
    if kind not in SITE_KINDS:
        raise TelemetryError(f"kind {kind[:40]!r} is not one a site publishes")
    return where


def encode(kind: str, body: dict[str, Any]) -> bytes:
    """A payload on the wire: compact JSON with the schema version."""
    return json.dumps({"v": SCHEMA_VERSION, **body}, separators=(",", ":")).encode()


def decode(payload: bytes | bytearray | str) -> dict[str, Any] | None:
    """A payload read back, or None if it is not one we understand (never raises)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("v") != SCHEMA_VERSION:
        return None
    return body


@dataclass(frozen=True)
class BrokerURL:
    """``mqtt[s]://USER:PASS@HOST[:PORT]/?site=S&unit=U&ca=CA.pem``; the user is the site."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    ca: str | None
    site: str
    unit: str

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Read a broker URL; the site defaults to the user name (per-site credentials)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise TelemetryError(f"broker URL '{url}' must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise TelemetryError(f"broker URL '{url}' names no host")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        tls = parts.scheme == "mqtts"
        username = unquote(parts.username) if parts.username else None
        site = query.get("site") or username or "site"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=username,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca=query.get("ca"),
            site=_check_name("site", site),
            unit=_check_name("unit", query.get("unit", "unit-1")),
        )

    def tls_context(self) -> ssl.SSLContext | None:
        """Verify the broker against ``ca`` (or the system store); None for plain mqtt://."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client`` (host, port, credentials, TLS)."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "tls_context": self.tls_context(),
        }
