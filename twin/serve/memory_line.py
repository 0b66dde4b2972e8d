"""A twin serial device on a null-modem port (``memory://NAME``) instead of a pseudo-terminal.

Everything a :class:`~twin.serve.pty.PtyEndpoint` does to the bytes stays:
lines split at CR, overlong lines cut, answers strictly in order, the wire time
of request and reply charged on the clock before the reply is handed over, the
link's faults (silence, garbling, delay). Only the carrier differs: the driver's
write reaches :meth:`_take` within the call, and the reply reaches the driver's
buffer within the timer that ends its wire time, so an exchange costs no system
call and no poll. Used by a bench whose twin says ``transport: in_process``.

When the virtual loop would do nothing else before the reply is due, nor the driver's
deadline (which it arms as a timer only if the reply is not in by the end of its write:
``HostEnd.deadline``), the reply is handed over at once and the clock moved to its time
(:meth:`VirtualTimeLoop.run_ahead`): the driver's task then goes on without being
suspended and resumed, with the same batch times.
"""

from __future__ import annotations

import asyncio

from drivers import null_modem
from twin.clock import VirtualTimeLoop
from twin.serve.pty import PtyEndpoint

__all__ = ["MemoryLineEndpoint"]


class MemoryLineEndpoint(PtyEndpoint):
    """A serial device endpoint on a null modem: same framing and timing as on a pty."""

    _device: null_modem.DeviceEnd | None = None

    @property
    def path(self) -> str:
        if self._device is None:
            raise RuntimeError(f"{self.name}: memory endpoint not started")
        return self._device.path

    async def start(self) -> None:
        """Listen on a fresh ``memory://`` name."""
        if self._device is None:
            self._loop = asyncio.get_running_loop()
            self._device = null_modem.listen(f"twin-{self.name}", self._received)
            self._reading = True  # always: no kernel buffer to pause (see _pause_reading)

    async def close(self) -> None:
        """Stop answering; the name disappears."""
        await super().close()
        device, self._device = self._device, None
        if device is not None:
            device.close()

    def _received(self, data: bytes) -> None:
        last = len(data) - 1
        if (
            data.find(b"\r") == last >= 0  # one CR, the last byte
            and last <= self.max_line
            and b"\n" not in data
            and not (self._inbuf or self._skipped or self._lead)
        ):  # one whole request line, as a driver writes it: what _take makes of it
            if last:
                self._lines.append((data[:-1], last + 1))
        else:
            self._take(data)
        self._answer_next()

    def _pause_reading(self) -> None:
        """A null modem has no kernel buffer to leave a flood in: lines queue here."""

    def _resume_reading(self) -> None:
        """See :meth:`_pause_reading`."""

    def _write(self, data: bytes) -> None:
        if self._device is not None:
            self._device.write(data)

    def _deliver_at(self, when: float, reply: bytes) -> None:
        """Hand the reply over at ``when`` without a timer when the virtual loop would do
        nothing else before then, the driver's deadline included
        (:meth:`~twin.clock.VirtualTimeLoop.run_ahead`): time moves to ``when`` and the
        driver, which set up its wait before writing, finds its reply as it comes to wait;
        its task is not suspended and resumed once per exchange (about 70,000 times a
        batch), and it arms no timeout timer. Lines queued behind are answered next by the
        caller, as :meth:`_deliver` would."""
        loop, device = self._loop, self._device
        if (
            isinstance(loop, VirtualTimeLoop)
            and device is not None
            and loop.run_ahead(when, device.reader_deadline)
        ):
            self._write(reply)
            return
        if device is not None:
            device.before_timer()  # the driver's deadline first, as if armed before writing
        super()._deliver_at(when, reply)

    def _deliver(self, reply: bytes) -> None:
        self._timer = None
        if self._device is not None:
            self._write(reply)
            self._answer_next()
