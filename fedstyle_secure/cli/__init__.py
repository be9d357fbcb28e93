"""The ``fedstyle`` command: one module per subcommand (``main`` wires them up)."""
