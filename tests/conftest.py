"""Every async test runs on the virtual-time loop: no real sleeps, a 10-day batch in seconds.

Shared fixtures: a plant, the clock, and the twin's bioreactor served over Modbus TCP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from site_users import Site, make_site

from twin.access.users import ENV_USERS
from twin.cli.esign import ENV_OPERATOR, ENV_PASSWORD_FILE
from twin.clock import Clock, VirtualTimeLoop
from twin.serve.bioreactor_modbus import BioreactorModbusServer
from twin.sim import Plant


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Any]:
    return {"virtual": VirtualTimeLoop}


@pytest.fixture
def plant() -> Plant:
    return Plant(seed=1)


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def no_task_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks behind (servers and clients must be closed)."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"leaked tasks: {leaked}"


@pytest.fixture(params=["big", "little"])
def word_order(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def server(
    plant: Plant, clock: Clock, word_order: str
) -> AsyncIterator[BioreactorModbusServer]:
    srv = BioreactorModbusServer(plant, clock, word_order=word_order)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture(scope="session")
def _site_users(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = make_site(tmp_path_factory.mktemp("site"))
    os.environ[ENV_USERS] = str(site.users)  # also for processes started by session fixtures
    # runs on the twin (a development bench) are an engineer's signed act
    os.environ[ENV_OPERATOR] = "eve"
    os.environ[ENV_PASSWORD_FILE] = str(site.password_file("eve"))
    return site


@pytest.fixture(autouse=True)
def site(_site_users: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The site's users (one per role) for every batch and command a test starts."""
    monkeypatch.setenv(ENV_USERS, str(_site_users.users))
    monkeypatch.setenv(ENV_OPERATOR, "eve")
    monkeypatch.setenv(ENV_PASSWORD_FILE, str(_site_users.password_file("eve")))
    return _site_users
