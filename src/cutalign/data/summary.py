"""What a judged dataset holds: polarity counts, drops, and token lengths (to pick a cutoff length)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import datasets
from rich.table import Table

from cutalign.data.report import DropReport
from cutalign.data.schema import prompt_text

PERCENTILES = (50, 90, 99)
TOKEN_BATCH = 256


def _column(examples: datasets.Dataset | Sequence[dict[str, Any]], key: str) -> list[Any]:
    if isinstance(examples, datasets.Dataset):
        return list(examples[key])
    return [example[key] for example in examples]


def _nearest_rank(sorted_values: list[int], percent: int) -> int:
    """Nearest-rank percentile, so that every reported value is a real example's length."""
    return sorted_values[max(math.ceil(percent / 100 * len(sorted_values)) - 1, 0)]


def _length_stats(tokenizer: Any, texts: list[str]) -> dict[str, int | None]:
    lengths: list[int] = []
    for start in range(0, len(texts), TOKEN_BATCH):
        encoded = tokenizer(texts[start : start + TOKEN_BATCH], add_special_tokens=False)["input_ids"]
        lengths.extend(len(ids) for ids in encoded)
    lengths.sort()
    stats: dict[str, int | None] = {
        f"p{p}": _nearest_rank(lengths, p) if lengths else None for p in PERCENTILES
    }
    stats["max"] = lengths[-1] if lengths else None
    return stats


def summarize(
    examples: datasets.Dataset | Sequence[dict[str, Any]], dropped: DropReport, tokenizer: Any = None
) -> dict[str, Any]:
    """Counts (``total``, ``positive``, ``negative``, ``dropped`` by reason; ``selected_out`` and
    ``notices`` by kind when there are any) and, with a tokenizer, ``tokens``: token-length
    percentiles of prompts, judgments (non-null only) and completions.
    """
    labels = _column(examples, "label")
    positive = sum(1 for label in labels if label)
    summary: dict[str, Any] = {
        "total": len(labels),
        "positive": positive,
        "negative": len(labels) - positive,
        "dropped": dropped.drops(),
    }
    if dropped.selections():  # intentional (e.g. Align-P downsampling), shown apart from drops
        summary["selected_out"] = dropped.selections()
    if dropped.notices:
        summary["notices"] = dropped.notices_dict()
    if tokenizer is not None:
        texts = {
            "prompt": [prompt_text(p) for p in _column(examples, "prompt")],
            "judgment": [j for j in _column(examples, "judgment") if j is not None],
            "completion": _column(examples, "completion"),
        }
        summary["tokens"] = {name: _length_stats(tokenizer, values) for name, values in texts.items()}
    return summary


def render_summary(summary: dict[str, Any]) -> Table:
    """A two-column rich table of :func:`summarize`'s output, for humans."""
    table = Table(title="judged data", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("total", "positive", "negative"):
        table.add_row(key, str(summary[key]))
    dropped = summary["dropped"]
    table.add_row("dropped", str(sum(dropped.values())))
    for reason, count in dropped.items():
        table.add_row(f"  {reason}", str(count))
    for title, counts in (("selected out (intentional)", summary.get("selected_out", {})),
                          ("notices (kept)", summary.get("notices", {}))):
        if counts:
            table.add_row(title, str(sum(counts.values())))
        for kind, count in counts.items():
            table.add_row(f"  {kind}", str(count))
    for name, stats in summary.get("tokens", {}).items():
        shown = "  ".join(f"{key} {value if value is not None else '-'}" for key, value in stats.items())
        table.add_row(f"{name} tokens", shown)
    return table
