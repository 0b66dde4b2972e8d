"""One Modbus client per wire, shared by every device on it, with an industrial retry policy.

A TCP endpoint (host:port) or an RS-485 port carries one request at a time: on
a multi-drop bus a second request before the first reply corrupts both. So all
devices on one endpoint share one :class:`ModbusLink` (one pymodbus client, one
lock), and each exchange on it is bounded, retried and counted:

- each attempt has its own timeout on the batch clock; ``retries`` more follow;
- a reply with a bad CRC (RTU) or one that does not answer the request is
  counted and retried at once, not waited out;
- a lost connection (port gone, socket reset) is reopened: the first attempt
  of each call tries at once, further opens in the call back off on the batch
  clock (doubling up to ``reconnect_max_s``, failing fast beyond one timeout);
- a Modbus exception reply is the device's answer: :class:`ModbusRefused` (a
  ``DeviceRefused`` naming the code, e.g. "Modbus exception 0x03 ILLEGAL DATA
  VALUE", with ``.code``), never retried;
- the whole call, waiting for the bus included, ends within the device's
  ``watchdog_s``: a device that stops answering is reported, naming it, in time
  for the engine to hold the batch.

pymodbus's own retries and background reconnects are switched off: the policy
is ours, so the counters are true and the clock sees every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import ModbusPDU

from drivers.modbus_null_modem import NULLMODEM_HOST, NullModemClient
from drivers.settings import LinkSettings, ModbusEndpoint, SerialPortSettings, TcpSettings
from twin.clock import Clock
from twin.errors import CommunicationError, DeviceRefused

__all__ = [
    "EXCEPTION_NAMES",
    "LinkCounters",
    "ModbusLink",
    "ModbusRefused",
    "RawRequest",
    "open_modbus_link",
    "raw_tcp_exchange",
]

EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}

_LINKS: dict[tuple[int, str], ModbusLink] = {}

Client = AsyncModbusTcpClient | AsyncModbusSerialClient | NullModemClient
Request = Callable[[Client], Awaitable[ModbusPDU]]
Check = Callable[[ModbusPDU], bool]


@dataclass
class LinkCounters:
    """What one device's traffic cost: shown by ``bench check``, read by tests and benchmarks."""

    transactions: int = 0  # exchanges that got a valid answer (exception replies included)
    retries: int = 0  # extra attempts after a timeout, bad frame or lost connection
    timeouts: int = 0  # attempts with no complete answer in time
    crc_errors: int = 0  # answers with a bad CRC or that did not answer the request
    reconnects: int = 0  # connections (re)opened after the first
    exceptions: int = 0  # Modbus exception replies
    failures: int = 0  # calls that ended in CommunicationError

    def as_dict(self) -> dict[str, int]:
        """For display and the journal."""
        return asdict(self)


class ModbusRefused(DeviceRefused):
    """A Modbus exception reply; ``code`` lets a caller tell 0x02 from 0x03 without parsing."""

    def __init__(self, device: str, message: str, code: int) -> None:
        super().__init__(device, message)
        self.code = code


class RawRequest(ModbusPDU):
    """A request PDU sent exactly as given, unchecked: conformance kits probe a device with
    requests no typed call sends (a quantity of 0, a function the device does not list)."""

    def __init__(self, pdu: bytes, dev_id: int) -> None:
        super().__init__(dev_id=dev_id)
        self.function_code = pdu[0]
        self._data = pdu[1:]

    def encode(self) -> bytes:
        """The PDU after its function code, as given."""
        return self._data


async def raw_tcp_exchange(
    host: str, port: int, frame: bytes, clock: Clock, timeout_s: float
) -> tuple[bytes, bool]:
    """Send ``frame`` as raw bytes on a connection of its own; returns what came back and
    whether the device closed the connection within ``timeout_s``. For conformance checks
    of framing (a malformed MBAP header), which no Modbus client can send."""
    reader, writer = await asyncio.open_connection(host, port)
    received = b""
    closed = False
    try:
        writer.write(frame)
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            async with clock.timeout(timeout_s):
                while chunk := await reader.read(260):
                    received += chunk
                closed = True
    except ConnectionError:
        closed = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received, closed


class _BadFrame(Exception):
    """An answer arrived but is unusable (bad CRC)."""


class ModbusLink:
    """One endpoint's pymodbus client and the lock that serialises every exchange on it."""

    def __init__(self, endpoint: ModbusEndpoint, clock: Clock) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._opened = 0
        self._backoff = 0.0
        self._next_open = -float("inf")
        self._users = 0
        self._attempt_crc = False

    @property
    def where(self) -> str:
        """Endpoint for messages: ``host:port`` or the serial port."""
        return self.endpoint.describe()

    def _make_client(self) -> Client:
        ep = self.endpoint
        common: dict[str, Any] = {
            # Our own per-attempt timeout governs (on the batch clock); without one of its
            # own pymodbus awaits the reply future directly instead of through wait_for
            # (a second timer and two futures per exchange).
            "timeout": None,
            "retries": 0,
            "reconnect_delay": 0,  # no background reconnect task: we reopen on demand
            "name": self.where,
        }
        if isinstance(ep, TcpSettings):
            if ep.host == NULLMODEM_HOST:  # a device in this process: PDUs, not bytes
                return NullModemClient(ep.port, **common)
            return AsyncModbusTcpClient(ep.host, port=ep.port, **common)
        assert isinstance(ep, SerialPortSettings)
        return AsyncModbusSerialClient(
            ep.port,
            baudrate=ep.baud,
            parity=ep.parity,
            stopbits=ep.stopbits,
            bytesize=ep.bytesize,
            trace_packet=self._trace,
            **common,
        )

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """Spot a complete RTU frame with a bad CRC and fail the attempt at once."""
        if sending or self._client is None or len(data) < FramerRTU.MIN_SIZE:
            return data
        ctx = self._client.ctx
        pdu_class = ctx.framer.decoder.lookupPduClass(data)
        size = pdu_class.calculateRtuFrameSize(data) if pdu_class else 0
        if size and len(data) >= size:
            crc = int.from_bytes(data[size - 2 : size], "big")
            if not FramerRTU.check_CRC(data[: size - 2], crc):
                self._attempt_crc = True
                future = ctx.response_future
                if not future.done():
                    future.set_exception(_BadFrame(f"bad CRC in {data[:size].hex(' ')}"))
        return data

    async def _connected(self, counters: LinkCounters, s: LinkSettings) -> Client:
        """The open client, reopened if needed; a failed open backs off on the batch clock."""
        client = self._client
        if client is not None and client.connected:
            return client
        wait = self._next_open - self._clock.now()
        if wait > s.timeout_s:  # fail fast: do not hammer a device that is away
            raise ConnectionError(f"cannot connect to {self.where} (next try in {wait:.3g} s)")
        if wait > 0.0:
            await self._clock.sleep(wait)
        if client is None:
            client = self._client = self._make_client()
        if not await client.connect() or not client.connected:
            client.close()
            self._backoff = min(max(2.0 * self._backoff, s.reconnect_s), s.reconnect_max_s)
            self._next_open = self._clock.now() + self._backoff
            raise ConnectionError(f"cannot connect to {self.where}")
        if self._opened:
            counters.reconnects += 1
        self._opened += 1
        self._backoff = 0.0
        return client

    def _drop(self) -> None:
        """Forget the connection: the next attempt reopens it."""
        if self._client is not None:
            self._client.close()

    async def transact(
        self,
        device: str,
        settings: LinkSettings,
        counters: LinkCounters,
        what: str,
        request: Request,
        check: Check | None = None,
        *,
        retries: int | None = None,
    ) -> ModbusPDU:
        """One exchange under the retry policy; raises CommunicationError or DeviceRefused."""
        tries = (settings.retries if retries is None else retries) + 1
        try:
            return await self._clock.within(
                settings.watchdog(),
                self._transact(device, settings, counters, what, request, check, tries),
            )
        except TimeoutError:
            counters.failures += 1
            raise CommunicationError(
                device,
                f"{what}: no answer from {self.where} unit {settings.unit} within the "
                f"{settings.watchdog():g} s watchdog",
            ) from None

    async def _transact(
        self,
        device: str,
        s: LinkSettings,
        counters: LinkCounters,
        what: str,
        request: Request,
        check: Check | None,
        tries: int,
    ) -> ModbusPDU:
        last = "no attempt"
        async with self._lock:
            # Each new call may try to reconnect at once (a device that is back is used at
            # once); within a call, failed opens back off, and the backoff keeps growing
            # across calls, so a dead endpoint costs one connect per call.
            self._next_open = min(self._next_open, self._clock.now())
            for attempt in range(tries):
                if attempt:
                    counters.retries += 1
                try:
                    client = await self._connected(counters, s)
                except ConnectionError as exc:
                    last = str(exc)
                    continue
                self._attempt_crc = False
                try:
                    # Timers only for an exchange that waits: one in this process answers
                    # within the call (drivers/modbus_null_modem.py), ~1,400 times a day.
                    response = await self._clock.within(s.timeout_s, request(client))
                except TimeoutError:
                    if self._attempt_crc:
                        counters.crc_errors += 1
                        last = "only answers with a bad CRC"
                    else:
                        counters.timeouts += 1
                        last = f"no valid answer within {s.timeout_s:g} s"
                    continue
                except _BadFrame as exc:
                    counters.crc_errors += 1
                    last = str(exc)
                    continue
                except (ModbusException, OSError) as exc:
                    self._drop()
                    last = f"link error ({exc})"
                    continue
                if response.isError():
                    counters.transactions += 1
                    counters.exceptions += 1
                    code = int(getattr(response, "exception_code", 0))
                    name = EXCEPTION_NAMES.get(code, "unknown exception")
                    raise ModbusRefused(
                        device, f"{what}: Modbus exception {code:#04x} {name}", code
                    )
                if check is not None and not check(response):
                    counters.crc_errors += 1
                    last = f"answer does not match the request ({response})"
                    continue
                counters.transactions += 1
                return response
        counters.failures += 1
        if last.startswith("cannot connect"):
            raise CommunicationError(device, f"{last} ({what}, {tries} attempt(s))")
        raise CommunicationError(
            device,
            f"{what}: {last} from {self.where} unit {s.unit} ({s.timeout_s:g} s x {tries} tries)",
        )

    def release(self) -> None:
        """One device is done with the link; the last one closes it."""
        self._users -= 1
        if self._users <= 0:
            self._drop()
            self._client = None
            for key, link in list(_LINKS.items()):
                if link is self:
                    del _LINKS[key]


def open_modbus_link(endpoint: ModbusEndpoint, clock: Clock, *, device: str) -> ModbusLink:
    """The one link of this endpoint on this loop; refuses a second, different line setting."""
    key = (id(asyncio.get_running_loop()), endpoint.bus_key())
    link = _LINKS.get(key)
    if link is None:
        link = _LINKS[key] = ModbusLink(endpoint, clock)
    elif link.endpoint.line_settings() != endpoint.line_settings():
        raise CommunicationError(
            device,
            f"{endpoint.describe()} is already open with {link.endpoint.line_settings()}, "
            f"this device asks for {endpoint.line_settings()}",
        )
    link._users += 1
    return link
