"""Faults a twin device shows on the wire, as a real misbehaving device would show them.

Every twin server holds one :class:`LinkFaults` (``server.link``) and consults
it on each request. Tests and scenario files set its fields; nothing on the
driver side can see them except through what arrives (or does not) on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LinkFaults"]


@dataclass
class LinkFaults:
    """Link-level faults of one device."""

    silent: bool = False  # the device stops answering (requests are read, nothing comes back)
    delay_s: float = 0.0  # every reply comes this much batch time late
    corrupt_every: int = 0  # every Nth reply is corrupted (bad CRC, garbled ASCII); 0 = never
    _replies: int = field(default=0, repr=False)

    def corrupt_next(self) -> bool:
        """Count one reply; True when this one must be corrupted."""
        self._replies += 1
        return self.corrupt_every > 0 and self._replies % self.corrupt_every == 0

    def clear(self) -> None:
        """The device is healthy again."""
        self.silent, self.delay_s, self.corrupt_every = False, 0.0, 0
