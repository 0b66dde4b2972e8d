"""The control site: every site's telemetry in one store and one dashboard (docs)."""

from twin.control_site.serve import ControlSite
from twin.control_site.store import Store, open_store

__all__ = ["ControlSite", "Store", "open_store"]
