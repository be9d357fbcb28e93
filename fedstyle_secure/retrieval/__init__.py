"""Who paints like this: retrieval metrics, evaluation of trained encoders, and the style index
buyers query.

Public API: :mod:`.metrics` (``RetrievalMetrics``, ``evaluate_retrieval``), :mod:`.evaluate`
(``evaluate_global``, ``evaluate_personal``), :mod:`.index` (``StyleIndex``, ``build_index``).
"""
