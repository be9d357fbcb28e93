"""How the in-process simulator grows with the number of artists: set-up time, seconds per round,
peak memory and memory per artist.

Usage: python scripts/bench_scale.py [--artists 16,64,256] [--per-artist 12] [--rounds 2]
                                     [--algorithm fedstyle] [--epsilon inf] [--inputs random|synthetic]
       python scripts/bench_scale.py --artist-process [--per-artist 12]
       python scripts/bench_scale.py --loopback 4,16,64 [--per-artist 12] [--rounds 2]

Each artist count runs in a fresh process (so its peak is its own).  ``--inputs random`` (default)
gives every artist random style-statistics vectors (1,536-d, clustered per artist) instead of
generating artworks and running the frozen backbone over them: the simulator's cost per artist does
not depend on what the vectors hold, and feature extraction is a one-off per data set that the
feature cache keeps (``--inputs synthetic`` measures it too: procedural artworks through the backbone).

Columns: ``setup s`` = building the inputs and the clients up to the first round (the simulator's
part of it in brackets); ``s/round`` = mean seconds per federated round, evaluation included;
``peak MB`` = peak resident memory of the process (VmHWM); ``data MB`` = resident memory once the
inputs are built, before the simulator starts; ``MB/artist`` = (peak - data) / artists.  The
last line fits memory = a + b * artists over the counts run (b: marginal MB per artist).

``--loopback``: the loopback federation instead, real processes (one ``fedstyle server``, one
``fedstyle client`` per artist, mutual TLS; ``scripts/bench_round.py``'s measurement, without DP),
plain and ``secagg+`` side by side per count: seconds per round, protobuf bytes per artist per round,
each artist's anonymous and resident memory at the end, and how per-artist bytes grow with n
(SecAgg+ talks to ~log n neighbours, so its per-artist bytes should grow like log n, not n).

``--artist-process``: the resident and the anonymous memory of one artist process (``fedstyle client``'s
StyleClient, built with a cold feature cache so the backbone runs) after imports, after building,
and after one local round, then the CPU time of a further local round; with ``[client]
compact_memory`` as the benchmarks run artists, or without it (``--no-compact-memory``: inputs built in
process, glibc's allocator defaults, oneDNN on).
Anonymous memory is what each further artist process on a machine adds.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedstyle_secure.memory import memory_use_mb


def random_federation(n_artists: int, per_artist: int, seed: int):
    """A federation of ``n_artists`` whose model inputs are random clustered style vectors (no images)."""
    from fedstyle_secure.data.images import ArtworkSet
    from fedstyle_secure.data.public import GENERATED_PUBLIC_IMAGES
    from fedstyle_secure.data.split import split_per_artist
    from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
    from fedstyle_secure.models.inputs import DEFAULT_VIEWS, InputBank
    from fedstyle_secure.training.dataset import FederationData, partition_artists

    rng = np.random.default_rng(seed)
    n = n_artists * per_artist
    labels = np.repeat(np.arange(n_artists), per_artist)
    centres = rng.normal(scale=0.15, size=(n_artists, STYLE_FEATURE_DIM)).astype(np.float32)  # not trivially separable
    noise = rng.normal(size=(DEFAULT_VIEWS + 1, n, STYLE_FEATURE_DIM)).astype(np.float32)
    views = centres[labels][None] + noise
    public = rng.normal(size=(DEFAULT_VIEWS + 1, GENERATED_PUBLIC_IMAGES, STYLE_FEATURE_DIM)).astype(np.float32)
    artists = tuple(f"artist-{a:04d}" for a in range(n_artists))
    artworks = ArtworkSet(
        images=np.zeros((n, 1, 1, 3), dtype=np.uint8),
        labels=labels,
        artists=artists,
        keys=tuple(f"random-{i}" for i in range(n)),
        sources=tuple(f"random:{i}" for i in range(n)),
    )
    return FederationData(
        artworks=artworks,
        split=split_per_artist(labels, artists, 0.4, seed),
        bank=InputBank(views, "features"),
        public=InputBank(public, "features"),
        clients=partition_artists(n_artists, 1, seed),
        source="random",
    )


def measure_one(args: argparse.Namespace, n_artists: int) -> dict[str, float]:
    """Build the federation and run the simulation in this process; return the measurements."""
    import torch

    from fedstyle_secure.federation.simulator import SimulationConfig, run_simulation
    from fedstyle_secure.privacy.plan import DpConfig
    from fedstyle_secure.training.dataset import load_artworks, prepare_federation
    from fedstyle_secure.training.local import LocalConfig

    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.inputs == "random":
        data = random_federation(n_artists, args.per_artist, seed=0)
    else:
        artworks, source = load_artworks(None, True, n_artists, args.per_artist, 0)
        data = prepare_federation(artworks, source, seed=0)
    data_s = time.perf_counter() - started
    data_mb = memory_use_mb()["resident_mb"]
    epsilon = float(args.epsilon)
    dp = None if math.isinf(epsilon) else DpConfig(epsilon=epsilon)
    config = SimulationConfig(algorithm=args.algorithm, rounds=args.rounds, local=LocalConfig(epochs=1), dp=dp)
    first_round: list[float] = []
    sim_started = time.perf_counter()
    result = run_simulation(config, data, on_round=lambda rec: first_round.append(time.perf_counter() - rec.seconds))
    setup_sim_s = (first_round[0] if first_round else time.perf_counter()) - sim_started
    peak_mb = memory_use_mb()["peak_resident_mb"]
    seconds = [r.seconds for r in result.history]
    return {
        "artists": n_artists,
        "setup_s": data_s + setup_sim_s,
        "setup_sim_s": setup_sim_s,
        "s_per_round": float(np.mean(seconds)) if seconds else float("nan"),
        "peak_mb": peak_mb,
        "data_mb": data_mb,
        "mb_per_artist": (peak_mb - data_mb) / n_artists,
        "accuracy": result.metrics.artist_accuracy,
    }


def measure_artist(per_artist: int, compact_memory: bool, timed_rounds: int = 5) -> dict[str, float]:
    """An artist process's memory, in this process: imports, then the StyleClient built exactly as
    ``fedstyle client`` builds it (cold feature cache: the backbone runs), then one local round;
    then the CPU time of ``timed_rounds`` more local rounds."""
    import tempfile

    import torch

    from fedstyle_secure.data.public import forget_decoded_public_sets
    from fedstyle_secure.data.synth import write_synthetic_folder
    from fedstyle_secure.federation.client import Broadcast
    from fedstyle_secure.memory import compact_this_process, return_freed_memory
    from fedstyle_secure.transport.artist.runner import build_style_client
    from fedstyle_secure.transport.config import ClientConfig
    from fedstyle_secure.transport.wire import pb

    if compact_memory:
        compact_this_process()  # as `fedstyle client` does with [client] compact_memory = true
    torch.set_num_threads(1)
    out: dict[str, float] = {}

    def record(stage: str) -> None:
        use = memory_use_mb()
        out[f"{stage}_rss_mb"], out[f"{stage}_anonymous_mb"], out["peak_mb"] = (
            use["resident_mb"],
            use["anonymous_mb"],
            use["peak_resident_mb"],
        )

    record("imports")
    with tempfile.TemporaryDirectory(prefix="bench-artist-") as tmp:
        root = Path(tmp)
        write_synthetic_folder(root / "data", 1, per_artist, seed=0)
        folder = next((root / "data").iterdir())
        plan = pb.RoundPlan(algorithm="fedstyle", seed=0, embedding_dim=128)
        plan.public_set.name = "generated:128:seed0"
        config = ClientConfig(
            keys=root / "unused", data=root / "data", cache_dir=root / "cache", compact_memory=compact_memory
        )
        client = build_style_client(config, folder.name, (folder.name, "other-artist"), plan)
        forget_decoded_public_sets()  # as ArtistRunner.act does after building
        return_freed_memory()
        record("built")
        out["build_peak_mb"] = out["peak_mb"]
        params = np.concatenate([p.detach().reshape(-1).numpy() for p in client.model.parameters() if p.requires_grad])
        broadcast = Broadcast(
            0, params, np.zeros((128, 128), np.float32), np.zeros((2, 128), np.float32), np.zeros(2, dtype=bool)
        )
        client.fit(broadcast, round_id=0)
        record("trained")
        started = time.process_time()
        for round_id in range(1, timed_rounds + 1):
            client.fit(broadcast, round_id=round_id)
        out["round_cpu_ms"] = (time.process_time() - started) / timed_rounds * 1000
    return out


def measure_loopback(counts: list[int], args: argparse.Namespace) -> int:
    """The loopback federation at each count, plain and secagg+ (bench_round's measurement)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_round

    options = bench_round.parse_arguments(
        ["--per-artist", str(args.per_artist), "--rounds", str(max(args.rounds, 2)), "--epsilon", "inf"]
    )
    from fedstyle_secure.models.inputs import default_cache_dir

    cache = default_cache_dir()  # the machine's feature cache: set-up is not what this measures
    rows = []
    for n in counts:
        for mode in ("none", "secagg+"):
            print(f"loopback: {n} artists, {mode} ...", file=sys.stderr, flush=True)
            rows.append(bench_round.measure(n, mode, options, cache))
    print(f"loopback federation, no DP, {args.per_artist} artworks per artist, rounds 2..{options.rounds} measured")
    print(
        f"{'artists':>8} {'secure':>8} {'s/round':>8} {'KB/artist/round':>16} {'anon MB/artist':>15} "
        f"{'RSS MB/artist':>14} {'PSS MB/artist':>14} {'server peak MB':>15}"
    )
    for r in rows:
        print(
            f"{r['n']:>8} {r['mode']:>8} {r['round_seconds']:>8.2f} {r['bytes_per_round'] / r['n'] / 1e3:>16.1f} "
            f"{r['artist_anonymous_mb_mean']:>15.0f} {r['artist_resident_mb_mean']:>14.0f} "
            f"{r['artist_proportional_mb_mean']:>14.0f} {r['server_peak_mb']:>15.0f}"
        )
    small, large = min(counts), max(counts)
    if small >= 2 and large > small:
        for mode in ("none", "secagg+"):
            per_artist = {r["n"]: r["bytes_per_round"] / r["n"] for r in rows if r["mode"] == mode}
            growth = per_artist[large] / per_artist[small]
            print(
                f"{mode}: per-artist bytes x{growth:.2f} from {small} to {large} artists "
                f"(n grew x{large / small:.0f}, log2 n x{math.log2(large) / math.log2(small):.2f})"
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artists", default="16,64,256", help="comma-separated artist counts (default %(default)s)")
    parser.add_argument("--per-artist", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--algorithm", default="fedstyle")
    parser.add_argument("--epsilon", default="inf", help="per-artist budget; inf = no DP (default %(default)s)")
    parser.add_argument("--inputs", choices=("random", "synthetic"), default="random")
    parser.add_argument(
        "--artist-process",
        action="store_true",
        help="measure one artist process's memory instead (imports, client built, one round)",
    )
    parser.add_argument(
        "--no-compact-memory",
        action="store_true",
        help="with --artist-process: the process defaults (inputs built in process, glibc's allocator, oneDNN) "
        "instead of [client] compact_memory",
    )
    parser.add_argument(
        "--loopback",
        metavar="COUNTS",
        help="measure the loopback federation (real processes) at these comma-separated artist counts instead",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one count, print JSON
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure_one(args, args.one)))
        return 0
    if args.artist_process:
        m = measure_artist(args.per_artist, compact_memory=not args.no_compact_memory)
        mode = "process defaults" if args.no_compact_memory else "compact_memory"
        print(
            f"artist process, {args.per_artist} artworks, cold feature cache, 1 thread, {mode} "
            "(MB: resident / anonymous)"
        )
        for stage in ("imports", "built", "trained"):
            print(f"  after {stage:<8} {m[stage + '_rss_mb']:6.0f} / {m[stage + '_anonymous_mb']:6.0f}")
        print(f"  peak while building {m['build_peak_mb']:.0f}, overall peak {m['peak_mb']:.0f}")
        print(f"  a further local round: {m['round_cpu_ms']:.0f} ms of CPU (mean of 5)")
        return 0

    if args.loopback:
        return measure_loopback([int(a) for a in args.loopback.split(",")], args)

    rows = []
    for n in (int(a) for a in args.artists.split(",")):
        argv = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--per-artist",
            str(args.per_artist),
            "--rounds",
            str(args.rounds),
            "--algorithm",
            args.algorithm,
            "--epsilon",
            args.epsilon,
            "--inputs",
            args.inputs,
        ]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"measured {n} artists", file=sys.stderr)
    print(
        f"simulator: {args.algorithm}, epsilon {args.epsilon}, {args.per_artist} artworks per artist, "
        f"{args.rounds} rounds x 1 local epoch, inputs {args.inputs}, 1 compute thread"
    )
    print(f"{'artists':>8} {'setup s':>16} {'s/round':>8} {'peak MB':>8} {'data MB':>8} {'MB/artist':>9} {'acc':>6}")
    for r in rows:
        setup = f"{r['setup_s']:.1f} ({r['setup_sim_s']:.1f})"
        print(
            f"{r['artists']:>8} {setup:>16} {r['s_per_round']:>8.2f} {r['peak_mb']:>8.0f} {r['data_mb']:>8.0f} "
            f"{r['mb_per_artist']:>9.2f} {r['accuracy']:>6.3f}"
        )
    if len(rows) > 1:
        artists = np.array([r["artists"] for r in rows], dtype=float)
        slope, intercept = np.polyfit(artists, [r["peak_mb"] for r in rows], 1)
        print(f"peak MB ~ {intercept:.0f} + {slope:.2f} x artists -> 1,000 artists: {intercept + 1000 * slope:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
