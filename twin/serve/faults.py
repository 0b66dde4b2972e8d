"""Faults a twin device shows on the wire, as a real misbehaving device would show them.

Every twin server holds one :class:`LinkFaults` (``server.link``) and consults
it on each request. Tests and scenario files set its fields; nothing on the
driver side can see them except through what arrives (or does not) on the wire.

What "corrupt" means depends on the link, because each link has its own way of
showing damage: an RTU frame fails its CRC (:func:`bad_crc`), an ASCII reply
arrives with line noise in it (:func:`garble_ascii`), and Modbus TCP, which has
no CRC of its own (TCP delivers bytes intact), shows a broken gateway or device
stack: a malformed frame, a frame cut short, or a reply to another transaction
(:func:`corrupt_tcp`, chosen by ``corrupt_mode``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["TCP_CORRUPT_MODES", "LinkFaults", "bad_crc", "corrupt_tcp", "garble_ascii"]

TcpCorruptMode = Literal["garble", "short", "tid"]
TCP_CORRUPT_MODES: tuple[TcpCorruptMode, ...] = ("garble", "short", "tid")


@dataclass
class LinkFaults:
    """Link-level faults of one device."""

    silent: bool = False  # the device stops answering (requests are read, nothing comes back)
    delay_s: float = 0.0  # every reply comes this much batch time late
    corrupt_every: int = 0  # every Nth reply is corrupted (bad CRC, garbled ASCII); 0 = never
    corrupt_mode: TcpCorruptMode = "garble"  # Modbus TCP only: how a corrupted reply is broken
    _replies: int = field(default=0, repr=False)

    def corrupt_next(self) -> bool:
        """Count one reply; True when this one must be corrupted."""
        self._replies += 1
        return self.corrupt_every > 0 and self._replies % self.corrupt_every == 0

    def clear(self) -> None:
        """The device is healthy again."""
        self.silent, self.delay_s, self.corrupt_every = False, 0.0, 0
        self.corrupt_mode = "garble"

    @property
    def healthy(self) -> bool:
        """No fault set: servers take their fast path."""
        return not (self.silent or self.delay_s > 0.0 or self.corrupt_every > 0)


def garble_ascii(reply: bytes) -> bytes:
    """Line noise on an ASCII reply: every 4th character loses its meaning; CR and LF stay.

    Setting bit 7 gives bytes no ASCII device sends, so a careful driver sees a
    damaged frame rather than a plausible wrong number; frame boundaries survive,
    so the driver is not also left waiting. Deterministic: a scenario replays
    the same bytes.
    """
    return bytes(b | 0x80 if i % 4 == 0 and b not in (10, 13) else b for i, b in enumerate(reply))


def bad_crc(frame: bytes) -> bytes:
    """A Modbus RTU frame whose CRC no longer matches (both CRC bytes inverted)."""
    if len(frame) < 3:
        return frame
    return frame[:-2] + bytes(b ^ 0xFF for b in frame[-2:])


def corrupt_tcp(frame: bytes, mode: TcpCorruptMode) -> bytes:
    """A broken Modbus TCP reply (MBAP header + PDU).

    ``garble``: the PDU's byte count disagrees with the data that follows (a
    damaged device stack); ``short``: the frame stops half way (the device reset
    mid-reply), so the client waits for the rest; ``tid``: the reply carries
    another transaction id (a gateway answering a stale request).
    """
    if len(frame) < 8:
        return frame
    if mode == "short":
        return frame[: max(7, len(frame) // 2)]
    if mode == "tid":
        tid = (int.from_bytes(frame[0:2], "big") + 0x1000) & 0xFFFF
        return tid.to_bytes(2, "big") + frame[2:]
    # garble: function code with the exception bit and an undefined exception layout,
    # or, for a read reply, a byte count that does not fit the frame
    if len(frame) > 8 and frame[7] in (1, 2, 3, 4, 23):
        return frame[:8] + bytes([(frame[8] + 7) & 0xFF]) + frame[9:]
    return frame[:7] + bytes([0x7F]) + frame[8:]
