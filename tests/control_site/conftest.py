"""A real Mosquitto (plain + TLS listeners, per-site users, ACLs) for the telemetry tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bedside import UNATTENDED
from site_journals import REPO, SignedBatch, poc_twin

from twin.signing import load_site_key
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


@pytest.fixture(scope="session")
def signed_batch(tmp_path_factory: pytest.TempPathFactory) -> SignedBatch:
    """``poc-twin site keygen site-a`` + ``poc-twin run --site-key``: a signed journal."""
    root = tmp_path_factory.mktemp("signed")
    keys = root / "keys"
    made = poc_twin("site", "keygen", "site-a", "--dir", str(keys))
    assert made.returncode == 0, made.stderr
    journal = root / "sig1.sqlite"
    ran = poc_twin(
        "run",
        "recipes/smoke.yaml",
        "--journal",
        str(journal),
        "--batch-id",
        "sig1",
        "-q",
        "--site-key",
        str(keys / "site-a.key"),
    )
    assert ran.returncode == 0, ran.stderr
    private = keys / "site-a.key"
    public_only = root / "registered"
    public_only.mkdir()
    (public_only / "site-a.pub").write_bytes((keys / "site-a.pub").read_bytes())
    return SignedBatch(journal, public_only, load_site_key(private))


@pytest.fixture(scope="session")
def alarm_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke recipe with a culture temperature high limit below its setpoint: the batch
    raises a critical alarm within minutes of batch time and holds, waiting for a person."""
    text = (Path(REPO) / "recipes" / "smoke.yaml").read_text()
    monitor = (
        "monitors:\n  - {name: culture temperature, pv: temperature_c, high: 36.0, "
        "delay_min: 5, reaction: hold}\n\nprocedure:\n"
    )
    path = tmp_path_factory.mktemp("recipes") / "smoke-alarm.yaml"
    path.write_text(text.replace("procedure:\n", monitor, 1))
    return path


@pytest.fixture(scope="session")
def cart_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped lentiviral CAR-T recipe run to its end on the twin: a real ten-day batch
    whose recipe carries alarm limits (monitors) and a planned length."""
    journal = tmp_path_factory.mktemp("cart") / "cart1.sqlite"
    ran = poc_twin(
        "run",
        "recipes/car_t_autologous.yaml",
        *UNATTENDED,
        "--journal",
        str(journal),
        "--batch-id",
        "cart1",
        "-q",
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    return journal
