#!/usr/bin/env python
"""Protobuf bytes per artist per training round, by RPC method, from the server's byte meter.

One in-process loopback federation per secure mode (real server, real gRPC + mutual TLS, one
thread per synthetic artist, DP-SGD at --epsilon unless inf): the server's ByteMeter counts every
request and response (serialised protobuf, framing excluded) per method; totals are divided by
artists x rounds, so publications, reports and the final round are spread over the training
rounds.  Unlike per-round differences of the "round state saved" log, this does not depend on
when reports arrive.

    python scripts/bench_bytes.py --artists 4 --modes none,ckks --rounds 2
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
from pathlib import Path

from fedstyle_secure.data.synth import write_synthetic_folder
from fedstyle_secure.experiments.output import render_table
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.federation.rounds import default_refresh_rounds
from fedstyle_secure.models.heads import DEFAULT_EMBEDDING_DIM
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_server_keys
from fedstyle_secure.transport.artist.runner import run_artist
from fedstyle_secure.transport.config import ClientConfig, ServerConfig
from fedstyle_secure.transport.loopback import artist_folders, write_fresh_keys
from fedstyle_secure.transport.server.servicer import start_server

UPLOADS = ("UploadContribution", "SubmitMasking")
DOWNLOADS = ("DownloadBroadcast", "DownloadAggregate", "FetchMasking")


def measure(mode: str, args: argparse.Namespace, cache: Path) -> dict[str, float]:
    """One federation; bytes per artist per training round (uploads, downloads, all RPCs)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-bytes-{mode}-") as tmp:
        work = Path(tmp)
        write_synthetic_folder(work / "data", args.artists, args.per_artist, seed=0)
        folders = artist_folders(work / "data", work)
        keys = write_fresh_keys(work / "keys", sorted(folders))
        dp = None if math.isinf(args.epsilon) else DpConfig(epsilon=args.epsilon)
        refreshes = default_refresh_rounds(args.rounds, dp)
        schedule = Schedule(
            rounds=args.rounds,
            quorum=args.artists,
            phase_seconds=args.phase_seconds,
            secure_mode=mode,
            standardise=dp is None,
            refreshes=refreshes,
        )
        config = ServerConfig(
            keys=keys,
            state_db=work / "server.sqlite",
            listen="127.0.0.1:0",
            schedule=schedule,
            embedding_dim=args.embedding_dim,
            reports_dir=work / "reports",
            cache_dir=cache,
            dp=dp,
        )
        server = start_server(config, load_server_keys(keys))
        stop, failures = threading.Event(), {}

        def artist(name: str, folder: Path) -> None:
            client = ClientConfig(
                keys=keys,
                data=folder,
                server=f"127.0.0.1:{server.port}",
                artist=name,
                cache_dir=cache,
                state_dir=work / "state" / name,
                reports_dir=work / "artist-reports" / name,
                lifetime_ledger=work / "lifetime-ledger.sqlite",  # synthetic artists: not the user's ledger
            )
            try:
                run_artist(client, load_artist_keys(keys, name), stop)
            except Exception as exc:  # reported below
                failures[name] = exc

        threads = [threading.Thread(target=artist, args=item, daemon=True) for item in folders.items()]
        for thread in threads:
            thread.start()
        try:
            finished = server.wait_finished(args.timeout)
            for thread in threads:
                thread.join(timeout=60)
            failed = server.servicer.coordinator.failed
        finally:
            stop.set()
            server.stop(0)
        if not finished or failed or failures:
            raise SystemExit(f"{mode}: the federation did not finish: {failed or failures or 'timeout'}")
        meter, per = server.servicer.meter, args.artists * args.rounds
        return {
            "upload": sum(meter.received[m] for m in UPLOADS) / per,
            "download": sum(meter.sent[m] for m in DOWNLOADS) / per,
            "all_received": sum(meter.received.values()) / per,
            "all_sent": sum(meter.sent.values()) / per,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artists", type=int, default=4, help="artist threads (default %(default)s)")
    parser.add_argument("--modes", default="none,ckks", help="comma-separated secure modes (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="training rounds (default %(default)s)")
    parser.add_argument("--per-artist", type=int, default=12, help="artworks per artist (default %(default)s)")
    parser.add_argument("--epsilon", type=float, default=8.0, help="DP budget; inf = no DP (default %(default)s)")
    parser.add_argument("--embedding-dim", type=int, default=DEFAULT_EMBEDDING_DIM, help="(default %(default)s)")
    parser.add_argument("--phase-seconds", type=float, default=600.0, help="phase deadline (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=3000.0, help="per federation, seconds (default %(default)s)")
    parser.add_argument("--cache", type=Path, default=None, help="feature / warm-start cache (default: a fresh one)")
    args = parser.parse_args(argv)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench-bytes-cache-"))
    rows = []
    for mode in args.modes.split(","):
        result = measure(mode, args, cache)
        rows.append([mode, *(f"{result[k] / 1e6:.3f}" for k in ("upload", "download", "all_received", "all_sent"))])
    print(render_table(["secure", "upload MB", "download MB", "all received MB", "all sent MB"], rows))
    print(
        f"(per artist per training round; {args.artists} artists, {args.rounds} rounds, epsilon {args.epsilon:g}, "
        f"{args.embedding_dim}-d embeddings)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
