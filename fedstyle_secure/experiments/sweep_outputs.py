"""Files of a finished sweep: ``sweep.csv``, ``sweep.json``, ``sweep.md`` and ``sweep.png``."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from fedstyle_secure.experiments.output import write_json
from fedstyle_secure.experiments.sweep import METRICS, CellResult, CellSpec, SummaryRow, format_epsilon

Cells = Sequence[tuple[CellSpec, CellResult]]


def write_csv(path: Path, cells: Cells) -> None:
    """One row per cell: algorithm, epsilon, seed, the metrics and the wall time (seconds)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["algorithm", "epsilon", "seed", *METRICS, "wall_time_s"])
        for spec, result in cells:
            row = [spec.algorithm, format_epsilon(spec.epsilon), spec.seed]
            writer.writerow([*row, *(result.metrics[m] for m in METRICS), result.extra.get("wall_time_s", "")])


def summary_dicts(summary: Sequence[SummaryRow]) -> list[dict]:
    return [
        {
            "algorithm": r.algorithm,
            "epsilon": format_epsilon(r.epsilon),
            "n_seeds": r.n_seeds,
            "mean": r.mean,
            "std": r.std,
            "kept_fraction_vs_inf": r.kept_fraction,
        }
        for r in summary
    ]


def markdown_table(summary: Sequence[SummaryRow]) -> str:
    """Algorithm x epsilon: artist accuracy and mAP as mean ± std over seeds, accuracy kept vs inf."""
    lines = ["| algorithm | epsilon | seeds | artist accuracy | mAP | kept vs inf |", "|---|---|---|---|---|---|"]
    for r in summary:
        kept = "-" if r.kept_fraction is None else f"{r.kept_fraction:.3f}"
        acc = f"{r.mean['artist_accuracy']:.3f} ± {r.std['artist_accuracy']:.3f}"
        mAP = f"{r.mean['map']:.3f} ± {r.std['map']:.3f}"
        lines.append(f"| {r.algorithm} | {format_epsilon(r.epsilon)} | {r.n_seeds} | {acc} | {mAP} | {kept} |")
    return "\n".join(lines)


def _x_positions(epsilons: Sequence[float]) -> dict[float, float]:
    """Finite epsilons at themselves; inf one decade-ish right of the largest finite value."""
    finite = sorted(e for e in set(epsilons) if not math.isinf(e))
    pos = {e: e for e in finite}
    if any(math.isinf(e) for e in epsilons):
        pos[math.inf] = finite[-1] * 4 if finite else 1.0
    return pos


def write_plot(path: Path, summary: Sequence[SummaryRow]) -> None:
    """Two panels (artist accuracy, mAP) against epsilon, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = _x_positions([r.epsilon for r in summary])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, (metric, label) in zip(axes, (("artist_accuracy", "artist accuracy"), ("map", "mAP"))):
        for algorithm in dict.fromkeys(r.algorithm for r in summary):
            rows = sorted((r for r in summary if r.algorithm == algorithm), key=lambda r: r.epsilon)
            xs = [pos[r.epsilon] for r in rows]
            ax.errorbar(
                xs,
                [r.mean[metric] for r in rows],
                yerr=[r.std[metric] for r in rows],
                marker="o",
                capsize=3,
                label=algorithm,
            )
        ticks = sorted(pos.items(), key=lambda kv: kv[1])
        ax.set_xscale("log")
        ax.set_xticks([x for _, x in ticks], [format_epsilon(e) for e, _ in ticks])
        ax.minorticks_off()
        ax.set_xlabel("epsilon per artist (inf = no DP)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, cells: Cells, summary: Sequence[SummaryRow]) -> list[Path]:
    """Write all four files into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / n for n in ("sweep.csv", "sweep.json", "sweep.md", "sweep.png")]
    write_csv(paths[0], cells)
    cell_docs = [{**spec.as_dict(), "metrics": res.metrics, "extra": res.extra} for spec, res in cells]
    write_json(paths[1], {"cells": cell_docs, "summary": summary_dicts(summary)})
    paths[2].write_text("# Privacy-budget sweep\n\n" + markdown_table(summary) + "\n")
    write_plot(paths[3], summary)
    return paths
