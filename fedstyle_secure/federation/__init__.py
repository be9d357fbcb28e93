"""The federation's rules, shared by the in-process simulator and the networked server: the
round engine (:mod:`.coordinator`: plans, phases, deadlines, quorum, submissions; pure, time
passed in), aggregation strategies, round layouts and sum checks, the artist-side
``StyleClient``, the masking round drivers and the refusals a submission can get.

Public API: :mod:`.strategy` (``algorithm_spec``, ``aggregate``, ``ServerState``),
:mod:`.client` (``StyleClient``), :mod:`.simulator` (``run_simulation``, ``SimulationConfig``),
:mod:`.coordinator` (``Coordinator``, ``Schedule``), :mod:`.round_layout`, :mod:`.sum_checks`,
:mod:`.packing`, :mod:`.rejections`.
"""
