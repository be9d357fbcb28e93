"""Human-readable tables and machine-readable files for command output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedstyle_secure.files import write_bytes_atomic


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table; floats are shown with 3 decimals."""

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in text_rows)) if text_rows else len(str(h)) for i, h in enumerate(headers)
    ]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in text_rows]
    return "\n".join([line, rule, *body])


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n").encode())


METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("artist_accuracy", "artist acc"),
    ("macro_f1", "macro-F1"),
    ("map", "mAP"),
    ("top5_accuracy", "top-5 acc"),
    ("nn_precision_at_1", "NN P@1"),
)


def print_privacy_table(privacy: dict[str, dict]) -> None:
    """Each artist's epsilon spent against its budget (privacy unit: one artwork)."""
    rows = [
        [
            artist,
            info["epsilon_spent"],
            info["epsilon_budget"],
            f"{info['delta']:.1e}",
            info["accountant"],
            info["retired"] or "-",
        ]
        for artist, info in sorted(privacy.items())
    ]
    print("\nprivacy (record-level DP; the privacy unit is one artwork, not an artist):")
    print(render_table(["artist", "epsilon spent", "budget", "delta", "accountant", "retired"], rows))
