"""The station re-forecasts a running batch after each new sample (``station serve
--forecast-spec``).

It runs ``poc-twin forecast JOURNAL`` as a child process, one at a time per batch, when
the batch has a sample its latest forecast has not seen; the forecast is kept beside
the journal, where the batch page (and the site's forwarder) read it. The first
forecast of a batch builds its library of twin batches (minutes, on a local Dask
cluster or the scheduler given); later ones reuse it and take about a second.
A forecast that fails is not retried until the next sample.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from twin.station.board import BatchBoard

__all__ = ["Forecaster"]

log = logging.getLogger(__name__)


@dataclass
class Forecaster:
    """Keeps each running batch's forecast up to date with its samples."""

    spec: Path
    members: int = 200
    seed: int = 0
    scheduler: str | None = None
    _running: dict[Path, asyncio.Task[int]] = field(default_factory=dict)
    _tried: dict[Path, int] = field(default_factory=dict)  # samples seen by the last attempt

    def due(self, board: BatchBoard) -> bool:
        """A running batch with a sample its latest forecast (or attempt) has not seen."""
        if board.ended or not board.started or board.samples == 0:
            return False
        if board.path in self._running:
            return False
        seen = board.forecast.get("samples_used") if board.forecast else None
        tried = self._tried.get(board.path)
        return (seen is None or board.samples > int(seen)) and tried != board.samples

    def poll(self, boards: list[BatchBoard]) -> list[asyncio.Task[int]]:
        """Start a forecast for every batch that is due; the tasks started."""
        started = []
        for board in boards:
            if self.due(board):
                self._tried[board.path] = board.samples
                task = asyncio.create_task(self._forecast(board.path))
                self._running[board.path] = task
                task.add_done_callback(lambda _t, p=board.path: self._running.pop(p, None))
                started.append(task)
        return started

    async def _forecast(self, journal: Path) -> int:
        args = [
            "forecast", str(journal), "--spec", str(self.spec),
            "--members", str(self.members), "--seed", str(self.seed),
        ]  # fmt: skip
        if self.scheduler:
            args += ["--scheduler", self.scheduler]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from twin.cli import main; main()",
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate()
        if proc.returncode != 0:
            log.warning("forecast of %s failed: %s", journal.name, stderr.decode()[-500:])
        return int(proc.returncode or 0)

    async def close(self) -> None:
        """Wait for the forecasts under way (a forecast killed half-way keeps its library)."""
        for task in list(self._running.values()):
            await asyncio.gather(task, return_exceptions=True)
