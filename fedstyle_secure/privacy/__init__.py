"""Differential-privacy math and records: accountants, mechanisms, noise calibration, the
per-artist budget ledger, the CSPRNG noise source, signed epsilon reports and their audit.

Public API: :mod:`.accounting` (``compute_epsilon``), :mod:`.mechanisms` (``DpSgdSteps``,
``GaussianRelease``), :mod:`.calibration`, :mod:`.budget` (``PrivacyBudget``, ``BudgetLedger``),
:mod:`.noise` (``CsprngNoise``), :mod:`.reports` (``build_report``, ``sign_report``),
:mod:`.audit` (``audit_reports``), :mod:`.recompute`, :mod:`.empirical`.
"""
