"""One artist's local learning: the federation's data set, losses, local training with or
without DP-SGD (Opacus, CSPRNG noise; the plan it follows is :mod:`fedstyle_secure.privacy.plan`)
and the public warm start.

Public API: :mod:`.dataset` (``FederationData``, ``prepare_federation``), :mod:`.losses`,
:mod:`.local` (``LocalConfig``, ``train_local``), :mod:`.dp_sgd`, :mod:`.dp_noise`,
:mod:`.pretrain` (``make_initial_model``).
"""
