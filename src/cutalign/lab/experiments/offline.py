"""Experiment 1 (offline): every method of `cutalign train` on the same judged samples, with equal budgets.

The preset's misconception-regime base answers each alignment fact ``samples_per_fact`` times at T=1
(all samples of a fact answer one wording, so DPO gets pairs of one prompt with different scores);
the lab's judge judges them. Every method then trains from the same base on those samples with the
same :class:`TrainSettings` and the same grid of learning rates. The learning rate of each method
and seed is chosen on a validation split -- the alignment facts asked in another wording (the
second of their kind) -- and the test figures are the evaluation set (the first wording, all facts,
held-out subjects included). ILF gets oracle refinements (a perfect refiner), said in the table.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cutalign.api import NoUsableExamplesError
from cutalign.lab.align import (
    Condition,
    Prepared,
    evaluate,
    heldout_subjects,
    oracle_refinements,
    prepare,
    question_groups,
    train_method,
)
from cutalign.lab.base import beliefs, build_base, load_base
from cutalign.lab.experiments.context import (
    ExperimentContext,
    ExperimentResult,
    Table,
    fmt_mean_std,
    mean_std,
)
from cutalign.lab.experiments.report import bar_chart
from cutalign.lab.world import SINGLE_FACT_KINDS, EvalQuestion, evaluation_set

# Row name -> (method of `cutalign train`, config overrides, data: judged | refined | refined_negatives).
RUNS: dict[str, tuple[str, dict[str, Any], str]] = {
    "cut fake_positive/paper": ("cut", {"misalign_mode": "fake_positive", "mode": "paper"}, "judged"),
    "cut instruction_only/paper": ("cut", {"misalign_mode": "instruction_only", "mode": "paper"}, "judged"),
    "cut fake_positive/official": ("cut", {"misalign_mode": "fake_positive", "mode": "official"}, "judged"),
    "cut instruction_only/official": ("cut", {"misalign_mode": "instruction_only", "mode": "official"}, "judged"),
    "sft": ("sft", {}, "judged"),
    "hindsight": ("hindsight", {}, "judged"),
    "forward_prediction": ("forward_prediction", {}, "judged"),
    "ilf_mle": ("ilf_mle", {}, "refined"),
    "ilf_dpo": ("ilf_dpo", {}, "refined_negatives"),
    "dpo": ("dpo", {}, "judged"),
    "unlikelihood": ("unlikelihood", {}, "judged"),
}
COLUMNS = ("targeted", "other", "heldout", "all", "sampled_all")


def condition(ctx: ExperimentContext) -> Condition:
    return Condition(base=ctx.preset.base, samples_per_fact=ctx.preset.samples_per_fact,
                     heldout_fraction=ctx.preset.heldout_fraction, same_prompt=True)


def run(ctx: ExperimentContext) -> ExperimentResult:
    runs: dict[str, list[dict[str, Any]]] = {"base": [], **{name: [] for name in RUNS}}
    for seed in ctx.preset.seeds:
        prepared = judged_samples(ctx, condition(ctx).with_seed(seed), seed)
        runs["base"].append(ctx.unit(f"seed{seed}-base", lambda _, p=prepared, s=seed: base_run(ctx, p(), s)))
        for name in RUNS:
            by_lr = [ctx.unit(f"seed{seed}-{name}-lr{lr:g}", lambda scratch, n=name, lr=lr, p=prepared, s=seed:
                              train_run(ctx, p(), s, n, lr, scratch)) for lr in ctx.preset.grid]
            runs[name].append(select(by_lr) | {"seed": seed})
    figure = ctx.figure_path("offline_accuracy")
    bar_chart(figure, "Greedy accuracy per group (mean ± std over seeds)",
              {name: {c: percent(mean_std([r[c] for r in rs])) for c in COLUMNS[:4] if all(c in r for r in rs)}
               for name, rs in runs.items()}, "accuracy (%)")
    return ExperimentResult(name="offline", title="Offline: every method of `cutalign train` on the same judged "
                            "samples, equal budgets", tables=[results_table(ctx, runs)],
                            figures=[ctx.relative(figure)], data={"runs": runs, "seeds": list(ctx.preset.seeds),
                                                                  "grid": list(ctx.preset.grid)},
                            findings=findings(runs))


def judged_samples(ctx: ExperimentContext, cond: Condition, seed: int) -> Callable[[], Prepared]:
    """The seed's judged samples, sampled once and saved as a unit (so a resumed run trains every
    remaining method on the very samples the others had); sampled only when a unit needs them."""

    @functools.cache
    def get() -> Prepared:
        fresh: list[Prepared] = []

        def compute(_: Path) -> dict[str, Any]:
            fresh.append(prepare(cond, seed, ctx.cache_dir, progress=ctx.progress))
            return {"records": fresh[0].records, "gold_spans": fresh[0].gold_spans}

        saved = ctx.unit(f"seed{seed}-samples", compute)
        return fresh[0] if fresh else restore(cond, seed, saved, ctx.cache_dir)

    return get


def restore(cond: Condition, seed: int, saved: dict[str, Any], cache_dir: Path | None) -> Prepared:
    """:func:`prepare`'s result around saved samples, without sampling again (the rest is deterministic)."""
    base_dir, _ = build_base(cond.base, cache_dir)
    belief = beliefs(cond.base)
    questions = evaluation_set(belief.world)
    groups = question_groups(belief, questions, heldout_subjects(belief, cond.heldout_fraction, seed))
    return Prepared(cond, base_dir, belief, saved["records"], [[tuple(s) for s in spans] for spans in
                                                               saved["gold_spans"]], questions, groups)


def percent(value: tuple[float, float]) -> tuple[float, float]:
    """A (mean, std) fraction pair as percentages, as the tables print them."""
    return value[0] * 100, value[1] * 100


def validation(prepared: Prepared) -> Prepared:
    """The alignment facts asked in their kind's second wording (the evaluation set uses the first)."""
    kinds = {kind.attributes[0]: kind for kind in SINGLE_FACT_KINDS}
    facts = prepared.belief.world.facts
    idx = prepared.groups["targeted"] + prepared.groups["other"]
    questions = [EvalQuestion(kinds[facts[i][1]].questions[1].format(s=facts[i][0]), prepared.questions[i].gold,
                              prepared.questions[i].wrong_values) for i in idx]
    n_targeted = len(prepared.groups["targeted"])
    groups = {"targeted": list(range(n_targeted)), "other": list(range(n_targeted, len(idx))),
              "all": list(range(len(idx)))}
    return replace(prepared, questions=questions, groups=groups)


def model_scores(model: Any, tokenizer: Any, prepared: Prepared, samples: int, seed: int) -> dict[str, Any]:
    """The experiment's accuracy figures (greedy, sampled, validation), shared by every offline-style experiment."""
    val = evaluate(model, tokenizer, validation(prepared))
    return evaluate(model, tokenizer, prepared, samples=samples, seed=seed) | {"validation_all": val["all"]}


def base_run(ctx: ExperimentContext, prepared: Prepared, seed: int) -> dict[str, Any]:
    """The untrained base's figures and the data's counts: the row every trained method is read against."""
    model, tokenizer = load_base(prepared.base_dir)
    return model_scores(model, tokenizer, prepared, ctx.preset.eval_samples, seed) | {
        "samples": len(prepared.records), "negatives": prepared.negatives,
        "targeted_facts": len(prepared.groups["targeted"]), "facts": len(prepared.questions)}


def training_data(prepared: Prepared, data: str) -> list[dict[str, Any]]:
    """The judged samples as a method reads them: ILF's with an oracle refinement of each negative."""
    if data == "judged":
        return prepared.records
    return oracle_refinements(prepared.records, prepared.belief, positives_as_is=data == "refined")


def train_run(ctx: ExperimentContext, prepared: Prepared, seed: int, name: str, lr: float,
              scratch: Path) -> dict[str, Any]:
    """Train ``RUNS[name]`` at ``lr`` and score it; a method with nothing to learn scores the base."""
    method, overrides, data = RUNS[name]
    settings = replace(ctx.preset.train, learning_rate=lr)
    try:
        trained = train_method(method, prepared.base_dir, training_data(prepared, data), scratch / "model",
                               settings, overrides, progress=ctx.progress)
    except ValueError as error:
        if not nothing_to_learn(error):
            raise
        # Nothing to learn from (no positive for SFT, no score pair for DPO): the model stays the base.
        model, tokenizer = load_base(prepared.base_dir)
        return model_scores(model, tokenizer, prepared, ctx.preset.eval_samples, seed) | {
            "lr": lr, "untrained": str(error), "train_examples": 0}
    scores = model_scores(trained.trainer.model, trained.trainer.processing_class, prepared, ctx.preset.eval_samples, seed)
    shutil.rmtree(scratch / "model", ignore_errors=True)  # the figures are kept; the tiny models are not
    return scores | {"lr": lr, "train_loss": trained.metrics.get("train_loss"),
                     "train_examples": trained.metrics.get("train_examples"),
                     "dropped_examples": trained.metrics.get("dropped_examples")}


def nothing_to_learn(error: ValueError) -> bool:
    """The data gave the method no example (the trainer's DPO raises a plain ValueError for no pairs)."""
    return isinstance(error, NoUsableExamplesError) or str(error).startswith("no preference pairs")


def select(by_lr: list[dict[str, Any]]) -> dict[str, Any]:
    """The learning rate with the best validation accuracy (the first of the grid on a tie)."""
    return max(by_lr, key=lambda r: r["validation_all"]) | {"grid": [r["validation_all"] for r in by_lr]}


def results_table(ctx: ExperimentContext, runs: dict[str, list[dict[str, Any]]]) -> Table:
    rows = [[name, "-" if name == "base" else ", ".join(f"{r['lr']:g}" for r in rs),
             *(fmt_mean_std([r[c] for r in rs]) if all(c in r for r in rs) else "-" for c in COLUMNS)]
            for name, rs in runs.items()]
    untrained = sorted({f"{name} (seed {r['seed']})" for name, rs in runs.items() for r in rs if r.get("untrained")})
    preset = ctx.preset
    note = (f"Accuracy %, mean ± std over seeds {list(preset.seeds)}. Greedy on targeted (misconceived alignment "
            "facts), other (the other alignment facts), heldout (subjects never sampled), all; sampled_all = T=1 "
            f"accuracy over {preset.eval_samples} samples per question. Every method: {preset.train.epochs:g} "
            f"epochs, batch {preset.train.batch_size}, the same learning-rate grid {list(preset.grid)} chosen per "
            "seed by greedy accuracy on the alignment facts in another wording. All samples of a fact answer one "
            "wording (so DPO from scores gets pairs). ILF-MLE / ILF-DPO train on oracle refinements (every wrong "
            "value replaced by the right one), an upper bound of a real refiner.")
    if untrained:
        note += f" No usable examples (base model reported): {', '.join(untrained)}."
    return Table("Offline methods: greedy accuracy per group and sampled accuracy on all facts",
                 ["method", "lr", *COLUMNS], rows, note)


def findings(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Who is best on all facts and on the targeted ones, and where CUT loses, from the means."""
    mean = {name: {c: mean_std([r[c] for r in rs])[0] for c in COLUMNS if all(c in r for r in rs)}
            for name, rs in runs.items()}
    methods = [name for name in mean if name != "base"]
    out = []
    for column, label in (("all", "all facts (greedy)"), ("targeted", "the targeted facts"),
                          ("sampled_all", "all facts (T=1)")):
        if not all(column in mean[m] for m in methods):
            continue
        top = max(mean[m][column] for m in methods)
        best = [m for m in methods if mean[m][column] == top]
        who = ", ".join(best) if len(best) <= 3 else f"{len(best)} methods tie"
        out.append(f"Best on {label}: {who} at {top * 100:.1f}% (base {mean['base'][column] * 100:.1f}%).")
    cuts = [m for m in methods if m.startswith("cut ")]
    if not cuts:
        return out
    cut = max(cuts, key=lambda m: mean[m]["all"])
    for rival in [m for m in ("sft", "dpo", "base") if m in mean]:
        gaps = {c: (mean[cut][c] - mean[rival][c]) * 100 for c in COLUMNS if c in mean[cut] and c in mean[rival]}
        losses = [f"{c} {g:+.1f}" for c, g in gaps.items() if g < 0]
        out.append(f"The best CUT variant on all facts ({cut}) vs {rival}: "
                   + ", ".join(f"{c} {g:+.1f}" for c, g in gaps.items()) + " points; "
                   + (f"it loses on {', '.join(losses)}." if losses else "it loses nowhere."))
    worse = [m for m in methods if mean[m]["all"] < mean["base"]["all"]]
    if worse:
        out.append(f"Below the base on all facts: {', '.join(worse)}.")
    return out
