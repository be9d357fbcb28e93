"""Shared shape of the long-running process commands (``server``, ``client``): one TOML file
(``--config``) says everything, ``--log-format`` picks text or JSON-lines logs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from fedstyle_secure.transport.logs import LOG_FORMATS


def add_log_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log as text or one JSON object per line (default %(default)s)",
    )


def register_toml_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    summary: str,
    description: str,
    config_help: str,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` taking ``--config TOML`` (required) and ``--log-format``."""
    p = subparsers.add_parser(name, help=summary, description=description)
    p.add_argument("--config", type=Path, required=True, metavar="TOML", help=config_help)
    add_log_format(p)
    p.set_defaults(func=func)
    return p
