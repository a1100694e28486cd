"""One table (and a bar chart) over several eval outputs, e.g. the base model vs CUT vs SFT."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cutalign.eval.results import markdown_table, read_results
from cutalign.files import atomic_write_bytes


def compare_runs(runs: Sequence[str | Path], names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"eval": "compare", "metrics": [...], "runs": [{"name", "path", "eval", "scores"}]}`` over ``runs``.

    A run's name is its directory name unless ``names`` gives one; metrics are the union of every
    run's ``scores`` (a run without a metric shows None there).
    """
    if not runs:
        raise ValueError("compare needs at least one eval output directory")
    if names is not None and len(names) != len(runs):
        raise ValueError(f"{len(names)} names for {len(runs)} runs")
    rows = []
    for i, run in enumerate(runs):
        loaded = read_results(run)
        name = names[i] if names is not None else Path(run).resolve().name
        rows.append({"name": name, "path": str(run), "eval": loaded["eval"], "scores": loaded.get("scores", {}),
                     "intervals": {k.removesuffix("_ci"): v for k, v in loaded.items() if k.endswith("_ci") and v}})
    metrics = list(dict.fromkeys(m for r in rows for m in r["scores"]))
    return {"eval": "compare", "metrics": metrics, "runs": rows}


def compare_markdown(table: dict[str, Any]) -> str:
    body = [[r["name"], r["eval"], *(_fmt(r["scores"].get(m)) for m in table["metrics"])] for r in table["runs"]]
    return "# Comparison\n\n" + markdown_table(["run", "eval", *table["metrics"]], body)


def compare_chart(table: dict[str, Any], path: str | Path) -> None:
    """Grouped bars: one group per metric, one bar per run (95% intervals drawn where the run has them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, runs = table["metrics"], table["runs"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * max(1, len(runs)) / 2 + 2), 4))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        xs = [m + (i - (len(runs) - 1) / 2) * width for m in range(len(metrics))]
        values = [run["scores"].get(m) or 0.0 for m in metrics]
        errors = [[0.0] * len(metrics), [0.0] * len(metrics)]
        for j, m in enumerate(metrics):
            ci = run["intervals"].get(m)
            if ci and run["scores"].get(m) is not None:
                errors[0][j], errors[1][j] = values[j] - ci[0], ci[1] - values[j]
        ax.bar(xs, values, width=width, label=run["name"], yerr=errors, capsize=3)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels(metrics)
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
