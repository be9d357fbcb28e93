"""``fedstyle launch``: a server and one client per artist on loopback, with fresh keys (a local trial)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedstyle_secure.cli.toml_command import add_log_format
from fedstyle_secure.errors import ConfigError, TransportError
from fedstyle_secure.experiments.arguments import (
    add_privacy_arguments,
    dp_config_from_args,
    positive_int,
    positive_seconds,
)
from fedstyle_secure.federation.coordinator import TRANSPORT_SECURE_MODES, Schedule
from fedstyle_secure.federation.rounds import default_refresh_rounds
from fedstyle_secure.federation.strategy import ALGORITHMS, algorithm_spec
from fedstyle_secure.training.local import DEFAULT_LOCAL_EPOCHS
from fedstyle_secure.transport.artist.runner import EXIT_RETIRED
from fedstyle_secure.transport.logs import configure_logging
from fedstyle_secure.transport.loopback import artist_dirs, start_loopback


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "launch",
        help="run a whole federation on loopback (fresh keys, real gRPC + mutual TLS)",
        description="Generate a fresh key set under WORK/keys, start the server on a free loopback port and one "
        "artist client per <DATA>/<artist>/ folder, and run the federation to the end.",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="image folder <DIR>/<artist>/<image>")
    p.add_argument(
        "--work",
        type=Path,
        required=True,
        metavar="DIR",
        help="new directory for keys, state database and per-artist data roots",
    )
    p.add_argument(
        "--algorithm",
        default="fedstyle",
        choices=tuple(a for a in ALGORITHMS if not algorithm_spec(a).pooled),  # central pools data: no transport
        help="federated algorithm (default %(default)s)",
    )
    p.add_argument("--rounds", type=positive_int, default=3, metavar="R", help="training rounds (default %(default)s)")
    p.add_argument(
        "--local-epochs",
        type=positive_int,
        default=DEFAULT_LOCAL_EPOCHS,
        metavar="E",
        help="local epochs per round of every artist (default %(default)s, as fedstyle simulate)",
    )
    p.add_argument(
        "--secure", choices=TRANSPORT_SECURE_MODES, default="ckks", help="secure summation (default %(default)s)"
    )
    p.add_argument(
        "--phase-seconds",
        type=positive_seconds,
        default=120.0,
        metavar="S",
        help="deadline of every phase (default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=1800.0,
        metavar="S",
        help="give up after S seconds (default %(default)s)",
    )
    add_privacy_arguments(p, reports_dir=False)
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="ARTIST=EPS",
        help=(
            "an artist's own epsilon budget if it differs from --epsilon (repeatable); "
            "it retires when a round would exceed it"
        ),
    )
    add_log_format(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, getattr(args, "verbose", False))
    if args.work.exists() and not args.work.is_dir():
        raise ConfigError(f"--work {args.work} is a file; give a new directory")
    if args.work.exists() and any(args.work.iterdir()):
        raise ConfigError(f"--work {args.work} is not empty; give a new directory")
    dp = dp_config_from_args(args)
    schedule = Schedule(
        algorithm=args.algorithm,
        rounds=args.rounds,
        secure_mode=args.secure,
        quorum=2,
        phase_seconds=args.phase_seconds,
        refreshes=default_refresh_rounds(args.rounds, dp),  # as `fedstyle simulate`
        standardise=dp is None,
    )
    federation = start_loopback(
        args.work,
        args.data,
        schedule,
        cache_dir=None,
        epochs=args.local_epochs,
        dp=dp,
        budgets=parse_budgets(args.budget),
    )
    try:
        finished = federation.join(args.timeout)
        coordinator = federation.server.servicer.coordinator
    finally:
        federation.close()
    errors = {a: str(r) for a, r in federation.results.items() if r not in (0, EXIT_RETIRED)}  # retired: listed below
    print(
        json.dumps(
            {
                "finished": finished,
                "round": coordinator.state.round,
                "failure": coordinator.failed,
                "artists": sorted(federation.results),
                "errors": errors,
                "state_db": str(args.work / "server.sqlite"),
                "retired": dict(coordinator.state.retired),
                "privacy": privacy_summary(args.work, sorted(federation.clients)) if dp else None,
                "reports_dir": str(args.work / "reports") if dp else None,
            },
            indent=2,
        )
    )
    if not finished or coordinator.failed or errors:
        raise TransportError(f"federation did not complete: {coordinator.failed or errors or 'timed out'}")
    return 0


def parse_budgets(items: list[str]) -> dict[str, float]:
    """``["artist_01=0.5", ...]`` -> ``{"artist_01": 0.5}``; raises ConfigError naming ``--budget``."""
    budgets = {}
    for item in items:
        artist, _, value = item.partition("=")
        if artist.strip() in budgets:
            raise ConfigError(f"--budget names {artist.strip()!r} twice")
        try:
            budgets[artist.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--budget expects ARTIST=EPSILON, got {item!r}") from None
        if not artist.strip() or not budgets[artist.strip()] > 0:
            raise ConfigError(f"--budget expects ARTIST=EPSILON with a positive epsilon, got {item!r}")
    return budgets


def privacy_summary(work: Path, artists: list[str]) -> dict[str, dict]:
    """Each artist's epsilon spent / budget from its durable ledger (record-level: one artwork)."""
    from fedstyle_secure.privacy.budget import BudgetLedger
    from fedstyle_secure.transport.artist.state import ArtistStateStore

    out: dict[str, dict] = {}
    for artist in artists:
        state_dir, reports_dir = artist_dirs(work, artist)
        snapshot = ArtistStateStore(state_dir).load() if state_dir.exists() else None
        if snapshot is None or snapshot.ledger is None:
            continue
        ledger = BudgetLedger.from_dict(snapshot.ledger)
        out[artist] = {
            "epsilon_spent": ledger.epsilon_spent,
            "epsilon_budget": ledger.budget.epsilon,
            "delta": ledger.budget.delta,
            "accountant": ledger.accountant,
            "retired": snapshot.retired,
            "state_dir": str(state_dir),
            "reports_dir": str(reports_dir),
        }
    return out
