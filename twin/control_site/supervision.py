"""Requests to sites (hold a batch, acknowledge one of its alarms, suspend or reinstate a
site), checked and audited.

Every request an authenticated user makes is written to the ``requests`` table
with the user, the reason and its outcome, refused ones included: the audit
shows who tried to hold an ended batch as well as who held a running one. A
request is audited *before* it is sent (an audit that cannot be written stops
it), so nothing reaches a site that the control site has no record of.

A request that cannot be sent is refused with :class:`RequestRefused`, whose
``status`` is the HTTP answer: 400 a name that is not a safe name, 404 a site or
batch the control site has never heard of, 409 a batch that has ended, 503 no
broker or no database. The dashboard never answers such a request with 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable

import aiomqtt

from twin.clock import wall_seconds
from twin.control_site.ingest import Ingest
from twin.control_site.messages import shown
from twin.names import UnsafeName, check_safe_name
from twin.telemetry.topics import TelemetryError

__all__ = ["NOT_HOLDABLE", "RequestRefused", "Supervision", "held_below", "no_hold_why"]

log = logging.getLogger(__name__)

#: States in which a hold request makes no sense: the batch is held already or ending
#: (STATE_MODEL.md). In any other the request is sent and the batch decides: the state
#: the control site holds may be a second behind the site's, and a hold is not refused
#: on a guess.
NOT_HOLDABLE = frozenset(
    {"Holding", "Held", "Stopping", "Stopped", "Aborting", "Aborted", "Complete"}
)

#: A state below the procedure that is a hold already (or ends its element): a hold of the
#: batch is not offered over it; its operators restart it (or decide) at its level.
_HELD_BELOW = frozenset({"Holding", "Held", "Stopping", "Aborting"})
#: "Running (unit:x Held)", as ``Batch.status`` names a lower element not running.
_BELOW = re.compile(r"\w+ \((?P<element>(?:unit|operation|phase):\S+) (?P<state>\w+)\)")


def held_below(status: str) -> str | None:
    """The element below the procedure that a batch's status names held (holding, or being
    stopped or aborted), as "unit:x Held"; None when there is none."""
    match = _BELOW.fullmatch(status or "")
    if match is None or match["state"] not in _HELD_BELOW:
        return None
    return f"{match['element']} {match['state']}"


def no_hold_why(state: str, status: str, ended: bool) -> str | None:
    """Why a hold of a batch makes no sense (its state, as the batch words it), else None:
    it has ended, it is held or ending, or an element below the procedure is held."""
    if ended:
        return f"has ended {state}: there is nothing to hold"
    if state in NOT_HOLDABLE or held_below(status):
        return f"is {status or state}: there is nothing to hold"
    return None


class RequestRefused(TelemetryError):
    """A request to a site that the control site will not send; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Supervision:
    """The requests an authorised dashboard user may make, over the ingest's connection."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.store = ingest.store

    async def hold(self, site: str, batch: str, *, operator: str, reason: str) -> str:
        """Ask a site to hold one running batch; the batch records it as an operator command."""
        rid = uuid.uuid4().hex

        async def check() -> str:
            _safe(site, "site")
            _safe(batch, "batch")
            status = await asyncio.to_thread(self.store.batch_status, site, batch)
            if status is None:
                raise RequestRefused(f"no batch {batch} at site {site}", 404)
            unit, ended = status
            if ended:
                raise RequestRefused(
                    f"batch {batch} at site {site} has ended: there is nothing to hold", 409
                )
            state, shown = await asyncio.to_thread(self.store.batch_states, site, batch)
            why = no_hold_why(state, shown, ended=False)
            if why is not None:
                raise RequestRefused(f"batch {batch} at site {site} {why}", 409)
            return unit

        body = {"id": rid, "command": "hold", "operator": operator, "reason": reason}
        return await self._audited(
            rid, site, batch, "hold", operator, reason, check, "command", body, retain=False
        )

    async def check_acknowledge(self, site: str, batch: str, alarm_seq: int) -> str:
        """The batch's unit if its alarm ``alarm_seq`` may be acknowledged from here, else
        RequestRefused: no such batch or alarm (404), acknowledged already or ended (409)."""
        _safe(site, "site")
        _safe(batch, "batch")
        status = await asyncio.to_thread(self.store.batch_status, site, batch)
        if status is None:
            raise RequestRefused(f"no batch {batch} at site {site}", 404)
        unit, ended = status
        by = await asyncio.to_thread(self.store.alarm_acknowledged_by, site, batch, alarm_seq)
        if by is None:
            raise RequestRefused(f"event {alarm_seq} is not an alarm of batch {batch}", 404)
        if by:
            raise RequestRefused(f"alarm {alarm_seq} was acknowledged already by {by}", 409)
        if ended:
            raise RequestRefused(
                f"batch {batch} at site {site} has ended: its alarms are acknowledged at the "
                "site (poc-twin ack, signed into its journal)",
                409,
            )
        return unit

    async def acknowledge(
        self, site: str, batch: str, alarm_seq: int, *, operator: str, reason: str
    ) -> str:
        """Acknowledge one alarm of a running batch: it travels as a command and the batch
        journals the acknowledgement with who (``control-site:<user>``) and the comment."""
        rid = uuid.uuid4().hex
        body = {
            "id": rid,
            "command": "acknowledge",
            "alarm": alarm_seq,
            "operator": operator,
            "reason": reason,
        }
        return await self._audited(
            rid,
            site,
            batch,
            f"acknowledge alarm {alarm_seq}",
            operator,
            reason,
            lambda: self.check_acknowledge(site, batch, alarm_seq),
            "command",
            body,
            retain=False,
        )

    async def suspend(
        self,
        site: str,
        suspended: bool,
        *,
        operator: str,
        reason: str,
        only_a_change: bool = False,
    ) -> str:
        """Suspend (no new batch may start) or reinstate a site: retained, so it is never missed.

        Reinstating a site that is not suspended is sent all the same: it clears
        whatever retained suspension the broker may still hold for it. A person at the
        dashboard (``only_a_change``) is refused an act that changes nothing (suspending
        a suspended site, reinstating an active one): their page was out of date.
        """
        rid = uuid.uuid4().hex
        action = "suspend" if suspended else "reinstate"

        async def check() -> str:
            _safe(site, "site")
            if not await asyncio.to_thread(self.store.site_known, site):
                raise RequestRefused(
                    f"no site {site}: it has sent no batch, has no registered key and was "
                    "never suspended",
                    404,
                )
            if only_a_change:
                now = await asyncio.to_thread(self.store.site_suspended, site)
                if now == suspended:
                    is_now = "suspended" if now else "active (not suspended)"
                    raise RequestRefused(f"site {site} is already {is_now}: nothing sent", 409)
            return "-"

        body = {"id": rid, "suspended": suspended, "operator": operator, "reason": reason}
        return await self._audited(
            rid, site, "-", action, operator, reason, check, "suspension", body, retain=True
        )

    async def refuse(
        self, site: str, batch: str, action: str, operator: str, reason: str, why: str
    ) -> None:
        """Audit a request refused before it was checked (its signature failed): the audit
        shows who tried to act, not only who did."""
        await self._record(
            uuid.uuid4().hex, shown(site, 100), shown(batch, 100), action, operator, reason, why
        )

    async def _audited(
        self,
        rid: str,
        site: str,
        batch: str,
        action: str,
        operator: str,
        reason: str,
        check: Callable[[], Awaitable[str]],
        kind: str,
        body: dict[str, object],
        *,
        retain: bool,
    ) -> str:
        """Check, audit, send, and record the outcome; RequestRefused for every failure."""
        shown_site, shown_batch = shown(site, 100), shown(batch, 100)
        try:
            unit = await check()
        except RequestRefused as exc:
            await self._record(rid, shown_site, shown_batch, action, operator, reason, f"{exc}")
            raise
        if not await self._record(rid, site, batch, action, operator, reason, "sending"):
            raise RequestRefused("the request could not be audited, so it was not sent", 503)
        try:
            await self.ingest.publish_request(
                site, unit, batch, kind, {**body, "at": wall_seconds()}, retain=retain
            )
        except (aiomqtt.MqttError, TelemetryError) as exc:
            await self._settle(rid, f"not sent: {exc}")
            raise RequestRefused(f"not sent: {exc}", 503) from None
        await self._settle(rid, "sent")
        return rid

    async def _record(self, rid: str, *row: str) -> bool:
        try:
            await asyncio.to_thread(self.store.record_request, rid, *row)
        except Exception:  # the store's driver has its own error types
            log.exception("could not audit request %s", rid)
            return False
        return True

    async def _settle(self, rid: str, outcome: str) -> None:
        try:
            await asyncio.to_thread(self.store.settle_request, rid, outcome)
        except Exception:  # the request went out (or not) all the same; the row says "sending"
            log.exception("could not record the outcome of request %s: %s", rid, outcome)


def _safe(name: str, what: str) -> None:
    try:
        check_safe_name(name, what)
    except UnsafeName as exc:
        raise RequestRefused(str(exc), 400) from None
