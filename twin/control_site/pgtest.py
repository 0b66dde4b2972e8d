"""A throwaway PostgreSQL cluster (initdb + pg_ctl) for the tests and the fleet benchmark.

PostgreSQL refuses to run as root, so as root the cluster belongs to the
``postgres`` user (created by the Debian package) and lives in a directory
under /tmp that user can reach; the server listens on loopback only, trust auth.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from twin.telemetry.broker import free_port
from twin.telemetry.topics import TelemetryError

__all__ = ["TempPostgres"]


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise TelemetryError("PostgreSQL is not installed: run 'make system-deps'")
    return found


class TempPostgres:
    """``with TempPostgres() as pg: pg.url``: a fresh cluster, removed afterwards."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="poc-twin-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise TelemetryError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-400:]}")

    def __enter__(self) -> TempPostgres:
        self._run(
            _bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
