#!/usr/bin/env python
"""Wall time and bytes per federated round over loopback gRPC + mutual TLS, real processes.

For every n in --artists and every secure mode in --modes, one `fedstyle server` process and n
`fedstyle client` processes (synthetic artists, DP-SGD on unless --epsilon inf) run --rounds
training rounds.  Per round: seconds between the server's consecutive "round state saved" log
entries (training rounds 2..R; round 1 also pays process warm-up) and protobuf bytes the server
received + sent in that time (gRPC/TLS framing excluded).  Per process: the peak resident memory
each artist and the server log when they finish (VmHWM; shared library pages count in every one),
and each artist's resident, anonymous and proportional (PSS) memory at the end (anonymous: what each
further artist process adds to a machine; PSS: shared library pages divided among the processes
mapping them, read as each artist finishes, so it shares among those still running).
The secure/none ratios are printed side by side from the same run, since the machine is noisy.

    python scripts/bench_round.py --artists 4,16 --modes none,ckks,secagg --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedstyle_secure.data.synth import write_synthetic_folder
from fedstyle_secure.experiments.output import render_table
from fedstyle_secure.federation.coordinator import TRANSPORT_SECURE_MODES
from fedstyle_secure.transport.loopback import artist_folders, write_fresh_keys
from fedstyle_secure.transport.processes import federation_tables, start_process_federation


def measure(n: int, mode: str, args: argparse.Namespace, cache: Path) -> dict:
    """One federation; per-round seconds and bytes from the server's log."""
    with tempfile.TemporaryDirectory(prefix=f"bench-round-{mode}-{n}-") as tmp:
        work = Path(tmp)
        write_synthetic_folder(work / "data", n, args.per_artist, seed=0)
        folders = artist_folders(work / "data", work)
        keys = write_fresh_keys(work / "keys", sorted(folders))
        federation, server, client = federation_tables(
            args.rounds, mode, args.epsilon, n, quorum=n, phase_seconds=args.phase_seconds
        )
        client["compact_memory"] = True  # many artist processes on one machine
        started = time.perf_counter()
        running = start_process_federation(
            work / "machines",
            keys,
            folders,
            federation=federation,
            server=server,
            client=client,
            env={"FEDSTYLE_CACHE": str(cache)},
        )
        try:
            codes = running.wait(args.timeout)
            saved = running.server_events("round state saved")
            finished = [e for a in folders for e in running.events(a, "federation finished")]
            server_peak = [e["peak_resident_mb"] for e in running.server_events("run finished")]
        finally:
            running.close()
        if any(code != 0 for code in codes.values()):
            tail = running.log_tail("server", 2000)
            raise SystemExit(f"n={n} {mode}: processes failed {codes}\n{tail}")
    by_round = {int(e["round"]): e for e in saved}
    training = [r for r in range(2, args.rounds + 1) if r in by_round and r - 1 in by_round]
    seconds = [by_round[r]["ts"] - by_round[r - 1]["ts"] for r in training]
    traffic = [
        (by_round[r]["bytes_received"] + by_round[r]["bytes_sent"])
        - (by_round[r - 1]["bytes_received"] + by_round[r - 1]["bytes_sent"])
        for r in training
    ]
    return {
        "n": n,
        "mode": mode,
        "round_seconds": float(np.mean(seconds)),
        "round_seconds_all": seconds,
        "bytes_per_round": float(np.mean(traffic)),
        "total_seconds": time.perf_counter() - started,
        "rounds_measured": len(training),
        "artist_peak_mb_mean": _mean_of(finished, "peak_resident_mb"),
        "artist_peak_mb_max": max((e["peak_resident_mb"] for e in finished), default=float("nan")),
        "artist_resident_mb_mean": _mean_of(finished, "resident_mb"),
        "artist_anonymous_mb_mean": _mean_of(finished, "anonymous_mb"),
        "artist_proportional_mb_mean": _mean_of(finished, "proportional_mb"),
        "server_peak_mb": float(server_peak[-1]) if server_peak else float("nan"),
    }


def _mean_of(events: list[dict], field: str) -> float:
    values = [e[field] for e in events if field in e]
    return float(np.mean(values)) if values else float("nan")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (also used by ``bench_scale.py --loopback``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--artists", default="4,16", help="comma-separated numbers of artist processes (default %(default)s)"
    )
    parser.add_argument(
        "--modes",
        default="none,ckks,secagg",
        help=f"secure modes, from {', '.join(TRANSPORT_SECURE_MODES)} (default %(default)s)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="training rounds per federation, >= 2 (default %(default)s)"
    )
    parser.add_argument(
        "--per-artist", type=int, default=12, help="synthetic artworks per artist (default %(default)s)"
    )
    parser.add_argument(
        "--epsilon", type=float, default=8.0, help="each artist's DP budget; inf = no DP (default %(default)s)"
    )
    parser.add_argument("--phase-seconds", type=float, default=300.0, help="phase deadline (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per federation (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_round"), help="JSON and Markdown output folder")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 includes warm-up and is not measured)")
    if "none" not in args.modes.split(","):
        parser.error("--modes must include none (the baseline of the ratios)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    sizes = [int(v) for v in args.artists.split(",")]
    modes = args.modes.split(",")
    cache = Path(tempfile.mkdtemp(prefix="bench-round-cache-"))
    results = []
    for n in sizes:
        for mode in modes:
            print(f"n={n} {mode} ...", file=sys.stderr, flush=True)
            results.append(measure(n, mode, args, cache))
            print(
                f"  {results[-1]['round_seconds']:.2f} s/round, {results[-1]['bytes_per_round'] / 1e6:.2f} MB/round",
                file=sys.stderr,
                flush=True,
            )
    plain = {r["n"]: r for r in results if r["mode"] == "none"}
    rows = [
        [
            r["n"],
            r["mode"],
            r["round_seconds"],
            r["round_seconds"] / plain[r["n"]]["round_seconds"],
            r["bytes_per_round"] / 1e6,
            r["bytes_per_round"] / plain[r["n"]]["bytes_per_round"],
            r["artist_peak_mb_mean"],
            r["artist_peak_mb_max"],
            r["artist_resident_mb_mean"],
            r["artist_anonymous_mb_mean"],
            r["artist_proportional_mb_mean"],
            r["server_peak_mb"],
        ]
        for r in results
    ]
    headers = ["artists", "secure", "s / round", "time vs none", "MB / round", "bytes vs none"]
    headers += ["artist peak RSS MB (mean)", "(max)", "artist RSS at end MB (mean)", "(anonymous)", "(PSS)"]
    headers += ["server peak RSS MB"]
    table = render_table(headers, rows)
    print(table)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"(largest child process peak RSS {peak_mb:.0f} MB; DP epsilon {args.epsilon:g}; {args.rounds} rounds, "
        f"rounds 2..{args.rounds} measured)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_round.json").write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "peak_child_rss_mb": peak_mb},
            indent=2,
        )
    )
    (args.out / "bench_round.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
