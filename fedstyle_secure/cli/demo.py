"""``fedstyle demo``: the whole learning pipeline on built-in defaults, in a few minutes on 2 CPUs.

Synthetic artists (no download) -> every algorithm in the same harness -> FedStyle again under
DP-SGD with each artist's budget -> signed epsilon reports, audited -> a comparison table -> a
style index from FedStyle -> a sample buyer query with ranked artists.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from fedstyle_secure.cli.common import federation_from_args, result_payload, simulation_config_from_args
from fedstyle_secure.cli.output import METRIC_COLUMNS, print_privacy_table, render_table, write_json
from fedstyle_secure.federation.dataset import DEFAULT_SYNTHETIC_ARTISTS, DEFAULT_SYNTHETIC_PER_ARTIST
from fedstyle_secure.federation.publish import index_from_result
from fedstyle_secure.federation.simulator import run_simulation
from fedstyle_secure.federation.strategy import ALGORITHMS
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE
from fedstyle_secure.retrieval.evaluate import evaluate_frozen_features
from fedstyle_secure.training.local import LocalConfig

DEMO_ROUNDS = 15
DEMO_EPSILON = 8.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo on built-in synthetic artists",
        description="Generate synthetic artists, train FedStyle and every baseline in the same "
        "harness, print a comparison table and answer a sample style query.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), metavar="DIR", help="results folder (default %(default)s)")
    p.add_argument("--rounds", type=int, default=DEMO_ROUNDS, metavar="R", help="federated rounds (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default %(default)s)")
    p.add_argument("--epsilon", type=float, default=DEMO_EPSILON, metavar="E", help="per-artist budget of the DP FedStyle run (default %(default)s)")
    p.set_defaults(func=run)


def _demo_args(args: argparse.Namespace) -> argparse.Namespace:
    defaults = LocalConfig()
    return argparse.Namespace(
        data=None, synthetic=True, artists=DEFAULT_SYNTHETIC_ARTISTS, per_artist=DEFAULT_SYNTHETIC_PER_ARTIST,
        query_fraction=0.4, public=None, artists_per_client=1, cache_dir=None, rounds=args.rounds,
        local_epochs=2, seed=args.seed, backbone=DEFAULT_BACKBONE, batch_size=defaults.batch_size,
        lr=defaults.lr, tau=defaults.tau, secure="none",
        epsilon=math.inf, delta=None, clip_norm=1.0, noise_multiplier=None, accountant="prv",
    )


def run(args: argparse.Namespace) -> int:
    sim_args = _demo_args(args)
    print(f"fedstyle demo: {sim_args.artists} synthetic artists x {sim_args.per_artist} artworks, one client per artist")
    data = federation_from_args(sim_args)
    rows = []
    results = {}
    for name in ALGORITHMS:
        config = simulation_config_from_args(sim_args, name)
        result = run_simulation(config, data, progress=True)
        results[name] = result
        write_json(args.out / f"{name}.json", result_payload(result, config, data))
        rows.append([name, *(result.metrics.as_dict()[k] for k, _ in METRIC_COLUMNS), f"{result.wall_time_s:.1f}"])
    dp_args = argparse.Namespace(**{**vars(sim_args), "epsilon": args.epsilon})
    dp_config = simulation_config_from_args(dp_args, "fedstyle")
    reports_dir = args.out / "reports"
    if reports_dir.exists():
        shutil.rmtree(reports_dir)  # a demo run starts a fresh report set
    private = run_simulation(dp_config, data, progress=True, reports_dir=reports_dir)
    write_json(args.out / "fedstyle-dp.json", result_payload(private, dp_config, data))
    rows.append([f"fedstyle, DP eps={args.epsilon:g}", *(private.metrics.as_dict()[k] for k, _ in METRIC_COLUMNS), f"{private.wall_time_s:.1f}"])
    frozen = evaluate_frozen_features(data)
    rows.append(["frozen features", *(frozen.as_dict()[k] for k, _ in METRIC_COLUMNS), "-"])
    print()
    print(render_table(["algorithm", *(label for _, label in METRIC_COLUMNS), "seconds"], rows))
    print(f"({len(data.split.query)} held-out query artworks; chance artist accuracy {1 / len(data.artists):.3f})")

    print_privacy_table(private.privacy)
    print(f"\nauditing the signed epsilon reports in {reports_dir}:")
    from fedstyle_secure.cli.main import main as cli_main

    audit_status = cli_main(["audit", str(reports_dir)])
    index = index_from_result(results["fedstyle"], simulation_config_from_args(sim_args, "fedstyle"), data)
    index.save(args.out / "index")
    q = int(data.split.query[0])
    with tempfile.TemporaryDirectory() as tmp:
        query_path = Path(tmp) / "query.png"
        Image.fromarray(data.artworks.images[q]).save(query_path)
        ranked = index.rank(index.embed_images(data.artworks.images[q : q + 1])[0], 3)
    print(f"\nsample query: a held-out artwork by {data.artists[data.labels[q]]}")
    print(render_table(["rank", "artist", "cosine"], [[i + 1, r.artist, r.score] for i, r in enumerate(ranked)]))
    print(f"\nresults (JSON), signed epsilon reports and the FedStyle style index are in {args.out}/")
    return 0 if audit_status == 0 else 1
