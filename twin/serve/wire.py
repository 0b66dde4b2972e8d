"""Time on the wire: how long a serial exchange really takes at a given baud and framing.

A pseudo-terminal moves bytes instantly whatever baud it is set to, so the twin
charges every frame its real character time on the virtual clock. Modbus RTU
also requires a silent interval of 3.5 character times after each frame
(Modbus over Serial Line V1.02, 2.5.1.1; fixed at 1.75 ms above 19200 baud).
"""

from __future__ import annotations

__all__ = ["FRAMING_BITS", "bits_per_char", "char_time_s", "frame_time_s", "wire_time_s"]

FRAMING_BITS = {"8N1": 10, "7E1": 10, "7O1": 10, "8E1": 11, "8O1": 11, "8N2": 11, "8E2": 12}
"""Bits on the line per character: start bit + data bits + parity + stop bits."""

RTU_FIXED_GAP_S = 0.00175  # t3.5 above 19200 baud (Modbus over Serial Line, 2.5.1.1)


def bits_per_char(framing: str) -> int:
    """Bits per character of a framing such as ``8N1`` or ``8E1``."""
    try:
        return FRAMING_BITS[framing.upper()]
    except KeyError:
        known = ", ".join(FRAMING_BITS)
        raise ValueError(f"unknown serial framing {framing!r}; known: {known}") from None


def char_time_s(baud: int, bits: int) -> float:
    """Seconds one character occupies the line."""
    if baud <= 0 or bits <= 0:
        raise ValueError(f"baud and bits per character must be positive, not {baud}, {bits}")
    return bits / baud


def frame_time_s(n_bytes: int, baud: int, bits: int, *, rtu: bool = False) -> float:
    """One frame on the line, plus the RTU 3.5-character silence that ends it."""
    t = n_bytes * char_time_s(baud, bits)
    if rtu:
        t += RTU_FIXED_GAP_S if baud > 19200 else 3.5 * char_time_s(baud, bits)
    return t


def wire_time_s(
    request_bytes: int, reply_bytes: int, baud: int, bits_per_char: int, rtu: bool = False
) -> float:
    """A whole request/reply exchange: both frames (and for RTU both silent intervals).

    At 19200 baud 8E1 a 10-register read (8-byte request, 25-byte reply) takes
    33 x 11/19200 + 2 x 3.5 x 11/19200 s = 22.9 ms.
    """
    return frame_time_s(request_bytes, baud, bits_per_char, rtu=rtu) + frame_time_s(
        reply_bytes, baud, bits_per_char, rtu=rtu
    )
