"""Ensembles of twin batches: release probability before the patient's cells arrive.

One recipe, many twin batches, each with its own donor and seed, run by the real
engine against the twin's devices in process (``benches/sim-in-process.yaml``);
their outcomes judged against a release specification. ``poc-twin whatif``.
"""
