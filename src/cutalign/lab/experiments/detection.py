"""Experiment 4: how well CUT's unlikely-token set U finds the truly wrong tokens, with gold error spans.

The lab's judge knows which characters of a response are wrong, so U (the tokens whose probability
rises under the negative judgment: p(t|x,j-) > lambda * p(t|misaligned)) can be scored token by token:
precision, recall and F1 against the gold error tokens, per threshold lambda, per misaligned context
(``fake_positive`` [x, j+] and ``instruction_only`` bare x) and per judgment style (what the judgment
says: the wrong value, the field, the right value, nothing, or all of it).

Measured with the inspection machinery of `cutalign inspect --sweep` (the trainer's own views,
log-probs and detection), under the base model — what CUT sees at its first step — and, for the
``full`` style, after CUT training on those judgments (how U drifts as the model learns).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cutalign.inspection.core import MISALIGN_MODES, InspectConfig, inspect_examples
from cutalign.inspection.data import GOLD_FIELD
from cutalign.inspection.sweep import sweep_thresholds
from cutalign.lab.align import Condition, Prepared, prepare, train_method
from cutalign.lab.base import load_base
from cutalign.lab.experiments.context import (
    ExperimentContext,
    ExperimentResult,
    Table,
    fmt_mean_std,
    mean_std,
)
from cutalign.lab.judge import JudgeSettings

STYLES = ("explicit", "located", "corrective", "vague", "full")
AFTER_STYLE = "full"  # the style CUT is also trained on, to measure U after training
INSPECT_BATCH = 32


def condition(ctx: ExperimentContext, style: str) -> Condition:
    """The preset's base and data sizes, judged in ``style`` (same samples for every style of a seed)."""
    return Condition(base=ctx.preset.base, judge=JudgeSettings(style=style),
                     samples_per_fact=ctx.preset.samples_per_fact, heldout_fraction=ctx.preset.heldout_fraction)


def run(ctx: ExperimentContext) -> ExperimentResult:
    base: dict[str, list[dict[str, Any]]] = {style: [] for style in STYLES}
    after: list[dict[str, Any]] = []
    for seed in ctx.preset.seeds:
        for style in STYLES:
            cond = condition(ctx, style).with_seed(seed)
            lazy = functools.cache(lambda c=cond, s=seed: prepare(c, s, ctx.cache_dir, progress=ctx.progress))
            base[style].append(ctx.unit(f"seed{seed}-{style}-base", lambda _, p=lazy: _detect_base(ctx, p())))
            if style == AFTER_STYLE:
                after.append(ctx.unit(f"seed{seed}-{style}-cut",
                                      lambda scratch, p=lazy: _detect_after_cut(ctx, p(), scratch)))
    figure = ctx.figure_path("detection_f1")
    plot_f1(base, {AFTER_STYLE: after}, ctx.preset.thresholds, figure)
    best = best_thresholds(base)
    return ExperimentResult(
        name="detection", title="Detection: precision / recall / F1 of U against the gold error tokens",
        tables=[sweep_table(base, "the base model (CUT's first step)"),
                sweep_table({AFTER_STYLE: after}, f"the model after CUT training on {AFTER_STYLE!r} judgments"),
                best_table(best)],
        figures=[ctx.relative(figure)],
        data={"base": base, "after_cut": {AFTER_STYLE: after}, "best": best, "seeds": list(ctx.preset.seeds),
              "thresholds": list(ctx.preset.thresholds)},
        findings=findings(base, after, best),
    )


def inspectable(prepared: Prepared) -> list[dict[str, Any]]:
    """The judged records with their gold spans as inspection reads them (``error_spans``); the
    training records themselves stay canonical."""
    return [{**record, GOLD_FIELD: [list(s) for s in spans]}
            for record, spans in zip(prepared.records, prepared.gold_spans, strict=True)]


def detection_sweep(model: Any, tokenizer: Any, examples: list[dict[str, Any]], thresholds: tuple[float, ...],
                    config_for: Callable[[str], InspectConfig]) -> dict[str, list[dict[str, Any]]]:
    """Per misalign mode: one inspection pass, then U and P/R/F1 at every threshold."""
    out = {}
    for mode in MISALIGN_MODES:
        config = config_for(mode)
        reports = inspect_examples(model, tokenizer, examples, config)
        out[mode] = [row.to_dict() for row in sweep_thresholds(reports, thresholds, config)]
    return out


def _detect_base(ctx: ExperimentContext, prepared: Prepared) -> dict[str, Any]:
    model, tokenizer = load_base(prepared.base_dir)
    config = InspectConfig(max_length=ctx.preset.train.max_length, batch_size=INSPECT_BATCH)
    modes = detection_sweep(model, tokenizer, inspectable(prepared), ctx.preset.thresholds,
                            lambda mode: replace(config, misalign_mode=mode))
    return {"samples": len(prepared.records), "negatives": prepared.negatives, "modes": modes}


def _detect_after_cut(ctx: ExperimentContext, prepared: Prepared, scratch: Path) -> dict[str, Any]:
    trained = train_method("cut", prepared.base_dir, prepared.records, scratch / "model", ctx.preset.train,
                           progress=ctx.progress)
    trainer = trained.trainer
    modes = detection_sweep(trainer.model, trainer.processing_class, inspectable(prepared), ctx.preset.thresholds,
                            lambda mode: InspectConfig.from_cut_config(trainer.args, misalign_mode=mode,
                                                                       batch_size=INSPECT_BATCH))
    return {"samples": len(prepared.records), "negatives": prepared.negatives, "modes": modes,
            "trained_threshold": trainer.args.threshold, "trained_misalign_mode": trainer.args.misalign_mode,
            "train_loss": trained.metrics.get("train_loss")}


def _values(runs: list[dict[str, Any]], mode: str, index: int, key: str) -> list[float]:
    return [float(run["modes"][mode][index][key]) for run in runs]


def gold_rate(runs: list[dict[str, Any]], mode: str) -> list[float]:
    """Per seed: the fraction of the negatives' tokens that are gold-wrong (the precision of chance)."""
    return [row["gold_tokens"] / row["negative_tokens"] if row["negative_tokens"] else 0.0
            for row in (run["modes"][mode][0] for run in runs)]


def chance_f1(base_rate: float, fraction: float) -> float:
    """Expected F1 of a random U flagging ``fraction`` of the tokens: precision = base rate, recall = fraction."""
    return 2 * base_rate * fraction / (base_rate + fraction) if base_rate + fraction else 0.0


def sweep_table(results: dict[str, list[dict[str, Any]]], stage: str) -> Table:
    rows = []
    for style, runs in results.items():
        if not runs:
            continue
        for mode in MISALIGN_MODES:
            rate = fmt_mean_std(gold_rate(runs, mode), percent=False)
            for i, row in enumerate(runs[0]["modes"][mode]):
                rows.append([style, mode, row["threshold"],
                             *(f"{mean_std(_values(runs, mode, i, k))[0]:.0f}"
                               for k in ("unlikely_tokens", "negative_tokens")),
                             *(fmt_mean_std(_values(runs, mode, i, k), percent=False)
                               for k in ("precision", "recall", "f1")), rate])
    return Table(f"U against the gold error tokens under {stage} (mean ± std over seeds)",
                 ["style", "misalign mode", "lambda", "|U|", "negative tokens", "precision", "recall", "F1",
                  "gold rate"], rows,
                 note="Token level over the negatives; a token is gold-wrong when it overlaps a gold error span. "
                      "gold rate = gold tokens / negative tokens: the precision of a random U.")


def best_thresholds(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per style and mode: the lambda of the highest mean F1, its P/R, and what chance would score."""
    best = []
    for style, runs in results.items():
        for mode in MISALIGN_MODES:
            f1s = [mean_std(_values(runs, mode, i, "f1"))[0] for i in range(len(runs[0]["modes"][mode]))]
            i = max(range(len(f1s)), key=lambda k: f1s[k])
            rates, fractions = gold_rate(runs, mode), _values(runs, mode, i, "unlikely_fraction")
            chance = [chance_f1(b, q) for b, q in zip(rates, fractions, strict=True)]
            f1 = _values(runs, mode, i, "f1")
            best.append({"style": style, "mode": mode, "threshold": runs[0]["modes"][mode][i]["threshold"],
                         "f1": f1s[i], "precision": mean_std(_values(runs, mode, i, "precision"))[0],
                         "recall": mean_std(_values(runs, mode, i, "recall"))[0],
                         "gold_rate": mean_std(rates)[0], "chance_f1": mean_std(chance)[0],
                         "above_chance_every_seed": all(a > c for a, c in zip(f1, chance, strict=True))})
    return best


def best_table(best: list[dict[str, Any]]) -> Table:
    rows = [[b["style"], b["mode"], b["threshold"], f"{b['f1']:.3f}", f"{b['precision']:.3f}", f"{b['recall']:.3f}",
             f"{b['precision'] / b['gold_rate']:.1f}x" if b["gold_rate"] else "-", f"{b['chance_f1']:.3f}"]
            for b in best]
    return Table("Best lambda per style and misalign mode (base model, highest mean F1)",
                 ["style", "misalign mode", "best lambda", "F1", "precision", "recall", "precision / gold rate",
                  "chance F1"], rows,
                 note="chance F1: a random U of the same size (precision = gold rate, recall = |U| fraction).")


def findings(base: dict[str, list[dict[str, Any]]], after: list[dict[str, Any]],
             best: list[dict[str, Any]]) -> list[str]:
    """Sentences computed from the figures: best lambda per style, vague vs chance, the modes, after CUT."""
    out = []
    for style in STYLES:
        top = max((b for b in best if b["style"] == style), key=lambda b: b["f1"])
        out.append(f"{style}: best lambda {top['threshold']:g} ({top['mode']}) with F1 {top['f1']:.3f} "
                   f"(precision {top['precision']:.3f}, recall {top['recall']:.3f}; a random U of the same size: "
                   f"{top['chance_f1']:.3f}).")
    vague = [b for b in best if b["style"] == "vague"]
    top = max(vague, key=lambda b: b["f1"])
    above = any(b["above_chance_every_seed"] for b in vague)
    verdict = "detect above chance" if above else "detect nothing beyond chance"
    out.append(f"Vague judgments ('the response is wrong') {verdict}: best F1 {top['f1']:.3f} vs chance "
               f"{top['chance_f1']:.3f}, precision {top['precision'] / top['gold_rate']:.1f}x the gold rate."
               if top["gold_rate"] else "Vague judgments: no gold-wrong tokens among the negatives.")
    by_mode = {m: mean_std([b["f1"] for b in best if b["mode"] == m])[0] for m in MISALIGN_MODES}
    out.append("Best F1 averaged over styles: " + ", ".join(f"{m} {v:.3f}" for m, v in by_mode.items()) + ".")
    if after:
        lam = after[0]["trained_threshold"]
        for mode in MISALIGN_MODES:
            i = next((k for k, r in enumerate(after[0]["modes"][mode]) if r["threshold"] == lam), None)
            if i is not None:
                before_f1 = mean_std(_values(base[AFTER_STYLE], mode, i, "f1"))[0]
                after_f1 = mean_std(_values(after, mode, i, "f1"))[0]
                out.append(f"After CUT training on {AFTER_STYLE!r} judgments, F1 at the trained lambda {lam:g} "
                           f"({mode}) goes {before_f1:.3f} -> {after_f1:.3f}.")
    return out


def plot_f1(base: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]],
            thresholds: tuple[float, ...], path: Path) -> None:
    """F1 vs lambda, one line per style (dashed: after CUT training), one panel per misalign mode."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from cutalign.files import atomic_write_bytes

    figure = Figure(figsize=(10, 3.8), layout="constrained")
    for axes, mode in zip(figure.subplots(1, len(MISALIGN_MODES), squeeze=False)[0], MISALIGN_MODES, strict=True):
        for label, results, style_line in (("", base, "-o"), (" (after CUT)", after, "--s")):
            for style, runs in results.items():
                if runs:
                    f1 = [mean_std(_values(runs, mode, i, "f1"))[0] for i in range(len(thresholds))]
                    axes.plot(thresholds, f1, style_line, label=style + label, markersize=4)
        axes.set(title=f"misalign mode: {mode}", xlabel="threshold lambda", ylabel="F1 of U vs gold", ylim=(0, 1))
        axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
