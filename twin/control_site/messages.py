"""What a site may send the control site, checked before anything is queued or stored.

One message from one logged-in site once stopped all ingest: an event without
``seq`` failed every later flush, a 400 KB nest of brackets blew Python's
recursion limit, a batch name with a space broke the ack. So every message is
read in a fixed order, each step bounded whatever the input:

1. the topic: every level a safe name (:func:`twin.telemetry.topics.check_topic`);
2. the size, before anything is parsed (``MAX_PAYLOAD_BYTES``);
3. the nesting depth, by a flat scan of the bytes, no recursion (``MAX_DEPTH``);
4. JSON, refusing ``NaN``, ``Infinity`` and numbers too large to be finite;
5. the schema of its kind (pydantic), so the store and the dashboard get the
   fields and types they use.

A message that fails becomes a :class:`Poison` (where, why, an excerpt) for the
quarantine table; a good one becomes a :class:`SiteMessage` carrying the body
exactly as sent (coercing a value would change the hash the store recomputes).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from twin.telemetry.topics import ROOT, SCHEMA_VERSION, TelemetryError, check_topic

__all__ = [
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "Poison",
    "SiteMessage",
    "check_message",
    "nesting_depth",
    "refused_by_store",
    "shown",
]

#: Largest payload read (the largest real event, a recipe's batch_started, is ~4 KB).
MAX_PAYLOAD_BYTES = 128 * 1024
#: Deepest nesting of objects and arrays (real messages reach 5).
MAX_DEPTH = 32
#: Bytes of a refused payload kept for whoever investigates it.
EXCERPT_BYTES = 300
_MAX_SEQ = 2**63 - 1  # BIGINT

#: A JSON string, or an unterminated one to the end of the payload: always matching once a
#: quote is seen keeps the scan linear (a closing quote required made re.sub start over at
#: every escaped quote of an unterminated string: ~50 s on the loop for 128 KB).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _printable(value: str) -> str:
    """No control characters or lone surrogates: PostgreSQL, hashing and pages choke on them."""
    if not value.isprintable():
        raise ValueError("contains control characters")
    return value


def _text(limit: int) -> Any:
    return Annotated[str, Field(strict=True, max_length=limit), AfterValidator(_printable)]


Short = _text(200)
Long = _text(2000)
Word = _text(64)
StateName = _text(40)
Hex64 = Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]
Seq = Annotated[int, Field(strict=True, ge=0, le=_MAX_SEQ)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Body(BaseModel):
    """Every payload: schema version 1; fields a reader does not know are ignored."""

    model_config = ConfigDict(extra="allow")
    v: Literal[1]


class EventBody(_Body):
    """One journal event, with everything its hash covers."""

    seq: Annotated[int, Field(strict=True, ge=1, le=_MAX_SEQ)]
    batch_time: Finite
    wall_time: Word
    kind: Word
    source: Short
    data: dict[str, Any]
    prev_hash: Hex64
    hash: Hex64


class Alarm(BaseModel):
    """An alarm as the dashboard lists it (it shows the last one's message)."""

    model_config = ConfigDict(extra="allow")
    seq: Seq | None = None
    source: Short = ""
    message: Long


class StateBody(_Body):
    """A batch's retained state: what the overview shows per batch."""

    state: StateName
    #: The state as the batch words it ("Running (unit:x Held)"); sites before it: none.
    status: Long | None = None
    seq: Seq
    phase: Short = "-"
    batch_time: Finite = 0.0
    day: Finite | None = None
    pv: Annotated[dict[Short, Finite | None], Field(max_length=50)] = {}
    alarms: Annotated[list[Alarm], Field(max_length=100)] = []
    #: Every alarm raised, and those not acknowledged (``alarms`` lists only the latest).
    alarms_raised: Seq | None = None
    alarms_unacknowledged: Seq | None = None
    hold_reason: Long = ""
    status_reason: Long = ""
    recipe: Short = ""
    ended: Annotated[bool, Field(strict=True)] = False


class HeadBody(_Body):
    """A journal's chain head, signed or plain."""

    seq: Seq
    hash: Hex64
    signature: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{2,512}$")] | None = None
    key_id: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{1,64}$")] | None = None


class StatusBody(_Body):
    """Online or offline (the last will), or a site's own suspension probe."""

    online: Annotated[bool, Field(strict=True)] = False
    why: Long = ""
    probe: Short | None = None
    #: An ended batch's forwarder answered every request it took (a site that answers):
    #: one still unanswered never reached the batch. Absent from older sites.
    answered: Annotated[bool, Field(strict=True)] = False


class AnswerBody(_Body):
    """A site's answer to one request: what became of it (docs/telemetry.md)."""

    id: Annotated[str, Field(strict=True, pattern=r"^[0-9A-Za-z_.-]{1,64}$")]
    status: Literal["accepted", "refused", "invalid", "not delivered"]
    outcome: Long = ""
    state: Short = ""


_SCHEMAS: dict[str, type[_Body]] = {
    "event": EventBody,
    "state": StateBody,
    "head": HeadBody,
    "status": StatusBody,
    "answer": AnswerBody,
}


class SiteMessage(NamedTuple):
    """A message that passed every check, as the store ingests it."""

    site: str
    unit: str
    batch: str
    kind: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Poison:
    """A message refused, for the quarantine table and the dashboard (all text printable)."""

    site: str
    topic: str
    kind: str
    reason: str
    excerpt: str
    size: int


def refused_by_store(message: SiteMessage, why: str) -> Poison:
    """A message that passed every check but that the store still refused, for quarantine."""
    site, unit, batch, kind, body = message
    text = json.dumps(body, separators=(",", ":"))
    return Poison(
        shown(site, 100),
        shown(f"{ROOT}/{site}/{unit}/{batch}/{kind}"),
        kind,
        shown(f"the store refused it: {why}", 500),
        shown(text, EXCERPT_BYTES),
        len(text),
    )


def shown(text: str, limit: int = 300) -> str:
    """``text`` safe to store and show: control characters escaped, cut at ``limit``."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def nesting_depth(payload: bytes) -> int:
    """Deepest ``[``/``{`` nesting outside strings: a flat scan, no recursion, C speed.

    Strings are cut out first (a bracket in a string does not nest), every other
    byte but brackets dropped, opening ones mapped to +1 and closing ones to -1
    (signed bytes), and the deepest running sum is the depth.
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", payload)).translate(_STEPS)
    return max(itertools.accumulate(memoryview(brackets).cast("b")), default=0)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _parse(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object, every bound checked first; ValueError says which failed."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    if nesting_depth(payload) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(body, dict):
        raise ValueError(f"a JSON {type(body).__name__}, not an object")
    if body.get("v") != SCHEMA_VERSION:
        raise ValueError(f"schema version {body.get('v')!r}, this control site reads 1")
    return body


def _schema_errors(kind: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"not a valid {kind} message: {'; '.join(parts)}{more}"


def check_message(topic: str, payload: bytes | bytearray) -> SiteMessage | Poison:
    """A message read in the order above: the first check that fails is the reason."""
    payload = bytes(payload)
    parts = topic.split("/")
    site, kind = (parts[1] if len(parts) > 1 else "?"), parts[-1]

    def poison(reason: str) -> Poison:
        excerpt = payload[:EXCERPT_BYTES].decode("utf-8", errors="replace")
        return Poison(
            shown(site, 100),
            shown(topic),
            shown(kind, 40),
            shown(reason, 500),
            shown(excerpt, EXCERPT_BYTES),
            len(payload),
        )

    try:
        site, unit, batch, kind = check_topic(topic)
    except TelemetryError as exc:
        return poison(str(exc))
    if kind != "status" and "-" in (unit, batch):
        return poison(f"a {kind} message must name its unit and batch")
    try:
        body = _parse(payload)
    except (ValueError, RecursionError, MemoryError) as exc:
        return poison(str(exc) or type(exc).__name__)
    try:
        _SCHEMAS[kind].model_validate(body)
    except ValidationError as exc:
        return poison(_schema_errors(kind, exc))
    except Exception as exc:  # whatever a check missed must quarantine, not end ingest
        return poison(f"could not be checked: {type(exc).__name__}: {exc}")
    return SiteMessage(site, unit, batch, kind, body)
