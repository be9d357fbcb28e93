"""``fedstyle launch``: a server and one client per artist on loopback, with fresh keys (a local trial)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedstyle_secure.cli.server import add_log_format
from fedstyle_secure.errors import ConfigError, TransportError
from fedstyle_secure.transport.coordinator import TRANSPORT_SECURE_MODES, Schedule
from fedstyle_secure.transport.logs import configure_logging
from fedstyle_secure.transport.loopback import start_loopback


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "launch",
        help="run a whole federation on loopback (fresh keys, real gRPC + mutual TLS)",
        description="Generate a fresh key set under WORK/keys, start the server on a free loopback port and one "
        "artist client per <DATA>/<artist>/ folder, and run the federation to the end.",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="image folder <DIR>/<artist>/<image>")
    p.add_argument("--work", type=Path, required=True, metavar="DIR", help="new directory for keys, state database and per-artist data roots")
    p.add_argument("--algorithm", default="fedstyle", help="federated algorithm (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, metavar="R", help="training rounds (default %(default)s)")
    p.add_argument("--secure", choices=TRANSPORT_SECURE_MODES, default="ckks", help="secure summation (default %(default)s)")
    p.add_argument("--phase-seconds", type=float, default=120.0, metavar="S", help="deadline of every phase (default %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="give up after S seconds (default %(default)s)")
    add_log_format(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, getattr(args, "verbose", False))
    if args.work.exists() and any(args.work.iterdir()):
        raise ConfigError(f"--work {args.work} is not empty; give a new directory")
    schedule = Schedule(algorithm=args.algorithm, rounds=args.rounds, secure_mode=args.secure, quorum=2,
                        phase_seconds=args.phase_seconds, refreshes=frozenset(range(args.rounds)))
    federation = start_loopback(args.work, args.data, schedule, cache_dir=None)
    try:
        finished = federation.join(args.timeout)
        coordinator = federation.server.servicer.coordinator
    finally:
        federation.close()
    errors = {a: str(r) for a, r in federation.results.items() if r != 0}
    print(json.dumps({"finished": finished, "round": coordinator.state.round, "failure": coordinator.failed,
                      "artists": sorted(federation.results), "errors": errors, "state_db": str(args.work / "server.sqlite")}, indent=2))
    if not finished or coordinator.failed or errors:
        raise TransportError(f"federation did not complete: {coordinator.failed or errors or 'timed out'}")
    return 0
