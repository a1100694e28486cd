"""Beyond the paper: the lab's recipe (`cut_plus`) against CUT, rejection-sampling SFT and DPO in three regimes.

Goal (issue 11): beat SFT and DPO on greedy accuracy over all facts in the misconception regime, and stay
within 2 points of the best method in the noise and mixed regimes. Every method trains from the same base
on the same judged samples (each fact's samples answer one wording, so DPO gets its score pairs) with the
same budget; the verdict is computed from the figures, per regime. The mechanism table counts, for the
wrong greedy answers, how many are verbatim copies of a sample the judge rejected (what CUT's MLE on the
negatives' unflagged tokens teaches) and how many answer about another subject.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from cutalign.lab.align import Condition, Prepared, evaluate, prepare, render_prompt, train_method
from cutalign.lab.base import load_base
from cutalign.lab.experiments.context import (
    ExperimentContext,
    ExperimentResult,
    Table,
    fmt_mean_std,
    mean_std,
)
from cutalign.lab.experiments.offline import nothing_to_learn, validation
from cutalign.lab.world import answer_questions, score_responses
from cutalign.trainer.cut_plus import CUTPlusConfig

RECIPE = "cut_plus"
METHODS = (RECIPE, "cut", "sft", "dpo")
REGIMES = ("noise", "misconception", "mixed")
BASELINES = ("sft", "dpo")  # what the recipe must beat in the misconception regime
MARGIN = 0.02  # "within 2 points of the best method" elsewhere
RECIPE_TERMS = ("negative_mle_weight", "align_n_weight", "align_p_weight", "kl_weight", "distill_weight")
COLUMNS = ("targeted", "other", "heldout", "all", "sampled_all", "validation_all")


def condition(ctx: ExperimentContext, regime: str) -> Condition:
    """The preset's base in ``regime`` (its noise and misconception rates kept), the preset's data sizes."""
    base = replace(ctx.preset.base, regime=replace(ctx.preset.base.regime, kind=regime))
    return Condition(base=base, samples_per_fact=ctx.preset.samples_per_fact,
                     heldout_fraction=ctx.preset.heldout_fraction, same_prompt=True)


def run(ctx: ExperimentContext) -> ExperimentResult:
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for regime in REGIMES:
        results[regime] = {name: [] for name in ("base", *METHODS)}
        for seed in ctx.preset.seeds:
            prepared = _LazyPrepared(ctx, condition(ctx, regime).with_seed(seed), seed)
            results[regime]["base"].append(ctx.unit(f"{regime}-seed{seed}-base", lambda _, p=prepared: _base(ctx, p)))
            for method in METHODS:
                results[regime][method].append(ctx.unit(
                    unit_key(regime, seed, method), lambda scratch, m=method, p=prepared: _train(ctx, p, m, scratch)))
    verdicts = {regime: verdict(regime, results[regime]) for regime in REGIMES}
    return ExperimentResult(
        name="recipe", title="Beyond the paper: CUT+ (no imitation of judged-wrong samples, no Align-N, KL to the base)",
        tables=[results_table(results), mechanism_table(results), verdict_table(verdicts)],
        data={"results": results, "verdicts": verdicts, "seeds": list(ctx.preset.seeds)},
        findings=[v["sentence"] for v in verdicts.values()],
    )


def recipe_weights() -> dict[str, float]:
    """The recipe's term weights as `CUTPlusConfig` ships them (what the experiment measures)."""
    return {f.name: f.default for f in fields(CUTPlusConfig) if f.name in RECIPE_TERMS}


def unit_key(regime: str, seed: int, method: str) -> str:
    """A unit's name; the recipe's carries its weights, so changing the shipped defaults retrains only it."""
    key = f"{regime}-seed{seed}-{method}"
    if method == RECIPE:
        key += "-" + "-".join(f"{value:g}" for value in recipe_weights().values())
    return key


class _LazyPrepared:
    """`prepare` only when a unit of this (regime, seed) has to be computed: a rerun samples nothing."""

    def __init__(self, ctx: ExperimentContext, cond: Condition, seed: int) -> None:
        self.ctx, self.condition, self.seed, self._value = ctx, cond, seed, None

    def get(self) -> Prepared:
        if self._value is None:
            self._value = prepare(self.condition, self.seed, self.ctx.cache_dir, progress=self.ctx.progress)
        return self._value


def _base(ctx: ExperimentContext, lazy: _LazyPrepared) -> dict[str, Any]:
    prepared = lazy.get()
    model, tokenizer = load_base(prepared.base_dir)
    return _scores(ctx, prepared, model, tokenizer, lazy.seed) | {
        "samples": len(prepared.records), "negatives": prepared.negatives}


def _train(ctx: ExperimentContext, lazy: _LazyPrepared, method: str, scratch: Path) -> dict[str, Any]:
    prepared = lazy.get()
    model, tokenizer = load_base(prepared.base_dir)
    try:
        trained = train_method(method, prepared.base_dir, prepared.records, scratch / "model", ctx.preset.train,
                               progress=ctx.progress)
    except ValueError as error:
        if not nothing_to_learn(error):
            raise
        # Nothing to learn from (no positive for SFT, no score pair for DPO): the model stays the base.
        return _scores(ctx, prepared, model, tokenizer, lazy.seed) | {"untrained": str(error)}
    return _scores(ctx, prepared, trained.trainer.model, tokenizer, lazy.seed) | {
        "train_loss": trained.metrics.get("train_loss")}


def _scores(ctx: ExperimentContext, prepared: Prepared, model: Any, tokenizer: Any, seed: int) -> dict[str, Any]:
    """Greedy + sampled accuracy per group, validation accuracy (other wording), what the wrong answers are."""
    scores = evaluate(model, tokenizer, prepared, samples=ctx.preset.eval_samples, seed=seed)
    scores["validation_all"] = evaluate(model, tokenizer, validation(prepared))["all"]
    return scores | wrong_answer_kinds(prepared, answer_questions(model, tokenizer, prepared.questions,
                                                                  render_prompt))


def wrong_answer_kinds(prepared: Prepared, answers: list[str]) -> dict[str, int]:
    """Among the wrong greedy answers: copies of a judged-wrong sample of that fact, and subject swaps."""
    world = prepared.belief.world
    rejected: dict[tuple[str, str], set[str]] = {}
    for record in prepared.records:
        if not record["label"]:
            fact = world.facts_asked(record["prompt"])[0]
            rejected.setdefault((fact.subject, fact.attribute), set()).add(record["completion"].strip())
    correct = score_responses(answers, prepared.questions)
    wrong = copies = swaps = 0
    for answer, question, ok in zip(answers, prepared.questions, correct, strict=True):
        if ok:
            continue
        fact = world.facts_asked(question.question)[0]
        wrong += 1
        copies += answer.strip() in rejected.get((fact.subject, fact.attribute), set())
        swaps += fact.subject not in answer
    return {"wrong": wrong, "copies_of_rejected": copies, "subject_swaps": swaps}


def results_table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> Table:
    rows = []
    for regime, by_method in results.items():
        for method, runs in by_method.items():
            rows.append([regime, method, *(fmt_mean_std([r[c] for r in runs]) if all(c in r for r in runs) else "-"
                                            for c in COLUMNS)])
    untrained = sorted({f"{method} ({regime})" for regime, by_method in results.items()
                        for method, runs in by_method.items() if any(r.get("untrained") for r in runs)})
    note = ("targeted = the misconceived alignment facts (none in the noise regime); other = the other alignment "
            "facts; heldout = facts of subjects never sampled; validation_all = the alignment facts in another "
            "wording (where settings are chosen; the other columns are the test figures).")
    if untrained:
        note += f" No usable examples (base model reported): {', '.join(untrained)}."
    return Table("Greedy accuracy per group and sampled (T=1) accuracy on all facts, % (mean ± std over seeds)",
                 ["regime", "method", *COLUMNS], rows, note=note)


def mechanism_table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> Table:
    rows = [[regime, method, *(f"{mean_std([r[k] for r in runs])[0]:.1f}"
                               for k in ("wrong", "copies_of_rejected", "subject_swaps"))]
            for regime, by_method in results.items() for method, runs in by_method.items()]
    return Table("Wrong greedy answers: verbatim copies of a judged-wrong sample, answers about another subject "
                 "(mean count over seeds)", ["regime", "method", "wrong", "copies of a rejected sample",
                                             "subject swaps"], rows)


def verdict(regime: str, by_method: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Goal met or missed in one regime, and by how much (greedy `all`, mean over seeds)."""
    means = {m: mean_std([r["all"] for r in by_method[m]])[0] for m in METHODS}
    recipe = means[RECIPE]
    if regime == "misconception":
        rival = max(BASELINES, key=lambda m: means[m])
        met = recipe > means[rival]
        goal = f"beat {' and '.join(BASELINES)}"
    else:
        rival = max((m for m in METHODS if m != RECIPE), key=lambda m: means[m])
        met = recipe >= means[rival] - MARGIN
        goal = f"within {MARGIN * 100:.0f} points of the best method"
    best_other = means[rival]
    sentence = (f"{regime}: {RECIPE} {recipe * 100:.1f}% on all facts vs {rival} {best_other * 100:.1f}% "
                f"(cut {means['cut'] * 100:.1f}%): goal ({goal}) {'met' if met else 'missed'}, "
                f"{recipe * 100 - best_other * 100:+.1f} points")
    return {"regime": regime, "goal": goal, "met": met, "recipe": recipe, "rival": rival, "rival_value": best_other,
            "difference": recipe - best_other, "sentence": sentence}


def verdict_table(verdicts: dict[str, dict[str, Any]]) -> Table:
    rows = [[v["regime"], v["goal"], f"{v['recipe'] * 100:.1f}", f"{v['rival']} {v['rival_value'] * 100:.1f}",
             f"{v['difference'] * 100:+.1f}", "met" if v["met"] else "missed"] for v in verdicts.values()]
    return Table("Verdict per regime (greedy accuracy on all facts, mean over seeds)",
                 ["regime", "goal", RECIPE, "strongest rival", "difference (points)", "goal"], rows)
