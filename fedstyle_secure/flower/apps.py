"""The Flower ``ServerApp`` and ``ClientApp`` of the federation.

Configuration is the project's own TOML: the ServerApp reads the ``server.toml`` of
``fedstyle server`` (run config ``server-config``), each ClientApp the ``client.toml`` of
``fedstyle client`` (node config ``client-config``; in the simulation runtime the
``client_configs`` list, indexed by Flower's ``partition-id``).  ``flwr run`` loads
:data:`server` and :data:`client` (``[tool.flwr.app.components]``, see the README).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.rejections import unexpected_error_text
from fedstyle_secure.flower.artist import act_on_phase, artist_from_config, register
from fedstyle_secure.flower.records import PHASE_ACTIONS, REGISTER
from fedstyle_secure.flower.server import FlowerFederation, run_federation
from fedstyle_secure.secure.keys.keystore import load_server_keys
from fedstyle_secure.transport.config import check_schedule_for_roster, load_server_config

CLIENT_CONFIG, SERVER_CONFIG, PARTITION_ID = "client-config", "server-config", "partition-id"
REFUSAL = "the artist refused or failed this message; the reason is in the artist's own log"
log = logging.getLogger(__name__)


class ArtistRefused(RuntimeError):
    """What the ServerApp learns of any exception in the artist's ClientApp: :data:`REFUSAL`, never
    the exception's text (the detail is logged on the artist's machine only).

    Threat model: Flower hands the text of an exception a ClientApp raises to the ServerApp, and an
    artist's errors may name private facts: a changed DP target made the artist raise an error
    naming its ledger's number of artworks (red-team review, 2026-11-30), which its reports hide
    behind a commitment."""


def _client_config(context: Context, client_configs: Sequence[Path] | None) -> Path:
    """This node's ``client.toml``: its node config's ``client-config``, else the simulation's list."""
    if CLIENT_CONFIG in context.node_config:
        return Path(str(context.node_config[CLIENT_CONFIG]))
    if client_configs is not None and PARTITION_ID in context.node_config:
        return client_configs[int(context.node_config[PARTITION_ID])]
    raise ConfigError(f"this SuperNode has no node config {CLIENT_CONFIG!r} (the artist's client.toml)")


def client_app(client_configs: Sequence[Path] | None = None) -> ClientApp:
    """The artist's ClientApp: ``query.register`` proves its identity, one handler per phase acts on it."""
    app = ClientApp()

    def answer(act: Callable[[Path, RecordDict], RecordDict]) -> Callable[[Message, Context], Message]:
        def handler(message: Message, context: Context) -> Message:
            try:
                reply = act(_client_config(context, client_configs), message.content)
            except Exception as exc:  # the detail stays in this log, cut: it may quote the server's message
                log.error("refused a %s message\n%s", message.metadata.message_type, unexpected_error_text(exc))
                raise ArtistRefused(REFUSAL) from None
            return Message(reply, reply_to=message)

        return handler

    def on_register(path: Path, content: RecordDict) -> RecordDict:
        return register(artist_from_config(path)[1], content)

    def on_phase(path: Path, content: RecordDict) -> RecordDict:
        return act_on_phase(*artist_from_config(path), content)

    for message_type, act in [(REGISTER, on_register), *[(t, on_phase) for t in PHASE_ACTIONS.values()]]:
        category, action = message_type.split(".")
        decorator = app.train(action) if category == "train" else app.query(action)
        decorator(answer(act))
    return app


def server_app(server_config: Path | None = None, done: Callable[[FlowerFederation], None] | None = None) -> ServerApp:
    """The ServerApp: runs the federation of ``server_config`` (default: the run config's
    ``server-config``); ``done`` gets the finished federation (tests)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if server_config is None and SERVER_CONFIG not in context.run_config:
            raise ConfigError(f"flwr run needs --run-config \"{SERVER_CONFIG}='<path of server.toml>'\"")
        path = server_config or Path(str(context.run_config[SERVER_CONFIG]))
        config = load_server_config(path)
        keys = load_server_keys(config.keys)
        check_schedule_for_roster(path, config, len(keys.artists))
        federation = run_federation(grid, config, keys)
        if done is not None:
            done(federation)
        if federation.coordinator.failed:
            raise RuntimeError(f"the federation failed: {federation.coordinator.failed}")

    return app


client = client_app()
server = server_app()
