"""Synthetic NanoAOD generator with known truth."""
