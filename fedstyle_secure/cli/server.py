"""``fedstyle server --config server.toml``: run the federation server (mutual TLS, gRPC)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from fedstyle_secure.cli.toml_command import register_toml_command
from fedstyle_secure.memory import limit_malloc_arenas, memory_use_mb
from fedstyle_secure.secure.keys.keystore import load_server_keys
from fedstyle_secure.transport.config import check_schedule_for_roster, load_server_config
from fedstyle_secure.transport.logs import configure_logging
from fedstyle_secure.transport.server.servicer import start_server
from fedstyle_secure.transport.wire import PROTOCOL

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    register_toml_command(
        subparsers,
        "server",
        summary="run the federation server",
        description="Serve fedstyle.v1 over mutual TLS: register artists, orchestrate rounds with deadlines "
        "and a quorum, aggregate only protected sums, persist state after every round (resumes on restart).",
        config_help="server.toml ([server] and [federation] tables)",
        func=run,
    )


def _linger_until_artists_told(servicer, stop: threading.Event, limit_seconds: float) -> None:
    """Keep serving after the last round until every registered artist has fetched the final
    plan (else it would retry against a closed port), for at most ``limit_seconds``."""
    deadline = time.monotonic() + limit_seconds
    while servicer.coordinator.finished and not servicer.everyone_told_finished() and time.monotonic() < deadline:
        if stop.wait(0.2):
            return


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, getattr(args, "verbose", False))
    limit_malloc_arenas()  # before the gRPC threads: each would otherwise keep an arena of freed payloads
    config = load_server_config(args.config)
    keys = load_server_keys(config.keys)
    check_schedule_for_roster(args.config, config, len(keys.artists))
    running = start_server(config, keys)
    log.info(
        "serving %s",
        PROTOCOL,
        extra={"listen": config.listen, "port": running.port, "roster": list(running.servicer.coordinator.roster)},
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5) and not running.servicer.coordinator.finished:
        pass
    _linger_until_artists_told(running.servicer, stop, config.session_timeout_seconds)
    if config.keep_serving and running.servicer.coordinator.finished and not running.servicer.coordinator.failed:
        log.info("run finished; answering buyer queries until stopped (server.keep_serving)")
        stop.wait()
    failure = running.servicer.coordinator.failed
    running.stop(grace=2.0)
    if failure:
        log.error("run failed: %s", failure)
        return 1
    log.info(
        "run finished" if running.servicer.coordinator.finished else "stopped",
        extra=memory_use_mb(),
    )
    return 0
