#!/usr/bin/env python
"""Measure the cost of each ``--secure`` mode: per-artist compute, server compute, bytes per artist.

Every summation comes from :func:`fedstyle_secure.secure.factory.make_summation` and runs one
in-process round on uniform random inputs in [-1, 1].  Compute is wall-clock seconds on this
machine (single process; CPU contention from other jobs inflates it), split by role:

* ``none``: the server's summation; artists compute nothing.
* ``ckks``: :attr:`CkksSummation.last_timings` (encrypt + serialise per artist; parse + check
  at the server; the committee's summation and decryption charged to each of its two members).
* ``secagg`` / ``secagg+``: the masking state machines are timed per call through proxies;
  message (de)serialisation is counted as transport, in neither role.

Bytes are the serialised payloads an artist sends (``up``) and receives (``down``, mean over
the artists that stay for the result; under ``ckks`` only the two committee members download,
every other contribution each), shown next to the plain float32 vector (4 d bytes).  Grid cells
whose running time, extrapolated from the largest measured cell of the same mode, exceeds
``--cell-budget`` are skipped and listed with the estimate.

    python scripts/bench_secure.py --quick --out runs/bench-quick
    python scripts/bench_secure.py --out runs/bench          # d in {2048, 32768, 262144}, n in {10, 50, 200}
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from fedstyle_secure.experiments.output import render_table, write_json
from fedstyle_secure.secure.api import SECURE_MODES
from fedstyle_secure.secure.ckks.primitives import CkksContext, CkksParams, encrypt
from fedstyle_secure.secure.ckks.summation import CkksSummation
from fedstyle_secure.secure.factory import make_summation

FULL_DIMS = (2_048, 32_768, 262_144)
FULL_CLIENTS = (10, 50, 200)
QUICK_DIMS = (2_048, 16_384)
QUICK_CLIENTS = (5, 10, 20)
CLIP_RANGE = (-1.0, 1.0)
FLOAT32_BYTES = 4
T = TypeVar("T")

#: Relative work of one round, used only to extrapolate the running time of skipped cells.
WORK: dict[str, Callable[[int, int], float]] = {
    "none": lambda n, d: n * d,
    "ckks": lambda n, d: n * d,
    "secagg": lambda n, d: n * n * d,  # every artist expands n - 1 pairwise masks
    "secagg+": lambda n, d: n * max(2.0, 2 * math.ceil(math.log2(n))) * d,  # ~2 log2 n neighbours
}


@dataclass(frozen=True)
class Cell:
    """One measured (or skipped) grid point; seconds and bytes are per round."""

    mode: str
    d: int
    n: int
    artist_seconds: float | None = None  # mean over artists
    server_seconds: float | None = None
    wall_seconds: float | None = None
    bytes_up: float | None = None  # mean per artist
    bytes_down: float | None = None
    skipped: str | None = None

    @property
    def up_ratio(self) -> float | None:
        return None if self.bytes_up is None else self.bytes_up / (FLOAT32_BYTES * self.d)

    @property
    def down_ratio(self) -> float | None:
        return None if self.bytes_down is None else self.bytes_down / (FLOAT32_BYTES * self.d)


def _measured(value: float | None) -> float:
    """A measured cell's value (only a skipped cell has none)."""
    assert value is not None
    return value


class _Timed:
    """Proxy adding the wall time of every method call on ``target`` to ``clock[key]``."""

    def __init__(self, target: Any, clock: defaultdict[str, float], key: str) -> None:
        self._target, self._clock, self._key = target, clock, key

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._clock[self._key] += time.perf_counter() - started

        return timed


def _timed(target: T, clock: defaultdict[str, float], key: str) -> T:
    """``target`` behind a :class:`_Timed` proxy, typed as ``target`` (the proxy forwards every attribute)."""
    return cast(T, _Timed(target, clock, key))


def _run_masked(
    summation: Any, inputs: Mapping[str, np.ndarray]
) -> tuple[defaultdict[str, float], Mapping[str, int], Mapping[str, int]]:
    from fedstyle_secure.secure.masking.summation import InProcessRound

    length = summation.validate_inputs(inputs)
    server, artists = summation.prepare(list(inputs), round_id=1, vector_length=length)
    clock: defaultdict[str, float] = defaultdict(float)
    timed_artists = {a: _timed(artist, clock, a) for a, artist in artists.items()}
    record = InProcessRound(_timed(server, clock, "server"), timed_artists).run(inputs, {})
    return clock, record.bytes_up, record.bytes_down


def measure(mode: str, n: int, d: int, seed: int) -> Cell:
    rng = np.random.default_rng([seed, n, d])
    ids = [f"artist_{i:03d}" for i in range(n)]
    inputs = {a: rng.uniform(*CLIP_RANGE, size=d).astype(np.float32) for a in ids}
    options: dict[str, Any] = {"clip_range": CLIP_RANGE, "max_clients": n}
    summation = make_summation(mode, ids, **options)
    started = time.perf_counter()
    if mode.startswith("secagg"):
        clock, bytes_up, bytes_down = _run_masked(summation, inputs)
        artist_seconds = [clock[a] for a in ids]
        server_seconds = clock["server"]
    else:
        result = summation.sum(inputs, round_id=1)
        bytes_up, bytes_down = result.bytes_up, result.bytes_down
        if isinstance(summation, CkksSummation):
            artist_seconds = list(summation.last_timings.artist_seconds.values())
            server_seconds = summation.last_timings.server_seconds
        else:
            artist_seconds, server_seconds = [0.0], time.perf_counter() - started
    return Cell(
        mode=mode,
        d=d,
        n=n,
        artist_seconds=float(np.mean(artist_seconds)),
        server_seconds=float(server_seconds),
        wall_seconds=time.perf_counter() - started,
        bytes_up=float(np.mean(list(bytes_up.values()))),
        bytes_down=float(np.mean(list(bytes_down.values()))),
    )


def run_grid(modes: Sequence[str], dims: Sequence[int], clients: Sequence[int], budget: float, seed: int) -> list[Cell]:
    cells: list[Cell] = []
    for mode in modes:
        reference: Cell | None = None  # the largest measured cell of this mode
        for d in sorted(dims):
            for n in sorted(clients):
                if reference is not None:
                    estimate = (
                        _measured(reference.wall_seconds) * WORK[mode](n, d) / WORK[mode](reference.n, reference.d)
                    )
                    if estimate > budget:
                        source = f"n={reference.n}, d={reference.d}"
                        reason = f"estimated {estimate:.0f} s > budget {budget:.0f} s (from {source})"
                        cells.append(Cell(mode=mode, d=d, n=n, skipped=reason))
                        print(f"skip {mode:8s} d={d:<7d} n={n:<4d} {reason}", file=sys.stderr, flush=True)
                        continue
                cell = measure(mode, n, d, seed)
                cells.append(cell)
                reference = cell
                print(
                    f"done {mode:8s} d={d:<7d} n={n:<4d} wall {cell.wall_seconds:.2f} s, up {cell.up_ratio:.2f}x plain",
                    file=sys.stderr,
                    flush=True,
                )
    return cells


#: CKKS parameter candidates compared by ``--ckks-sweep`` (the default is N=8192, [60, 40, 60], 2**40).
CKKS_CANDIDATES: tuple[CkksParams, ...] = (
    CkksParams(4096, (30, 25, 30), 25),
    CkksParams(8192, (40, 30, 40), 30),
    CkksParams(8192, (45, 35, 45), 35),
    CkksParams(8192, (60, 40, 60), 40),
    CkksParams(16384, (60, 40, 60), 40),
)
SWEEP_HEADERS = [
    "N",
    "primes",
    "scale bits",
    "mean err (100x128)",
    "weighted mean err",
    "bytes/value",
    "x float32",
    "encrypt ms/ct",
]


def ckks_sweep(seed: int) -> list[list[str]]:
    """Precision of the mean of 100 unit-norm 128-d vectors and full-ciphertext size per candidate."""
    rows = []
    vectors = np.random.default_rng(seed).standard_normal((100, 128))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    inputs = {f"a{i:03d}": v for i, v in enumerate(vectors)}
    for params in CKKS_CANDIDATES:
        context = CkksContext.generate(params)
        summation = CkksSummation(list(inputs), secret_context=context)
        mean_error = np.abs(summation.sum(inputs, round_id=0).total / 100 - vectors.mean(0)).max()
        weighted = summation.sum(inputs, round_id=1, weights=dict.fromkeys(inputs, 0.01)).total
        full = np.zeros(params.slots)
        started = time.perf_counter()
        size = len(encrypt(context, full).serialize())
        seconds = time.perf_counter() - started
        rows.append(
            [
                str(params.poly_modulus_degree),
                str(list(params.coeff_mod_bit_sizes)),
                str(params.scale_bits),
                f"{mean_error:.1e}",
                f"{np.abs(weighted - vectors.mean(0)).max():.1e}",
                f"{size / params.slots:.1f}",
                f"{size / params.slots / FLOAT32_BYTES:.1f}",
                f"{seconds * 1e3:.1f}",
            ]
        )
    return rows


# --------------------------------------------------------------------------- reporting


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cost_rows(cells: Sequence[Cell]) -> list[list[str]]:
    rows = []
    for c in sorted(cells, key=lambda c: (c.d, c.n, SECURE_MODES.index(c.mode))):
        rows.append(
            [
                f"{c.d:,}",
                str(c.n),
                c.mode,
                _fmt(c.artist_seconds, ".4f"),
                _fmt(c.server_seconds, ".3f"),
                _fmt(c.bytes_up and c.bytes_up / 1024, ",.1f"),
                _fmt(c.up_ratio, ".2f"),
                _fmt(c.down_ratio, ".2f"),
                c.skipped or "",
            ]
        )
    return rows


COST_HEADERS = ["d", "n", "mode", "artist s", "server s", "up KiB", "up x plain", "down x plain", "skipped"]


def growth_rows(cells: Sequence[Cell]) -> list[list[str]]:
    """Per-artist cost at each n relative to the smallest measured n (same mode and d)."""
    rows = []
    measured = [c for c in cells if c.skipped is None and c.mode != "none"]
    for mode in SECURE_MODES:
        for d in sorted({c.d for c in measured if c.mode == mode}):
            series = sorted((c for c in measured if c.mode == mode and c.d == d), key=lambda c: c.n)
            if len(series) < 2:
                continue
            base = series[0]
            for c in series:
                rows.append(
                    [
                        mode,
                        f"{d:,}",
                        str(c.n),
                        f"{c.n / base.n:.1f}",
                        f"{math.log2(c.n) / math.log2(base.n):.2f}",
                        f"{_measured(c.artist_seconds) / _measured(base.artist_seconds):.2f}",
                        f"{_measured(c.bytes_up) / _measured(base.bytes_up):.2f}",
                    ]
                )
    return rows


GROWTH_HEADERS = ["mode", "d", "n", "n ratio", "log2 n ratio", "artist s ratio", "artist bytes ratio"]


def _find(cells: Sequence[Cell], mode: str, d: int, n: int | None = None) -> Cell | None:
    matches = [c for c in cells if c.mode == mode and c.d == d and c.skipped is None and (n is None or c.n == n)]
    return min(matches, key=lambda c: c.n) if matches else None


def target_lines(cells: Sequence[Cell]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = []
    secagg = _find(cells, "secagg", 262_144, 50)
    lines.append(
        "secagg bytes up <= 1.5x plain float32 at d=262,144, n=50: "
        + (f"{secagg.up_ratio:.3f}x -> {verdict(_measured(secagg.up_ratio) <= 1.5)}" if secagg else "not measured")
    )
    ckks = _find(cells, "ckks", 262_144)
    lines.append(
        "ckks bytes up <= 20x plain float32 at d=262,144: "
        + (
            f"{ckks.up_ratio:.2f}x (n={ckks.n}) -> {verdict(_measured(ckks.up_ratio) <= 20)}"
            if ckks
            else "not measured"
        )
    )
    server = _find(cells, "ckks", 32_768, 200)
    lines.append(
        "ckks server aggregation n=200, d=32,768 within a few (<= 5) seconds: "
        + (
            f"{server.server_seconds:.2f} s -> {verdict(_measured(server.server_seconds) <= 5)}"
            if server
            else "not measured"
        )
    )
    return lines


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import tenseal

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "tenseal": tenseal.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"small grid: d in {QUICK_DIMS}, n in {QUICK_CLIENTS}")
    parser.add_argument("--modes", nargs="+", choices=SECURE_MODES, default=list(SECURE_MODES))
    parser.add_argument("--dims", nargs="+", type=int, help="vector lengths (overrides the grid)")
    parser.add_argument("--clients", nargs="+", type=int, help="artist counts (overrides the grid)")
    parser.add_argument(
        "--cell-budget",
        type=float,
        default=180.0,
        metavar="S",
        help="skip cells estimated above S seconds (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, metavar="DIR", help="write bench_secure.json and bench_secure.md here")
    parser.add_argument(
        "--ckks-sweep", action="store_true", help="only compare CKKS parameter candidates (precision, bytes)"
    )
    args = parser.parse_args(argv)
    if args.ckks_sweep:
        print(render_table(SWEEP_HEADERS, ckks_sweep(args.seed)))
        return 0

    dims = args.dims or (QUICK_DIMS if args.quick else FULL_DIMS)
    clients = args.clients or (QUICK_CLIENTS if args.quick else FULL_CLIENTS)
    env = environment()
    started = time.perf_counter()
    cells = run_grid(args.modes, dims, clients, args.cell_budget, args.seed)
    env["total_seconds"] = time.perf_counter() - started

    costs, growth, targets = cost_rows(cells), growth_rows(cells), target_lines(cells)
    print(render_table(COST_HEADERS, costs))
    print()
    print(render_table(GROWTH_HEADERS, growth))
    print()
    print("\n".join(targets))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "environment": env,
            "grid": {"dims": list(dims), "clients": list(clients)},
            "targets": targets,
        }
        payload["cells"] = [{**asdict(c), "up_ratio": c.up_ratio, "down_ratio": c.down_ratio} for c in cells]
        write_json(args.out / "bench_secure.json", payload)
        markdown = [
            "# Secure aggregation benchmark",
            "",
            f"Machine: {env['cpus']} CPUs, Python {env['python']}, TenSEAL {env['tenseal']}, "
            f"load average at start {env['load_average_at_start'][0]:.1f}; total {env['total_seconds']:.0f} s.",
            "",
            "## Cost per round",
            "",
            markdown_table(COST_HEADERS, costs),
            "",
            "## Growth of per-artist cost with n",
            "",
            markdown_table(GROWTH_HEADERS, growth),
            "",
            "## Targets",
            "",
            *[f"- {line}" for line in targets],
            "",
        ]
        (args.out / "bench_secure.md").write_text("\n".join(markdown))
        print(f"\nwrote {args.out / 'bench_secure.json'} and {args.out / 'bench_secure.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
