"""Differential-privacy math and records: an artist's privacy plan, accountants, mechanisms, noise
calibration, the per-artist budget ledger, signed epsilon reports and their audit.  (The CSPRNG
noise source is :mod:`fedstyle_secure.randomness`.)

Public API: :mod:`.plan` (``DpConfig``, ``DpPlan``, ``plan_participation``, ``new_ledger``,
``encoder_config_for``), :mod:`.accounting` (``compute_epsilon``), :mod:`.mechanisms`
(``DpSgdSteps``, ``GaussianRelease``), :mod:`.calibration`, :mod:`.budget` (``PrivacyBudget``,
``BudgetLedger``), :mod:`.reports` (``build_report``, ``sign_report``), :mod:`.audit`
(``audit_reports``), :mod:`.recompute`, :mod:`.empirical`.
"""
