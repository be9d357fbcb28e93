"""``fedstyle index``: build a style index from a saved encoder and an image folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fedstyle_secure.data.images import load_image_folder
from fedstyle_secure.models.embed import prototypes_from
from fedstyle_secure.models.inputs import default_cache_dir
from fedstyle_secure.retrieval.index import StyleIndex, build_index


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="build a style index (artist prototypes, optionally artwork embeddings)",
        description="Embed every artwork of <data>/<artist>/ with a trained encoder (an index saved by "
        "`fedstyle simulate --index-out`) and store each artist's prototype (mean embedding).",
    )
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="a saved index or encoder directory")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="image folder <DIR>/<artist>/<image>")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the index")
    p.add_argument("--with-artworks", action="store_true", help="also store every artwork's embedding")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedstyle_secure.models.factory import load_encoder

    model, config = load_encoder(args.model)
    artworks, report = load_image_folder(args.data, min_artists=1)
    base = StyleIndex(artists=artworks.artists, prototypes=np.zeros((1, 1)), model=model, config=config)
    embeddings = base.embed_images(artworks.images, default_cache_dir())  # the artists' own artworks
    protos, _ = prototypes_from(embeddings, artworks.labels, len(artworks.artists))
    index = build_index(
        model,
        config,
        artworks.artists,
        protos,
        artwork_embeddings=embeddings if args.with_artworks else None,
        artwork_labels=artworks.labels if args.with_artworks else None,
        artwork_sources=artworks.sources if args.with_artworks else (),
    )
    index.save(args.out)
    skipped = f"; skipped {len(report.skipped)} unreadable image(s)" if report.skipped else ""
    print(f"indexed {len(artworks)} artworks of {len(artworks.artists)} artists into {args.out}{skipped}")
    return 0
