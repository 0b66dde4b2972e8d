"""Site-side telemetry: the journal tailed onto MQTT, store-and-forward (docs/telemetry.md)."""

from twin.telemetry.topics import ROOT, SCHEMA_VERSION, BrokerURL, TelemetryError, topic

__all__ = ["ROOT", "SCHEMA_VERSION", "BrokerURL", "TelemetryError", "topic"]
