"""Conformance-kit tests run on the virtual clock and must close every server, port and task."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
async def _no_leaks(no_task_leaks: None) -> None:
    """Every kit run must close what it opened: servers, ports, tasks."""
