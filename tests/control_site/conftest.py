"""A real Mosquitto (plain + TLS listeners, per-site users, ACLs) for the telemetry tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twin.telemetry.broker import BrokerConfig, Mosquitto, free_port, make_pki

SITES = ("site-a", "site-b")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerConfig]:
    root: Path = tmp_path_factory.mktemp("broker")
    config = BrokerConfig(root / "mosquitto", port=free_port(), tls_port=free_port())
    config.tls = make_pki(root / "pki")
    for site in SITES:
        config.add_site(site)
    config.add_control("control")
    with Mosquitto(config):
        yield config


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL cluster on a free loopback port; yields its URL."""
    from twin.control_site.pgtest import TempPostgres

    with TempPostgres() as pg:
        yield pg.url
