"""A figure in the style of the paper's Figure 2: per-token probabilities under both contexts, U marked.

For each negative: bars of p(t|x,j-) (the real judgment) and p(t|misaligned) (the fake positive
judgment, or the bare instruction) per response token; tokens in U are shaded and starred, so the
reader sees which tokens the judgment singles out and by how much. Positives have no judged
context and are left out. Rendered with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from cutalign.files import atomic_write_bytes
from cutalign.inspection.core import TokenReport

MAX_TOKENS = 60  # tokens per panel; longer responses show their first MAX_TOKENS


def render_figure(reports: Sequence[TokenReport], path: str | Path, *, max_examples: int = 4) -> int:
    """Write the PNG for up to ``max_examples`` negatives of ``reports``; returns how many are shown."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in reports if r.is_negative][:max_examples]
    if not shown:
        raise ValueError("no negative example to plot: the figure compares p(t|x,j-) with p(t|misaligned)")
    width = max(8.0, min(24.0, 0.32 * max(min(len(r.tokens), MAX_TOKENS) for r in shown) + 2))
    fig, axes = plt.subplots(len(shown), 1, figsize=(width, 3.4 * len(shown)), squeeze=False)
    for ax, report in zip(axes[:, 0], shown, strict=True):
        _panel(ax, report)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return len(shown)


def _panel(ax, report: TokenReport) -> None:
    tokens = report.tokens[:MAX_TOKENS]
    xs = range(len(tokens))
    judged = [t.p_judged or 0.0 for t in tokens]
    misaligned = [t.p_misaligned or 0.0 for t in tokens]
    for x, t in zip(xs, tokens, strict=True):
        if t.unlikely:
            ax.axvspan(x - 0.5, x + 0.5, color="#ffcccc", zorder=0)
    ax.bar([x - 0.2 for x in xs], judged, width=0.4, color="#c62828", label="p(t | x, j-)  real judgment")
    other = "fake positive judgment" if report.misalign_mode == "fake_positive" else "instruction only"
    ax.bar([x + 0.2 for x in xs], misaligned, width=0.4, color="#1565c0", label=f"p(t | misaligned)  {other}")
    top = max([*judged, *misaligned, 1e-12])
    for x, t in zip(xs, tokens, strict=True):
        if t.unlikely:
            ax.text(x, top * (1.5 if top < 0.05 else 1.04), "*", ha="center", va="bottom", color="#b71c1c", fontsize=14, fontweight="bold")
    if top < 0.05:  # an untrained or unsure model: linear bars would be invisible
        ax.set_yscale("log")
        ax.set_ylim(min((v for v in [*judged, *misaligned] if v > 0), default=top / 10) / 2, top * 4)
        ax.set_ylabel("probability (log scale)")
    else:
        ax.set_ylim(0, top * 1.22)
    ax.set_xlim(-0.6, len(tokens) - 0.4)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([_label(t.text) for t in tokens], rotation=60, ha="right", fontsize=8, family="monospace")
    if top >= 0.05:
        ax.set_ylabel("probability")
    judgment = textwrap.shorten(report.judgment or "", 110)
    ax.set_title(f"{report.id + ': ' if report.id else ''}j- = \"{judgment}\"   (* = in U, lambda = "
                 f"{report.threshold})", fontsize=9, loc="left")
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)


def _label(text: str) -> str:
    shown = text.replace("\n", "\\n") or "<eos>"
    return shown if len(shown) <= 14 else shown[:13] + "…"
