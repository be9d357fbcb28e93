"""``fedstyle index``: build a style index from a saved encoder and an image folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fedstyle_secure.data.images import load_image_folder
from fedstyle_secure.files import require_writable_target
from fedstyle_secure.models.embed import prototypes_from
from fedstyle_secure.models.inputs import default_cache_dir
from fedstyle_secure.retrieval.index import StyleIndex, build_index


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="build a NON-PRIVATE style index from a folder the platform holds (artist prototypes)",
        description="Embed every artwork of <data>/<artist>/ with a trained encoder (an index saved by "
        "`fedstyle simulate --index-out`) and store each artist's prototype (mean embedding).  This index is "
        "not a DP release: its prototypes are exact means of the folder's artworks, for a platform indexing "
        "portfolios it already holds (public ones, or its own).  The federation's private index is the one "
        "the server publishes, or `simulate --index-out` writes: the artists' released prototypes.",
    )
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="a saved index or encoder directory")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="image folder <DIR>/<artist>/<image>")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the index")
    p.add_argument(
        "--with-artworks",
        action="store_true",
        help="also store every artwork's embedding and its file path relative to --data",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedstyle_secure.models.factory import load_encoder

    require_writable_target(args.out, folder=True, what="--out")  # before any image is embedded
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
        artwork_sources=_relative_sources(artworks.sources, args.data) if args.with_artworks else (),
    )
    index.save(args.out)
    skipped = f"; skipped {len(report.skipped)} unreadable image(s)" if report.skipped else ""
    print(f"indexed {len(artworks)} artworks of {len(artworks.artists)} artists into {args.out}{skipped}")
    return 0


def _relative_sources(sources: tuple[str, ...], root: Path) -> tuple[str, ...]:
    """Artwork file paths relative to the data folder: an index handed out names no path of the
    machine that built it."""
    return tuple(str(Path(source).relative_to(root)) for source in sources)  # each is root/<artist>/<file>
