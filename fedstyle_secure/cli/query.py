"""``fedstyle query``: which artists paint like this image?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import grpc

from fedstyle_secure.data.images import decode_image
from fedstyle_secure.errors import ConfigError, DataError, TransportError
from fedstyle_secure.experiments.output import render_table
from fedstyle_secure.files import read_regular_file
from fedstyle_secure.retrieval.index import StyleIndex

MAX_QUERY_IMAGE_BYTES = 64 << 20
"""Largest query image sent (bytes); the server decodes at most 4096 x 4096 pixels of it anyway."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "query",
        help="rank artists by style similarity to an image",
        description="Embed IMAGE with the index's encoder and rank artists by cosine similarity "
        "between the image and each artist's published style prototype.  Either locally from an "
        "index folder (--index), or by asking a running federation server over mutual TLS "
        "(--server, with a buyer key bundle).",
    )
    p.add_argument("image", type=Path, metavar="IMAGE", help="query image (jpg/png/webp)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--index", type=Path, metavar="DIR", help="style index built by `fedstyle index` or `simulate --index-out`"
    )
    source.add_argument(
        "--server", metavar="HOST:PORT", help="ask a running `fedstyle server` (needs --keys and --buyer)"
    )
    p.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="with --server: buyer bundle (`fedstyle keys bundle --buyer NAME`) or full key set",
    )
    p.add_argument("--buyer", metavar="NAME", help="with --server: the buyer id of the TLS client certificate")
    p.add_argument(
        "--server-name",
        default="localhost",
        metavar="NAME",
        help="with --server: host name the server certificate is checked against (default %(default)s)",
    )
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="number of artists to show (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    ranked = _rank_remotely(args) if args.server else _rank_locally(args)
    if args.json:
        print(
            json.dumps(
                {
                    "image": str(args.image),
                    "results": [{"rank": i + 1, "artist": a, "score": s} for i, (a, s) in enumerate(ranked)],
                },
                indent=2,
            )
        )
    else:
        print(render_table(["rank", "artist", "cosine"], [[i + 1, a, s] for i, (a, s) in enumerate(ranked)]))
    return 0


def _rank_locally(args: argparse.Namespace) -> list[tuple[str, float]]:
    index = StyleIndex.load(args.index)
    embedding = index.embed_images(decode_image(args.image)[None])[0]
    return [(r.artist, r.score) for r in index.rank(embedding, args.top_k)]


def _rank_remotely(args: argparse.Namespace) -> list[tuple[str, float]]:
    """The server embeds the image with its published encoder and ranks the published prototypes."""
    from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem
    from fedstyle_secure.transport.artist.channel import query

    if args.keys is None or args.buyer is None:
        raise ConfigError("--server needs --keys DIR (a buyer bundle) and --buyer NAME")
    decode_image(args.image)  # fail here, with the file's name, rather than on the server
    try:
        image = read_regular_file(args.image, MAX_QUERY_IMAGE_BYTES)
    except ValueError as exc:
        raise DataError(f"cannot send the query image: {exc}") from exc
    try:
        return query(
            args.server,
            load_buyer_tls_pem(args.keys, args.buyer),
            image,
            args.top_k,
            server_name=args.server_name,
        )
    except grpc.RpcError as exc:
        hint = ""
        if "Hostname Verification" in str(exc.details()):
            hint = (
                f"; the server's certificate does not name {args.server_name!r} (--server-name, default "
                "localhost): give --server-name, a host it was made for (`keys init --server-host`)"
            )
        raise TransportError(f"query to {args.server} failed: {exc.code().name}: {exc.details()}{hint}") from exc
