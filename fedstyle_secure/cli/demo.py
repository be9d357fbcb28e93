"""``fedstyle demo``: the whole product on built-in defaults, on one machine, in ~5 minutes on 2 CPUs.

1. Synthetic artists (no download), each split into private training and held-out query artworks.
2. The learning harness: FedStyle and every baseline in-process on the same data and rounds.
3. The product: fresh keys in a temporary folder, a real ``fedstyle server`` process and one
   ``fedstyle client`` process per artist on loopback, gRPC with mutual TLS; every artist trains
   FedStyle with DP-SGD under its own budget and the server aggregates only secure sums.
4. A buyer's query answered by the server over TLS; the published index scored on held-out art.
5. Every artist's signed epsilon reports, audited against the key set's identity keys (kept as the
   auditor's bundle ``<out>/audit-keys``, public keys only); a closing summary (table + ``summary.json``).
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from fedstyle_secure.errors import ConfigError, TransportError
from fedstyle_secure.experiments.arguments import (
    federation_from_args,
    positive_int,
    positive_seconds,
    result_payload,
    seed_value,
    simulation_config_from_args,
)
from fedstyle_secure.experiments.output import METRIC_COLUMNS, render_table, write_json
from fedstyle_secure.federation.coordinator import TRANSPORT_SECURE_MODES
from fedstyle_secure.federation.simulator import run_simulation
from fedstyle_secure.federation.strategy import ALGORITHMS
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE
from fedstyle_secure.privacy.plan import DEFAULT_MIN_TRAINING_ARTWORKS
from fedstyle_secure.privacy.report_store import latest_reports
from fedstyle_secure.retrieval.evaluate import evaluate_frozen_features, evaluate_index
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.retrieval.metrics import RetrievalMetrics
from fedstyle_secure.secure.keys.keystore import bundle_files, write_key_files
from fedstyle_secure.training.dataset import DEFAULT_SYNTHETIC_ARTISTS, DEFAULT_SYNTHETIC_PER_ARTIST, FederationData
from fedstyle_secure.training.local import LocalConfig
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.processes import ProcessFederation, federation_tables, start_process_federation

FEDERATION_ROUNDS = 4
COMPARE_ROUNDS = 20  # as scripts/bench_utility.py measures them
DEMO_EPSILON = 8.0
BUYER = "buyer"
AUDIT_KEYS = "audit-keys"  # under --out: the artists' identity public keys the audit verifies reports with
DEMO_MARKER = ".fedstyle-demo"  # written into --out: only a folder holding it is the demo's to empty
#: Everything the demo writes under --out: a rerun replaces them all (no earlier run's file is left
#: beside the new ones) and refuses a folder holding anything else.
DEMO_OUTPUTS = frozenset({DEMO_MARKER, "summary.json", "compare", "machines", "reports", AUDIT_KEYS})
DEFAULT_SECURE = "secagg" if "secagg" in TRANSPORT_SECURE_MODES else "ckks"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole product on built-in synthetic artists (real processes, gRPC + mutual TLS)",
        description="Generate synthetic artists; compare FedStyle with every baseline in-process; then run a real "
        "federation on loopback (fresh keys, one server process, one process per artist, mutual TLS) with DP-SGD "
        "and secure aggregation; answer a buyer query through the server; audit every artist's signed epsilon "
        "reports. Results go to --out.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/demo"), metavar="DIR", help="results folder (default %(default)s)"
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=FEDERATION_ROUNDS,
        metavar="R",
        help="training rounds of the networked federation (default %(default)s)",
    )
    p.add_argument(
        "--compare-rounds",
        type=int,
        default=COMPARE_ROUNDS,
        metavar="R",
        help="rounds of the in-process algorithm comparison; 0 skips it (default %(default)s)",
    )
    p.add_argument(
        "--artists",
        type=positive_int,
        default=DEFAULT_SYNTHETIC_ARTISTS,
        metavar="N",
        help="synthetic artists = artist processes (default %(default)s)",
    )
    p.add_argument(
        "--epsilon",
        type=float,
        default=DEMO_EPSILON,
        metavar="E",
        help="each artist's privacy budget epsilon (privacy unit: one artwork); inf = no DP (default %(default)s)",
    )
    p.add_argument(
        "--secure",
        choices=TRANSPORT_SECURE_MODES,
        default=DEFAULT_SECURE,
        help="secure aggregation of the federation (default %(default)s)",
    )
    p.add_argument("--seed", type=seed_value, default=0, metavar="S", help="seed (default %(default)s)")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=900.0,
        metavar="S",
        help="give up on the federation after S seconds (default %(default)s)",
    )
    p.set_defaults(func=run)


def _harness_args(args: argparse.Namespace) -> argparse.Namespace:
    defaults = LocalConfig()
    return argparse.Namespace(
        data=None,
        synthetic=True,
        artists=args.artists,
        per_artist=DEFAULT_SYNTHETIC_PER_ARTIST,
        query_fraction=0.4,
        public=None,
        artists_per_client=1,
        cache_dir=None,
        rounds=args.compare_rounds,
        local_epochs=defaults.epochs,
        seed=args.seed,
        backbone=DEFAULT_BACKBONE,
        batch_size=defaults.batch_size,
        lr=defaults.lr,
        tau=defaults.tau,
        secure="none",
        epsilon=math.inf,
        delta=None,
        clip_norm=1.0,
        noise_multiplier=None,
        accountant="prv",
    )


def _metric_row(label: str, metrics: RetrievalMetrics, seconds: str) -> list:
    return [label, *(metrics.as_dict()[k] for k, _ in METRIC_COLUMNS), seconds]


def compare_algorithms(args: argparse.Namespace, data: FederationData) -> list[list]:
    """Every algorithm in the same in-process harness (no DP, no crypto): the learning baseline."""
    sim_args = _harness_args(args)
    rows = []
    for name in ALGORITHMS:
        config = simulation_config_from_args(sim_args, name)
        result = run_simulation(config, data, progress=True)
        write_json(args.out / "compare" / f"{name}.json", result_payload(result, config, data))
        rows.append(_metric_row(name, result.metrics, f"{result.wall_time_s:.1f}"))
    rows.append(_metric_row("frozen features", evaluate_frozen_features(data), "-"))
    return rows


def write_training_folders(data: FederationData, root: Path) -> dict[str, Path]:
    """Each artist machine's data root ``<root>/<artist>/<artist>/NNN.png``: its training split only
    (the held-out artworks stay with the demo, to score what the server publishes)."""
    folders = {}
    for label, artist in enumerate(data.artists):
        folder = root / artist / artist
        folder.mkdir(parents=True)
        for item in data.split.train[data.labels[data.split.train] == label]:
            Image.fromarray(data.artworks.images[item]).save(folder / f"{int(item):05d}.png")
        folders[artist] = root / artist
    return folders


@dataclass
class FederationOutcome:
    seconds: float
    rounds_saved: int
    exit_codes: dict[str, int | None]
    metrics: RetrievalMetrics
    query_artist: str
    ranked: list[tuple[str, float]]


def run_federation(args: argparse.Namespace, data: FederationData, work: Path) -> FederationOutcome:
    """Start the processes, follow the rounds, query the server, score its index, stop it."""
    from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem
    from fedstyle_secure.transport.artist.channel import query

    folders = write_training_folders(data, work / "data")
    keys = write_fresh_keys(work / "keys", list(data.artists), [BUYER])
    _keep_audit_keys(keys, args.out / AUDIT_KEYS)
    federation, server, client = federation_tables(args.rounds, args.secure, args.epsilon, len(folders), seed=args.seed)
    server["keep_serving"] = True  # answers the buyer's query after the last round
    started = time.perf_counter()
    running = start_process_federation(
        work / "machines", keys, folders, federation=federation, server=server, client=client
    )
    try:
        codes = _follow(running, args.rounds + 2, args.timeout)
        failed = {name: code for name, code in codes.items() if code != 0}
        if failed:
            tails = "\n".join(
                f"--- {name} (exit {code}) ---\n{running.log_tail(name)}" for name, code in failed.items()
            )
            raise TransportError(f"federation processes failed or timed out: {failed}\n{tails}")
        index_dir = work / "machines" / "server" / "index"
        _wait_for(lambda: (index_dir / "index.json").exists(), 30.0, "the server's style index")
        q = int(data.split.query[0])
        buffer = io.BytesIO()
        Image.fromarray(data.artworks.images[q]).save(buffer, format="PNG")
        ranked = query(running.address, load_buyer_tls_pem(keys, BUYER), buffer.getvalue(), top_k=3)
        held_out = data.split.query
        metrics = evaluate_index(
            StyleIndex.load(index_dir),
            data.artworks.images[held_out],
            [data.artists[i] for i in data.labels[held_out]],
            data.cache_dir,  # the demo's own artworks: their views are cached already
        )
        return FederationOutcome(
            time.perf_counter() - started,
            running.completed_rounds(),
            codes,
            metrics,
            data.artists[data.labels[q]],
            ranked,
        )
    finally:
        running.close()
        _keep_outputs(work / "machines", args.out)


def _follow(running: ProcessFederation, total_rounds: int, timeout: float) -> dict[str, int | None]:
    """Wait for every artist process to finish, with a progress bar of the rounds the server saved."""
    with tqdm(total=total_rounds, desc="federation rounds", unit="round") as bar:

        def update() -> None:
            advanced = min(running.completed_rounds(), total_rounds) - bar.n
            if advanced > 0:
                bar.update(advanced)

        codes = running.wait(timeout, on_poll=update, server=False)
        if all(code == 0 for code in codes.values()):  # every artist finished: so did the last round
            bar.update(bar.total - bar.n)
    codes["server"] = running.server.poll()  # still serving queries: None is expected
    return {name: (0 if name == "server" and code is None else code) for name, code in codes.items()}


def _keep_audit_keys(keys: Path, target: Path) -> None:
    """The auditor's bundle (every artist's identity public key, no secret), kept for ``fedstyle audit --keys``."""
    if target.exists():
        shutil.rmtree(target)
    write_key_files(target, bundle_files(keys, auditor=True))


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TransportError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(0.2)


def _keep_outputs(machines: Path, out: Path) -> None:
    """Copy what a user inspects (logs, reports, index) out of the temporary folder; keys stay behind."""
    for machine in sorted(p for p in machines.iterdir() if p.is_dir()):
        for name in ("log.jsonl", "reports", "index"):
            source = machine / name
            target = out / (
                "reports" if name == "reports" and machine.name == "server" else f"machines/{machine.name}/{name}"
            )
            if not source.exists():
                continue
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)


def _privacy_rows(reports_dir: Path) -> list[list]:
    rows = []
    for artist, report in sorted(latest_reports(reports_dir).items()):
        spent = report["epsilon"][report["accountant"]]
        rows.append(
            [
                artist,
                report["round"],
                spent,
                report["budget"]["epsilon"],
                f"{report['delta']:.1e}",
                report["accountant"],
            ]
        )
    return rows


def fresh_output_folder(out: Path) -> None:
    """``out`` created, or emptied of an earlier demo's outputs (:data:`DEMO_OUTPUTS`), then marked as
    the demo's (:data:`DEMO_MARKER`); :class:`ConfigError`, nothing removed, if it holds anything the
    demo does not write or lacks the marker (a folder of the user's that happens to hold a ``reports``)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; the demo writes a folder")
    if out.is_dir() and any(out.iterdir()):
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_OUTPUTS)
        if foreign or not (out / DEMO_MARKER).is_file():
            listed = foreign or sorted(p.name for p in out.iterdir())
            raise ConfigError(
                f"--out {out} holds {', '.join(listed[:3])}{', ...' if len(listed) > 3 else ''}, which no earlier "
                f"demo marked as its own ({DEMO_MARKER}); choose a new folder, or remove it if it is an older demo's"
            )
        for name in DEMO_OUTPUTS:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `fedstyle demo`: a rerun replaces the outputs in this folder\n")


def run(args: argparse.Namespace) -> int:
    from fedstyle_secure.cli.main import main as cli_main

    started = time.perf_counter()
    fresh_output_folder(args.out)
    data = federation_from_args(_harness_args(args))
    print(
        f"fedstyle demo: {len(data.artists)} synthetic artists x {DEFAULT_SYNTHETIC_PER_ARTIST} artworks "
        f"({len(data.split.train)} private training, {len(data.split.query)} held-out queries)"
    )
    columns = ["run", *(label for _, label in METRIC_COLUMNS), "seconds"]
    rows = []
    if args.compare_rounds > 0:
        print(f"\n[1/3] the learning harness: every algorithm in-process, {args.compare_rounds} rounds, no DP")
        rows = compare_algorithms(args, data)
        print(render_table(columns, rows))
    dp_text = (
        "no DP"
        if math.isinf(args.epsilon)
        else (
            f"DP (DP-SGD from {DEFAULT_MIN_TRAINING_ARTWORKS} artworks per artist, below that one final release), "
            f"epsilon budget {args.epsilon:g} per artist"
        )
    )
    print(
        f"\n[2/3] the product: 1 server + {len(data.artists)} artist processes on loopback, mutual TLS, "
        f"{args.secure} aggregation, {dp_text}, {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="fedstyle-demo-") as tmp:  # fresh keys; deleted afterwards
        outcome = run_federation(args, data, Path(tmp))
    label = f"fedstyle over gRPC ({args.secure}, eps={args.epsilon:g})"
    rows.append(_metric_row(label, outcome.metrics, f"{outcome.seconds:.1f}"))
    print(f"\nsample buyer query, answered by the server: a held-out artwork by {outcome.query_artist}")
    print(render_table(["rank", "artist", "cosine"], [[i + 1, a, s] for i, (a, s) in enumerate(outcome.ranked)]))

    reports = args.out / "reports"
    print(f"\n[3/3] auditing every artist's signed epsilon reports ({reports}):")
    audit_status = cli_main(["audit", str(reports), "--keys", str(args.out / AUDIT_KEYS)]) if reports.exists() else 1
    privacy = _privacy_rows(reports) if reports.exists() else []
    print("\nprivacy (record-level DP; the privacy unit is one artwork, not an artist):")
    print(render_table(["artist", "last report", "epsilon spent", "budget", "delta", "accountant"], privacy))

    print("\nsummary (held-out artworks; chance artist accuracy %.3f):" % (1 / len(data.artists)))
    print(render_table(columns, rows))
    write_json(
        args.out / "summary.json",
        {
            "table": [dict(zip(columns, row)) for row in rows],
            "federation": {
                "secure_mode": args.secure,
                "epsilon_budget": args.epsilon,
                "rounds": args.rounds,
                "seconds": outcome.seconds,
                "exit_codes": outcome.exit_codes,
                "metrics": outcome.metrics.as_dict(),
            },
            "query": {"true_artist": outcome.query_artist, "ranked": outcome.ranked},
            "privacy": [
                dict(zip(["artist", "last_report_round", "epsilon_spent", "budget", "delta", "accountant"], r))
                for r in privacy
            ],
            "audit_exit_status": audit_status,
            "total_seconds": time.perf_counter() - started,
        },
    )
    ok = audit_status == 0 and (math.isinf(args.epsilon) or len(privacy) == len(data.artists))
    print(
        f"\n{'OK' if ok else 'PROBLEMS FOUND'}: results, logs, reports and the published index are in {args.out}/ "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return 0 if ok else 1
