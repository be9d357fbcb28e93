"""``fedstyle lifetime``: what every run spent on an artist's artworks (the artist's lifetime ledger)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedstyle_secure.data.images import artwork_keys
from fedstyle_secure.errors import ConfigError, DataError
from fedstyle_secure.experiments.output import render_table
from fedstyle_secure.privacy.lifetime import portfolio_spend
from fedstyle_secure.transport.artist.lifetime_ledger import (
    LIFETIME_LEDGER_VARIABLE,
    LifetimeLedger,
    RecordedRun,
    default_lifetime_ledger,
    record_finished_run,
)

COLUMNS = ("artist", "run id", "epsilon", "delta", "limit (epsilon)", "artworks", "updated (UTC)", "state_dir")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "lifetime",
        help="show the epsilon every DP run spent on an artist's artworks (its lifetime ledger)",
        description="List the runs an artist's lifetime ledger records: each run's epsilon (at its delta) on "
        "the artworks it held (told apart by their decoded pixels).  Runs on the same artworks add up: with "
        "--data, the portfolio's lifetime epsilon is the largest sum over its artworks, which `fedstyle "
        "client` keeps within client.lifetime_epsilon.  Opens the ledger read-only, unless --record-run.",
    )
    p.add_argument(
        "--ledger",
        type=Path,
        metavar="FILE",
        help=f"the lifetime ledger (default: client.lifetime_ledger's default, ${LIFETIME_LEDGER_VARIABLE} or "
        "$XDG_DATA_HOME/fedstyle-secure/lifetime-ledger.sqlite)",
    )
    p.add_argument(
        "--data", type=Path, metavar="DIR", help="a client.data folder (<DIR>/<artist>/<image>): its lifetime epsilon"
    )
    p.add_argument(
        "--record-run",
        type=Path,
        metavar="STATE_DIR",
        help="first record the DP run whose client.state_dir this is, on the artworks of --data: a run that "
        "finished before there was a lifetime ledger (nothing happens if it is recorded already)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.ledger.expanduser() if args.ledger is not None else default_lifetime_ledger()
    if args.record_run is not None:
        if args.data is None:
            raise ConfigError("--record-run needs --data: the artworks that run was trained on")
        decision = record_finished_run(LifetimeLedger(path), args.record_run.expanduser(), _portfolio(args.data))
        recorded = "already recorded" if decision is None else f"recorded (epsilon {decision.run_epsilon:.4g})"
        print(f"{args.record_run}: {recorded}", file=sys.stderr)
    runs = LifetimeLedger.read_runs(path)  # read-only
    result: dict[str, Any] = {"ledger": str(path), "runs": [_run_row(r) for r in runs]}
    if args.data is not None:
        portfolio = _portfolio(args.data)
        spend = portfolio_spend((r.spend for r in runs), portfolio)
        result["portfolio"] = {
            "data": str(args.data),
            "artworks": len(portfolio),
            "runs": spend.runs,
            "epsilon": spend.epsilon,
            "delta": spend.delta,
        }
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


def _portfolio(folder: Path) -> frozenset[str]:
    data = folder.expanduser()
    try:
        return artwork_keys(data)
    except DataError as exc:
        hint = " (give the folder that holds the artist's folder, as client.data does)" if data.is_dir() else ""
        raise ConfigError(f"--data: {exc}{hint}") from None


def _run_row(run: RecordedRun) -> dict[str, Any]:
    return {
        "artist": run.artist_id,
        "run_id": run.run_id,
        "epsilon": run.spend.epsilon,
        "delta": run.spend.delta,
        "lifetime_epsilon": run.lifetime_epsilon,
        "charges": run.charges,
        "artworks": len(run.spend.artworks),
        "updated": run.updated,
        "state_dir": run.state_dir,
    }


def _table(result: dict[str, Any]) -> str:
    rows = [
        [
            r["artist"],
            r["run_id"] or "(unnamed)",
            f"{r['epsilon']:.4g}",
            f"{r['delta']:.3g}",
            f"{r['lifetime_epsilon']:.4g}",
            r["artworks"],
            r["updated"],
            r["state_dir"],
        ]
        for r in result["runs"]
    ]
    parts = [f"lifetime ledger {result['ledger']}: {len(rows)} run(s)", render_table(COLUMNS, rows)]
    portfolio = result.get("portfolio")
    if portfolio is not None:
        parts.append(
            f"{portfolio['data']}: {portfolio['artworks']} artwork(s), {portfolio['runs']} run(s) on them; lifetime "
            f"epsilon {portfolio['epsilon']:.4g} (delta {portfolio['delta']:.3g}), the most any one artwork reached"
        )
    return "\n\n".join(parts)
