"""``fedstyle synth``: write a procedurally generated federation as an image folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedstyle_secure.data.synth import write_synthetic_folder
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.arguments import seed_value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic artists' artworks as <out>/<artist>/<nnn>.png",
        description="Generate artworks procedurally: each artist has a distinct, learnable style "
        "(palette family, stroke direction/length/width, texture scale, composition) with real "
        "within-artist variety. Same arguments, same pixels.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--artists", type=int, default=8, metavar="N", help="number of artists (default %(default)s)")
    p.add_argument("--per-artist", type=int, default=24, metavar="M", help="artworks per artist (default %(default)s)")
    p.add_argument("--seed", type=seed_value, default=0, metavar="S", help="generator seed (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.artists < 1 or args.per_artist < 1:
        raise ConfigError(f"--artists and --per-artist must be >= 1, got {args.artists} and {args.per_artist}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ConfigError(
            f"--out {args.out} is not a new or empty folder: the artworks would mix with what it holds "
            "(a folder per artist would then hold two styles)"
        )
    n = write_synthetic_folder(args.out, args.artists, args.per_artist, args.seed)
    print(f"wrote {n} artworks of {args.artists} artists to {args.out}")
    return 0
