"""Experiment 6 (regimes): which method wins where -- positive scarcity x error regime x judgment style.

Axes:

- error regime of the base's pretraining corpus (:class:`~cutalign.lab.base.Regime`): ``noise`` (the
  model's mode is right), ``misconception`` (some facts mostly stated with one fixed wrong value),
  ``mixed``;
- positive scarcity: ``plentiful`` keeps every judged sample; ``scarce`` keeps each satisfactory one
  with probability :data:`SCARCE_KEEP` (seeded) and every negative -- the same base and samples, with
  right answers made rarer among them, which starves rejection sampling and DPO but not CUT;
- judgment style of the lab's judge (``explicit`` quotes the wrong value, ``vague`` only says the
  response is wrong). Only CUT reads the text: SFT and DPO train once per (regime, scarcity) and
  their figures stand in every style of it.

Methods: CUT, rejection-sampling SFT (the satisfactory samples), DPO from the judge's scores, from the
same base with the same budget (:data:`EPOCH_FRACTION` of the preset's epochs, its first learning
rate). The winner of a cell is the best greedy accuracy on all facts (mean over seeds); its margin is
over the runner-up. Which cells run scales with the preset (:func:`cells`).
"""

from __future__ import annotations

import functools
import io
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cutalign.lab.align import Condition, Prepared
from cutalign.lab.experiments import offline
from cutalign.lab.experiments.context import ExperimentContext, ExperimentResult, Preset, Table, mean_std
from cutalign.lab.experiments.rewards import rejudged
from cutalign.lab.judge import JudgeSettings

REGIMES = ("noise", "misconception", "mixed")
SCARCITY: dict[str, float] = {"plentiful": 1.0, "scarce": 0.25}  # fraction of the positives kept
SCARCE_KEEP = SCARCITY["scarce"]
STYLES = ("explicit", "vague")
METHODS: dict[str, str] = {"cut": "cut fake_positive/paper", "sft": "sft", "dpo": "dpo"}  # -> experiment 1's RUNS
EPOCH_FRACTION = 0.5  # of the preset's epochs: a grid of trainings has to fit the preset's budget
Cell = tuple[str, str, str]  # (regime, scarcity, style)


def cells(preset: Preset) -> list[Cell]:
    """The cells a preset runs: ``full`` all of them; ``quick`` every (regime, scarcity) in the explicit
    style and the misconception regime in the vague style too; any other (smoke, tests) a covering set,
    every value of every axis in at least one cell."""
    if preset.name == "full":
        return list(itertools.product(REGIMES, SCARCITY, STYLES))
    if preset.name == "quick":
        return [(r, s, "explicit") for r in REGIMES for s in SCARCITY] + [("misconception", "plentiful", "vague")]
    scarcities = list(SCARCITY)
    n = max(len(REGIMES), len(SCARCITY), len(STYLES))
    return sorted({(REGIMES[i % len(REGIMES)], scarcities[i % len(scarcities)], STYLES[i % len(STYLES)])
                   for i in range(n)}, key=lambda c: (REGIMES.index(c[0]), c[1], c[2]))


def condition(ctx: ExperimentContext, regime: str) -> Condition:
    """The preset's base in ``regime``, the preset's data sizes, one wording per fact (DPO's pairs)."""
    base = replace(ctx.preset.base, regime=replace(ctx.preset.base.regime, kind=regime))
    return Condition(base=base, judge=JudgeSettings(style=STYLES[0]), samples_per_fact=ctx.preset.samples_per_fact,
                     heldout_fraction=ctx.preset.heldout_fraction, same_prompt=True)


@dataclass
class RegimeContext(ExperimentContext):
    """The experiment's context for one regime: its unit keys prefixed with the regime (experiment 1's
    helpers name theirs by seed only), its trainings given the experiment's share of the epochs."""

    prefix: str = ""

    @classmethod
    def of(cls, ctx: ExperimentContext, regime: str) -> RegimeContext:
        train = replace(ctx.preset.train, epochs=ctx.preset.train.epochs * EPOCH_FRACTION)
        return cls(preset=replace(ctx.preset, train=train), run_dir=ctx.run_dir, name=ctx.name,
                   cache_dir=ctx.cache_dir, progress=ctx.progress, prefix=f"{regime}-")

    def unit(self, key: str, compute: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        return super().unit(self.prefix + key, compute)


def run(ctx: ExperimentContext) -> ExperimentResult:
    chosen = cells(ctx.preset)
    lr = ctx.preset.train.learning_rate
    results: dict[str, list[dict[str, Any]]] = {}  # unit name ("noise/plentiful/sft") -> one result per seed
    for regime in dict.fromkeys(c[0] for c in chosen):
        for seed in ctx.preset.seeds:
            for name, value in regime_seed(RegimeContext.of(ctx, regime), chosen, regime, seed).items():
                results.setdefault(f"{regime}/{name}", []).append(value)
    summary = [winner(cell, results) for cell in chosen]
    figure = ctx.figure_path("regime_map")
    heatmap(figure, summary)
    return ExperimentResult(
        name="regimes", title="Regime map: positive scarcity x error regime x judgment style",
        tables=[winner_table(ctx, summary)], figures=[ctx.relative(figure)],
        data={"results": results, "cells": summary, "seeds": list(ctx.preset.seeds), "scarce_keep": SCARCE_KEEP,
              "epochs": ctx.preset.train.epochs * EPOCH_FRACTION, "learning_rate": lr},
        findings=findings(summary))


def regime_seed(sub: RegimeContext, chosen: list[Cell], regime: str, seed: int) -> dict[str, dict[str, Any]]:
    """The base's and every training's figures of one (regime, seed), each a resumable unit."""
    lr = sub.preset.train.learning_rate
    lazy = offline.judged_samples(sub, condition(sub, regime), seed)
    out = {"base": sub.unit(f"seed{seed}-base", lambda _: offline.base_run(sub, lazy(), seed))}
    for name, data in units(chosen, regime, lazy, seed).items():
        method = METHODS[name.rsplit("/", 1)[1]]
        out[name] = sub.unit(f"seed{seed}-{name.replace('/', '-')}",
                             lambda scratch, d=data, m=method: offline.train_run(sub, d(), seed, m, lr, scratch))
    return out


def units(chosen: list[Cell], regime: str, lazy: Any, seed: int) -> dict[str, Any]:
    """The trainings one (regime, seed) needs, by name (``scarce/sft``, ``scarce/vague/cut``), each with a
    lazy maker of its data: SFT and DPO once per scarcity, CUT once per (scarcity, style)."""
    out: dict[str, Any] = {}
    for _, scarcity, style in (c for c in chosen if c[0] == regime):
        kept = functools.cache(lambda s=scarcity: keep_positives(lazy(), SCARCITY[s], seed))
        out.setdefault(f"{scarcity}/sft", kept)
        out.setdefault(f"{scarcity}/dpo", kept)
        out[f"{scarcity}/{style}/cut"] = functools.cache(lambda k=kept, st=style: k() if st == STYLES[0] else
                                                 rejudged(k(), st, seed))
    return out


def keep_positives(prepared: Prepared, fraction: float, seed: int) -> Prepared:
    """Every negative and each positive with probability ``fraction`` (per-record seeded draws)."""
    if fraction >= 1.0:
        return prepared
    kept = [(r, s) for r, s in zip(prepared.records, prepared.gold_spans, strict=True)
            if not r["label"] or random.Random(f"keep-{seed}-{r['id']}").random() < fraction]
    return replace(prepared, records=[r for r, _ in kept], gold_spans=[s for _, s in kept])


def winner(cell: Cell, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The cell's figures (greedy, mean over seeds), its winner(s) on all facts and margin over the runner-up,
    and the same on the targeted (misconceived) facts where the regime has any."""
    regime, scarcity, style = cell
    runs = {"cut": results[f"{regime}/{scarcity}/{style}/cut"], "sft": results[f"{regime}/{scarcity}/sft"],
            "dpo": results[f"{regime}/{scarcity}/dpo"]}
    base = results[f"{regime}/base"]
    out = {"regime": regime, "scarcity": scarcity, "style": style,
           "samples": mean_std([r["samples"] for r in base])[0],
           "sft_examples": mean_std([r["train_examples"] for r in runs["sft"]])[0],
           "untrained": sorted(m for m, rs in runs.items() if any(r.get("untrained") for r in rs))}
    for column, prefix in (("all", ""), ("targeted", "targeted_")):
        if all(column in r for rs in (base, *runs.values()) for r in rs):
            means = {m: mean_std([r[column] for r in rs])[0] for m, rs in runs.items()}
            out |= {f"{prefix}means": means, f"{prefix}base": mean_std([r[column] for r in base])[0],
                    **dict(zip((f"{prefix}winner", f"{prefix}margin"), rank(means), strict=True))}
    return out


def rank(means: dict[str, float]) -> tuple[str, float]:
    """The best method(s) (``a=b`` on a tie) and the margin over the next value (0 on a tie)."""
    ranked = sorted(means.values(), reverse=True)
    top = [m for m in METHODS if means[m] == ranked[0]]
    runner_up = next((v for v in ranked if v < ranked[0]), ranked[0])
    return "=".join(top), ranked[0] - runner_up if len(top) == 1 else 0.0


def winner_table(ctx: ExperimentContext, summary: list[dict[str, Any]]) -> Table:
    rows = [[s["regime"], s["scarcity"], s["style"], f"{s['sft_examples']:.0f}/{s['samples']:.0f}",
             f"{s['base'] * 100:.1f}", *(f"{s['means'][m] * 100:.1f}" for m in METHODS), s["winner"],
             f"{s['margin'] * 100:+.1f}", _targeted(s), ", ".join(s["untrained"]) or "-"] for s in summary]
    preset = ctx.preset
    return Table("Winner per cell: greedy accuracy on all facts, % (mean over seeds), margin over the runner-up",
                 ["regime", "positives", "style", "SFT examples / samples", "base", *METHODS, "winner",
                  "margin (points)", "targeted: base, cut/sft/dpo, winner", "untrained (no data)"], rows,
                 note=f"Seeds {list(preset.seeds)}; {preset.samples_per_fact} T=1 samples per alignment fact, one "
                      f"wording each; scarce = each positive kept with probability {SCARCE_KEEP:g}, negatives all "
                      f"kept. Every method {preset.train.epochs * EPOCH_FRACTION:g} epochs (the preset's x "
                      f"{EPOCH_FRACTION:g}), lr {preset.train.learning_rate:g}, batch {preset.train.batch_size}. SFT "
                      "and DPO do not read the judgment, so their figures are shared by the styles of a cell. "
                      "'untrained': no usable example (no positive / no score pair), the base's figures.")


def _targeted(s: dict[str, Any]) -> str:
    if "targeted_means" not in s:
        return "- (no misconceptions)"
    means = "/".join(f"{s['targeted_means'][m] * 100:.0f}" for m in METHODS)
    return f"{s['targeted_base'] * 100:.0f}, {means}, {s['targeted_winner']} {s['targeted_margin'] * 100:+.1f}"


def findings(summary: list[dict[str, Any]]) -> list[str]:
    """How often each method wins, where CUT wins, and what scarcity and style change."""
    wins = {m: [s for s in summary if s["winner"] == m] for m in METHODS}
    out = [f"Cells won: {', '.join(f'{m} {len(w)}' for m, w in wins.items())}, ties "
           f"{sum('=' in s['winner'] for s in summary)} (of {len(summary)})."]
    targeted = [s for s in summary if "targeted_winner" in s]
    if targeted:
        out.append("On the targeted (misconceived) facts: " + ", ".join(
            f"{m} wins {sum(s['targeted_winner'] == m for s in targeted)}" for m in METHODS)
            + f" of {len(targeted)} cells, ties {sum('=' in s['targeted_winner'] for s in targeted)}.")
    for m, won in wins.items():
        if won:
            out.append(f"{m} wins in " + "; ".join(f"{s['regime']}/{s['scarcity']}/{s['style']} "
                                                   f"(+{s['margin'] * 100:.1f})" for s in won) + ".")
    below = [s for s in summary if max(s["means"].values()) < s["base"]]
    if below:
        out.append("No method beats the base in " + ", ".join(f"{s['regime']}/{s['scarcity']}/{s['style']}"
                                                              for s in below) + ".")
    for a in summary:
        for b in summary:
            if (a["regime"], a["scarcity"]) == (b["regime"], b["scarcity"]) and (a["style"], b["style"]) == STYLES:
                out.append(f"{a['regime']}/{a['scarcity']}: CUT with {STYLES[1]} judgments "
                           f"{(b['means']['cut'] - a['means']['cut']) * 100:+.1f} points vs {STYLES[0]}.")
            if (a["regime"], a["style"]) == (b["regime"], b["style"]) and (a["scarcity"], b["scarcity"]) == tuple(SCARCITY):
                out.append(f"{a['regime']}/{a['style']}: scarce positives move "
                           + ", ".join(f"{m} {(b['means'][m] - a['means'][m]) * 100:+.1f}" for m in METHODS)
                           + " points.")
    return out


def heatmap(path: Path, summary: list[dict[str, Any]]) -> None:
    """Rows (regime, scarcity) x columns style; each cell colored by its winner, shaded by its margin."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from cutalign.files import atomic_write_bytes

    rows = [(r, s) for r in REGIMES for s in SCARCITY if any((c["regime"], c["scarcity"]) == (r, s) for c in summary)]
    colors = {m: matplotlib.colormaps["tab10"](i) for i, m in enumerate(METHODS)}
    figure = Figure(figsize=(2.2 * len(STYLES) + 2.5, 0.6 * len(rows) + 1.6), layout="constrained")
    axes = figure.subplots()
    for y, (regime, scarcity) in enumerate(rows):
        for x, style in enumerate(STYLES):
            cell = next((c for c in summary if (c["regime"], c["scarcity"], c["style"]) == (regime, scarcity, style)),
                        None)
            color, alpha, text = (0.85, 0.85, 0.85, 1.0), 1.0, "not run"
            if cell is not None:
                color = colors.get(cell["winner"], (1.0, 1.0, 1.0, 1.0))  # a tie: white
                alpha = 0.25 + 0.75 * min(1.0, cell["margin"] / 0.2)
                text = f"{cell['winner']} {cell['margin'] * 100:+.1f}\n" + " ".join(
                    f"{m} {v * 100:.0f}" for m, v in cell["means"].items())
            axes.add_patch(Rectangle((x, y), 1, 1, color=color, alpha=alpha))
            axes.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=7)
    axes.set(xlim=(0, len(STYLES)), ylim=(len(rows), 0), title="Winner on all facts (greedy) and margin, points")
    axes.set_xticks([x + 0.5 for x in range(len(STYLES))], STYLES)
    axes.set_yticks([y + 0.5 for y in range(len(rows))], [f"{r} / {s}" for r, s in rows])
    axes.legend(handles=[Patch(color=c, label=f"{m} wins") for m, c in colors.items()], loc="upper left",
                bbox_to_anchor=(1.01, 1.0), fontsize=8, title="darker = larger margin", title_fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
