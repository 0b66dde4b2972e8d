"""Device drivers: the only layer that knows how a device is reached (Modbus, serial ASCII)."""
