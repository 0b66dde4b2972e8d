"""The generated mosquitto.conf: plaintext on loopback only, client ids bound to logins."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.telemetry.broker import BrokerConfig
from twin.telemetry.topics import TelemetryError


def listeners(conf: Path) -> dict[str, list[str]]:
    """``listener PORT ADDRESS`` -> the option lines under it."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in conf.read_text().splitlines():
        if line.startswith("listener "):
            current = found.setdefault(line, [])
        elif current is not None:
            current.append(line)
    return found


def test_remote_sites_get_tls_and_plaintext_stays_on_loopback(tmp_path: Path):
    tls = {k: tmp_path / f"{k}.pem" for k in ("ca", "cert", "key")}  # only named in the conf
    config = BrokerConfig(tmp_path / "b", port=1883, bind="0.0.0.0", tls_port=8883, tls=tls)
    config.add_site("site-a")
    found = listeners(config.write())
    assert list(found) == ["listener 1883 127.0.0.1", "listener 8883 0.0.0.0"]
    for options in found.values():
        assert "use_username_as_clientid true" in options


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.0.2.10", "broker.example"])
def test_a_remote_address_without_tls_is_refused(tmp_path: Path, bind: str):
    config = BrokerConfig(tmp_path / "b", bind=bind)
    with pytest.raises(TelemetryError, match="TLS"):
        config.write()
    assert not (tmp_path / "b").exists()  # nothing written


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1", "localhost"])
def test_loopback_without_tls_is_fine(tmp_path: Path, bind: str):
    config = BrokerConfig(tmp_path / "b", bind=bind)
    config.add_site("site-a")
    assert list(listeners(config.write())) == [f"listener {config.port} 127.0.0.1"]
