"""Experiments built on the simulator: privacy-budget sweeps (epsilon against retrieval quality),
the empirical canary audit, command-line argument builders and output writers shared with
:mod:`fedstyle_secure.cli`.
"""
