"""``fedstyle query``: which artists paint like this image?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedstyle_secure.cli.output import render_table
from fedstyle_secure.data.images import decode_image
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.retrieval.index import StyleIndex


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "query",
        help="rank artists by style similarity to an image",
        description="Embed IMAGE with the index's encoder and rank artists by cosine similarity "
        "between the image and each artist's published style prototype.",
    )
    p.add_argument("image", type=Path, metavar="IMAGE", help="query image (jpg/png/webp)")
    p.add_argument("--index", type=Path, required=True, metavar="DIR", help="style index built by `fedstyle index` or `simulate --index-out`")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="number of artists to show (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    index = StyleIndex.load(args.index)
    embedding = index.embed_images(decode_image(args.image)[None])[0]
    ranked = index.rank(embedding, args.top_k)
    if args.json:
        print(json.dumps({"image": str(args.image), "results": [{"rank": i + 1, "artist": r.artist, "score": r.score} for i, r in enumerate(ranked)]}, indent=2))
    else:
        print(render_table(["rank", "artist", "cosine"], [[i + 1, r.artist, r.score] for i, r in enumerate(ranked)]))
    return 0
