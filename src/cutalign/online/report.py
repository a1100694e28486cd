"""The per-iteration summary (one row per iteration; row 0 is the starting policy) and its PNG plot."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_bytes

TIMED_STAGES = ("generate", "judge", "train", "merge", "eval")


def summary_row(k: int, data: dict[str, Any]) -> dict[str, Any]:
    """Row k of the table from iteration k's manifest (k = 0: the run manifest, the starting policy).

    `satisfactory_rate` is measured on iteration k's generations, i.e. of the policy *before* its
    training; `eval` is measured on the model *after* it (row 0: the starting policy).
    """
    metrics = data.get("metrics", {})
    counts = data.get("counts", {})
    timings = data.get("timings", {})
    eval_metrics = (data.get("eval") if k == 0 else metrics.get("eval")) or {}
    return {
        "iteration": k,
        "prompts": counts.get("prompts"),
        "satisfactory": counts.get("satisfactory"),
        "judge_errors": counts.get("judge_errors"),
        "trained_on": counts.get("trained_on"),
        "satisfactory_rate": metrics.get("satisfactory_rate"),
        "train_loss": metrics.get("train_loss"),
        "unlikely_fraction": metrics.get("unlikely_fraction"),
        "eval": eval_metrics,
        "seconds": {s: timings[s] for s in (("base", "base_eval") if k == 0 else TIMED_STAGES) if s in timings},
    }


def write_plot(rows: list[dict[str, Any]], path: Path, eval_metric: str) -> Path | None:
    """Four curves over iterations (satisfactory rate, eval metric, train loss, unlikely fraction), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = [("satisfactory_rate", "satisfactory rate of the judged generations"),
              (eval_metric, f"eval: {eval_metric} (after the iteration's training)"),
              ("train_loss", "train loss (mean of logged steps)"),
              ("unlikely_fraction", "unlikely_fraction (share of negative tokens flagged)")]
    figure = Figure(figsize=(10, 7), tight_layout=True)
    for index, (key, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(2, 2, index)
        points = [(r["iteration"], _value(r, key, eval_metric)) for r in rows]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            axes.plot([x for x, _ in points], [y for _, y in points], marker="o")
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("iteration")
        axes.set_xticks([r["iteration"] for r in rows])
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _value(row: dict[str, Any], key: str, eval_metric: str) -> float | None:
    if key == eval_metric and key not in row:
        return row["eval"].get(eval_metric)
    value = row.get(key)
    return value if isinstance(value, int | float) else None
