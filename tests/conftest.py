"""Every async test runs on the virtual-time loop: no real sleeps, a 10-day batch in seconds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twin.clock import VirtualTimeLoop


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Any]:
    return {"virtual": VirtualTimeLoop}
