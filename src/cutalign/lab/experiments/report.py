"""What a lab run shows: markdown tables and report sections, and the two plots every experiment shares.

Plot helpers (matplotlib's Agg canvas, no pyplot state, the PNG written atomically):

- :func:`bar_chart`: methods x metrics, grouped bars with error bars
  (``groups = {"cut": {"all": (0.71, 0.02), "targeted": (0.33, 0.05)}, "sft": {...}}``);
- :func:`line_chart`: one line per series over shared x values (an iteration, a lambda).

Pass ``ctx.figure_path(stem)`` as ``path`` and put ``ctx.relative(path)`` in ``ExperimentResult.figures``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_bytes
from cutalign.lab.experiments.context import Table


def format_cell(value: Any) -> str:
    """A table cell as text: floats to 3 decimals (integers as integers), ``None`` as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table | Mapping[str, Any]) -> str:
    """A table (or its ``to_dict()``) as a titled markdown table with its note below."""
    t = table.to_dict() if isinstance(table, Table) else table
    lines = [f"**{t['title']}**", "", "| " + " | ".join(format_cell(c) for c in t["columns"]) + " |",
             "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in t["rows"]]
    if t.get("note"):
        lines += ["", f"_{t['note']}_"]
    return "\n".join(lines)


def experiment_section(number: int, entry: Mapping[str, Any]) -> str:
    """One experiment of ``results.json`` (its ``result`` or its ``error``) as a report section."""
    title = (entry.get("result") or {}).get("title") or entry.get("title", entry["name"])
    parts = [f"## {number}. {title}", "",
             f"`{entry['name']}`: {entry['status']}, {entry.get('seconds', 0.0):.1f} s"
             + (f", {entry['units_computed']} units computed, {entry['units_cached']} cached"
                if "units_computed" in entry else "")]
    if entry["status"] != "ok":
        parts += ["", "```", entry.get("error", "unknown error"), "```"]
        return "\n".join(parts)
    result = entry["result"]
    parts += [item for table in result["tables"] for item in ("", markdown_table(table))]
    parts += [item for figure in result["figures"] for item in ("", f"![]({figure})")]
    if result["findings"]:
        parts += ["", "**Findings**", "", *(f"- {f}" for f in result["findings"])]
    return "\n".join(parts)


def render_report(results: Mapping[str, Any], numbers: Mapping[str, int]) -> str:
    """The whole ``report.md`` of a run from its ``results.json`` content."""
    header = [f"# cutalign lab: preset `{results['preset']['name']}`", "",
              f"- command: `{results['command']}`", f"- machine: {results['machine']}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}",
              f"- total time: {results['total_seconds']:.1f} s (this invocation)",
              f"- status: {results['status']}"]
    failed = [e["name"] for e in results["experiments"].values() if e["status"] != "ok"]
    if failed:
        header.append(f"- failed: {', '.join(failed)}")
    sections = [experiment_section(numbers.get(name, 0), entry) for name, entry in results["experiments"].items()]
    return "\n\n".join(["\n".join(header), *sections]) + "\n"


def bar_chart(path: str | Path, title: str, groups: Mapping[str, Mapping[str, tuple[float, float]]],
              ylabel: str) -> Path:
    """Grouped bars: one group per key of ``groups`` (a method), one bar per metric, ``(mean, std)`` each."""
    figure, axes = _figure(max(6.0, 0.5 * sum(len(g) for g in groups.values()) + 2))
    metrics = list(dict.fromkeys(m for g in groups.values() for m in g))
    width = 0.8 / max(1, len(metrics))
    for j, metric in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(groups))]
        values = [groups[g].get(metric, (math.nan, 0.0)) for g in groups]
        axes.bar(xs, [v[0] for v in values], width, yerr=[v[1] for v in values], capsize=2, label=metric)
    axes.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right", fontsize=8)
    return _save(figure, axes, path, title, ylabel, legend=len(metrics) > 1)


def line_chart(path: str | Path, title: str, xs: Sequence[float], series: Mapping[str, Sequence[float]],
               xlabel: str, ylabel: str, errors: Mapping[str, Sequence[float]] | None = None) -> Path:
    """One line per series over ``xs`` (NaN for a missing point), with a +-``errors`` band where given."""
    figure, axes = _figure(6.0)
    for name, ys in series.items():
        axes.plot(xs, ys, marker="o", label=name)
        if errors and name in errors:
            axes.fill_between(xs, [y - e for y, e in zip(ys, errors[name], strict=True)],
                              [y + e for y, e in zip(ys, errors[name], strict=True)], alpha=0.2)
    axes.set_xlabel(xlabel)
    return _save(figure, axes, path, title, ylabel, legend=len(series) > 1)


def _figure(width: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(min(width, 16.0), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Any, axes: Any, path: str | Path, title: str, ylabel: str, legend: bool) -> Path:
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    if legend:
        axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
