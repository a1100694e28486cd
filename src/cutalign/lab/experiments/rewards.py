"""Experiment 3 (rewards): judgments vs rewards -- CUT vs DPO on the very same sampled responses (paper §5.3).

The preset's misconception-regime base answers each alignment fact ``samples_per_fact`` times at T=1,
all samples of a fact to one wording; the lab's judge judges them once. CUT trains on the judgments,
DPO on the judge's scores (every pair of one prompt's samples whose scores differ, the higher
preferred), from the same base with the same budget and learning-rate grid (chosen on the validation
split, as in experiment 1). A third row, CUT on the same verdicts written as "The response is wrong."
(the vague style), carries exactly the information of the score, so it separates what the judgment's
text adds from what CUT's loss adds.

The evaluation also splits the alignment facts by whether their samples gave DPO a pair at all:
when every sample of a fact is wrong (or every one right), the scores tie and DPO learns nothing
there, while CUT still reads the judgments.
"""

from __future__ import annotations

import functools
import random
from dataclasses import replace
from typing import Any

from cutalign.lab.align import Prepared
from cutalign.lab.experiments import offline
from cutalign.lab.experiments.context import (
    ExperimentContext,
    ExperimentResult,
    Table,
    fmt_mean_std,
    mean_std,
)
from cutalign.lab.experiments.report import bar_chart
from cutalign.lab.judge import judge_response, judgment_record
from cutalign.trainer.dpo import score_pairs

# Row name -> (run of experiment 1's RUNS, judgment style of the CUT data or None for the judged samples).
ROWS: dict[str, tuple[str, str | None]] = {
    "cut (judgments)": ("cut fake_positive/paper", None),
    "cut (vague judgments)": ("cut fake_positive/paper", "vague"),
    "dpo (scores)": ("dpo", None),
}
COLUMNS = ("targeted", "other", "heldout", "all", "sampled_all", "with_pair", "no_pair")


def run(ctx: ExperimentContext) -> ExperimentResult:
    runs: dict[str, list[dict[str, Any]]] = {"base": [], **{name: [] for name in ROWS}}
    stats = []
    for seed in ctx.preset.seeds:
        lazy = offline.judged_samples(ctx, offline.condition(ctx), seed)
        prepared = functools.cache(lambda p=lazy: with_pair_groups(p()))
        runs["base"].append(ctx.unit(f"seed{seed}-base", lambda _, p=prepared, s=seed: offline.base_run(ctx, p(), s)))
        for name, (run_name, style) in ROWS.items():
            data = functools.cache(lambda p=prepared, st=style, s=seed: p() if st is None else rejudged(p(), st, s))
            by_lr = [ctx.unit(f"seed{seed}-{_key(name)}-lr{lr:g}", lambda scratch, d=data, r=run_name, lr=lr, s=seed:
                              offline.train_run(ctx, d(), s, r, lr, scratch)) for lr in ctx.preset.grid]
            runs[name].append(offline.select(by_lr) | {"seed": seed})
        stats.append(ctx.unit(f"seed{seed}-pairs", lambda _, p=prepared: pair_counts(p())) | {"seed": seed})
    figure = ctx.figure_path("rewards_accuracy")
    bar_chart(figure, "Judgments vs rewards: greedy accuracy per group (mean ± std over seeds)",
              {name: {c: offline.percent(mean_std([r[c] for r in rs])) for c in ("targeted", "other", "heldout", "all")
                      if all(c in r for r in rs)} for name, rs in runs.items()}, "accuracy (%)")
    return ExperimentResult(
        name="rewards", title="Judgments vs rewards: CUT vs DPO on the same sampled responses",
        tables=[results_table(ctx, runs), data_table(stats)], figures=[ctx.relative(figure)],
        data={"runs": runs, "data": stats, "seeds": list(ctx.preset.seeds), "grid": list(ctx.preset.grid)},
        findings=findings(runs))


def _key(name: str) -> str:
    return "".join(c for c in name.replace(" ", "_") if c.isalnum() or c == "_")


def rejudged(prepared: Prepared, style: str, seed: int) -> Prepared:
    """The same samples with their verdicts written in ``style`` (labels, scores and gold spans unchanged).

    Each record's phrasing is drawn from its own seeded stream, so a subset of the records reads the
    same as in the whole set."""
    settings = replace(prepared.condition.judge, style=style)
    world = prepared.belief.world
    records = []
    for record in prepared.records:
        rng = random.Random(f"rejudge-{seed}-{record['id']}")
        judgment = judge_response(record["prompt"], record["completion"], world=world, settings=settings, rng=rng)
        new = judgment_record(record["prompt"], record["completion"], judgment, record["id"])
        if (new["label"], new["score"]) != (record["label"], record["score"]):
            raise ValueError(f"{record['id']}: judge noise changed the verdict while rewriting it as {style!r}")
        records.append(new)
    return replace(prepared, records=records)


def with_pair_groups(prepared: Prepared) -> Prepared:
    """Add groups ``with_pair`` / ``no_pair``: alignment facts whose samples did / did not give DPO a
    score pair (so :func:`~cutalign.lab.align.evaluate` scores them separately)."""
    paired = _facts(prepared, score_pairs(prepared.records)[0])
    alignment = prepared.groups["targeted"] + prepared.groups["other"]
    groups = dict(prepared.groups)
    groups["with_pair"] = sorted(i for i in alignment if i in paired)
    groups["no_pair"] = sorted(i for i in alignment if i not in paired)
    return replace(prepared, groups=groups)


def _facts(prepared: Prepared, examples: list[dict[str, Any]]) -> set[int]:
    """Indices (into ``prepared.questions``, one per fact) of the facts ``examples`` ask about."""
    world = prepared.belief.world
    index = {(s, a): i for i, (s, a, _) in enumerate(world.facts)}
    return {index[(f.subject, f.attribute)] for e in examples for f in world.facts_asked(e["prompt"])[:1]}


def pair_counts(prepared: Prepared) -> dict[str, int]:
    """What each method gets from the samples: DPO's pairs, CUT's negatives, and the facts without a pair."""
    pairs, report = score_pairs(prepared.records)
    return {"samples": len(prepared.records), "negatives": prepared.negatives, "dpo_pairs": len(pairs),
            "dpo_unused_samples": sum(report.counts.values()),
            "facts_with_pair": len(prepared.groups["with_pair"]), "facts_no_pair": len(prepared.groups["no_pair"])}


def results_table(ctx: ExperimentContext, runs: dict[str, list[dict[str, Any]]]) -> Table:
    rows = [[name, "-" if name == "base" else ", ".join(f"{r['lr']:g}" for r in rs),
             *(fmt_mean_std([r[c] for r in rs]) if all(c in r for r in rs) else "-" for c in COLUMNS)]
            for name, rs in runs.items()]
    preset = ctx.preset
    note = (f"Accuracy %, mean ± std over seeds {list(preset.seeds)}; misconception-regime base, "
            f"{preset.samples_per_fact} T=1 samples per alignment fact, all to one wording. Greedy on targeted "
            "(misconceived alignment facts), other, heldout (subjects never sampled), all; sampled_all = T=1 "
            f"accuracy over {preset.eval_samples} samples per question; with_pair / no_pair = greedy accuracy on the "
            "alignment facts whose samples did / did not give DPO a score pair. Every row: "
            f"{preset.train.epochs:g} epochs, batch {preset.train.batch_size}, learning rate chosen from "
            f"{list(preset.grid)} on the validation wording. 'vague' = the same verdicts written as 'The response is "
            "wrong.', the information of the score.")
    return Table("Judgments vs rewards: greedy accuracy per group and sampled accuracy on all facts",
                 ["method", "lr", *COLUMNS], rows, note)


def data_table(stats: list[dict[str, Any]]) -> Table:
    keys = ("samples", "negatives", "dpo_pairs", "dpo_unused_samples", "facts_with_pair", "facts_no_pair")
    return Table("What each method learns from (per seed): CUT's negatives vs DPO's score pairs",
                 ["seed", *keys], [[s["seed"], *(s[k] for k in keys)] for s in stats],
                 note="A fact's samples give DPO pairs only when their scores differ; CUT uses every judged sample.")


def findings(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Who wins on all facts and by how much, what the judgment's text adds, and where DPO has no pair."""
    mean = {name: {c: mean_std([r[c] for r in rs])[0] for c in COLUMNS if all(c in r for r in rs)}
            for name, rs in runs.items()}
    cut, vague, dpo = "cut (judgments)", "cut (vague judgments)", "dpo (scores)"
    gap = (mean[cut]["all"] - mean[dpo]["all"]) * 100
    winner = cut if gap > 0 else dpo if gap < 0 else "neither (tie)"
    out = [f"On all facts (greedy) {winner} wins: CUT {mean[cut]['all'] * 100:.1f}% vs DPO "
           f"{mean[dpo]['all'] * 100:.1f}% ({gap:+.1f} points; base {mean['base']['all'] * 100:.1f}%; paper, "
           "AlpacaEval with 13B models: CUT +23 to +37)."]
    if "targeted" in mean[cut] and "targeted" in mean[dpo]:
        out.append(f"On the targeted (misconceived) facts: CUT {mean[cut]['targeted'] * 100:.1f}% vs DPO "
                   f"{mean[dpo]['targeted'] * 100:.1f}% (base {mean['base']['targeted'] * 100:.1f}%).")
    out.append(f"The judgment's text: CUT with vague judgments (the score's information) reaches "
               f"{mean[vague]['all'] * 100:.1f}% on all facts; full judgments change that by "
               f"{(mean[cut]['all'] - mean[vague]['all']) * 100:+.1f} points; vague CUT vs DPO "
               f"{(mean[vague]['all'] - mean[dpo]['all']) * 100:+.1f} points.")
    if "no_pair" in mean[cut] and "no_pair" in mean[dpo]:
        out.append(f"Facts without a DPO pair (tied scores): CUT {mean[cut]['no_pair'] * 100:.1f}% vs DPO "
                   f"{mean[dpo]['no_pair'] * 100:.1f}% (base {mean['base']['no_pair'] * 100:.1f}%).")
    below = [name for name in ROWS if mean[name]["all"] < mean["base"]["all"]]
    if below:
        out.append(f"Below the base on all facts: {', '.join(below)}.")
    return out
