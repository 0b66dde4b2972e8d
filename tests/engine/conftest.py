"""Engine tests share one fixture: a batch running on the sim bench."""

from batch_harness import running

__all__ = ["running"]
