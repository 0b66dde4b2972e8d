"""Replay and resume: the engine re-run against a recorded batch.

``replay`` proves the engine takes the recorded decisions from the recorded
inputs; ``resume`` uses the same re-run to bring an interrupted batch back to
exactly the state its journal implies, then hands it to live equipment, Held.
"""

from twin.replay.journal import Divergence
from twin.replay.recording import Recording, load_recording
from twin.replay.replay import ReplayResult, replay

__all__ = ["Divergence", "Recording", "ReplayResult", "load_recording", "replay"]
