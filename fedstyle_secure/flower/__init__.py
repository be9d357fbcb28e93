"""The federation as a Flower app (optional extra ``pip install -e ".[flower]"``, flwr 1.42).

The only package that imports ``flwr`` (``tests/test_architecture.py`` checks it): the base install
runs without it.  Flower carries the messages; everything else is the project's own code, the same
that ``fedstyle server`` / ``fedstyle client`` run:

* :mod:`.server` drives the :class:`~fedstyle_secure.federation.coordinator.Coordinator` (the round
  rules of :mod:`fedstyle_secure.federation.rounds`, strategies, sum checks), persists and publishes
  the style index through the gRPC server's own servicer, and stores signed epsilon reports;
* :mod:`.artist` runs the gRPC artist's :class:`~fedstyle_secure.transport.artist.runner.ArtistRunner`
  (DP-SGD, the per-artist ledger, signed reports, CKKS contributions, the masking session resumed
  from its state folder) on one Flower message;
* :mod:`.records` encodes the project's protobuf messages in Flower ``RecordDict`` s;
* :mod:`.apps` builds the ``ServerApp`` and ``ClientApp``.
"""
