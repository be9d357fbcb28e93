"""Experiments built on the simulator: privacy-budget sweeps (epsilon against retrieval quality)."""
