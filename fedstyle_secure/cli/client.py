"""``fedstyle client --config client.toml``: run one artist's federated client."""

from __future__ import annotations

import argparse

from fedstyle_secure.cli.toml_command import register_toml_command
from fedstyle_secure.memory import compact_this_process
from fedstyle_secure.secure.keys.keystore import load_artist_keys
from fedstyle_secure.transport.artist.lifetime_ledger import check_lifetime_ledger
from fedstyle_secure.transport.artist.runner import EXIT_RETIRED, check_artist_data_folder, check_min_quorum, run_artist
from fedstyle_secure.transport.config import load_client_config
from fedstyle_secure.transport.logs import configure_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    register_toml_command(
        subparsers,
        "client",
        summary="run one artist's federated client",
        description="Connect to the server over mutual TLS with this artist's key bundle, train locally on the "
        "artist's private images each round, and send only protected contributions; reconnects with backoff. "
        f"Exit status: 0 took part to the end; {EXIT_RETIRED} followed the run to its end but retired before it "
        "(privacy or lifetime budget spent, or a plan refused: the log says why); 2 bad configuration or data; "
        "1 any other failure.",
        config_help="client.toml ([client] table)",
        func=run,
    )


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, getattr(args, "verbose", False))
    config = load_client_config(args.config)
    check_artist_data_folder(config.data)  # before the server is reached: a typo would wait for a plan
    check_lifetime_ledger(config)
    if config.compact_memory:
        compact_this_process()
    keys = load_artist_keys(config.keys, config.artist)
    check_min_quorum(config, keys)
    return run_artist(config, keys)
