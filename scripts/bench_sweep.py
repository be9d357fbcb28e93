"""Wall time of one `fedstyle sweep` grid with 1 worker (the serial default) against N workers.

Usage: python scripts/bench_sweep.py [--workers 1,2] [--artists 6 --per-artist 10 --rounds 3]

Each run is a fresh `fedstyle sweep` process writing to its own empty folder, so every cell is computed;
the feature cache and the public warm starts are filled once beforehand (a throwaway sweep of the
first algorithm), so no run pays for feature extraction or warm start.  Prints one line per worker
count (seconds, cells per minute) and the speed-up over the first, and the machine's load average:
on cores shared with other work the speed-up is a lower bound.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep_argv(
    args: argparse.Namespace, out: Path, workers: int, epsilons: str, algorithms: str, seeds: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedstyle_secure.cli",
        "sweep",
        "--synthetic",
        "--artists",
        str(args.artists),
        "--per-artist",
        str(args.per_artist),
        "--rounds",
        str(args.rounds),
        "--local-epochs",
        "1",
        "--epsilons",
        epsilons,
        "--algorithms",
        algorithms,
        "--seeds",
        seeds,
        "--workers",
        str(workers),
        "--out",
        str(out),
    ]


def timed_sweep(argv: list[str], env: dict[str, str]) -> float:
    """Seconds of one sweep process (start to exit); raises if it fails."""
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default %(default)s)")
    parser.add_argument("--artists", type=int, default=6)
    parser.add_argument("--per-artist", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epsilons", default="4,inf")
    parser.add_argument("--algorithms", default="fedstyle,fedavg")
    parser.add_argument("--seeds", default="2")
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default: a fresh temporary folder)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "FEDSTYLE_CACHE": str(args.cache_dir or root / "cache")}
        # fills the feature cache and the public warm start of every seed (DP cells start from it)
        one_round = argparse.Namespace(**{**vars(args), "rounds": 1})
        first_algorithm = args.algorithms.split(",")[0]
        timed_sweep(sweep_argv(one_round, root / "warm", 1, args.epsilons, first_algorithm, args.seeds), env)
        times = {}
        for w in counts:
            times[w] = timed_sweep(sweep_argv(args, root / f"w{w}", w, args.epsilons, args.algorithms, args.seeds), env)
    n_cells = (
        len(args.epsilons.split(","))
        * len(args.algorithms.split(","))
        * (int(args.seeds) if "," not in args.seeds else len(args.seeds.split(",")))
    )
    print(
        f"grid: {n_cells} cells ({args.algorithms} x eps {args.epsilons} x seeds {args.seeds}), "
        f"{args.artists} synthetic artists x {args.per_artist}, {args.rounds} rounds; "
        f"{os.cpu_count()} CPUs, load average after: {os.getloadavg()[0]:.1f}"
    )
    print(f"{'workers':>8} {'wall s':>8} {'cells/min':>10} {'speed-up':>9}")
    base = times[counts[0]]
    for w, seconds in times.items():
        print(f"{w:>8} {seconds:>8.1f} {60 * n_cells / seconds:>10.2f} {base / seconds:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
