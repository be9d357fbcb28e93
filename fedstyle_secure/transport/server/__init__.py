"""The server process: the gRPC servicer over :class:`~fedstyle_secure.federation.coordinator.Coordinator`,
admission limits, the SQLite store, report intake and the published style index."""
