"""Experiment 2: k iterations of the library's online loop (`cutalign.online.run_online`) with fresh prompts.

Two arms share each seed's base and prompt pool and differ only in who judges the policy's samples:

- ``python``: the lab's programmatic judge (exact, the ground truth);
- ``ai``: an AI judge trained from the base with `train_judge` (the library function behind
  `cutalign train-judge`) on the lab's judged samples of the base -- the paper's stand-in for GPT-4.

Each iteration is a unit: it runs the loop one iteration further in a run folder of its own (the loop
resumes a killed run), then re-judges the iteration's generations with the python judge (satisfactory
rate by the ground truth, and the AI judge's agreement with it) and measures greedy and T=1 accuracy
of the iteration's model on one question per fact (targeted / other / held-out / all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_jsonl, atomic_write_text
from cutalign.lab.align import Condition, Prepared, evaluate, heldout_subjects
from cutalign.lab.base import load_base
from cutalign.lab.experiments.context import (
    ExperimentContext,
    ExperimentResult,
    Table,
    fmt_mean_std,
    mean_std,
)
from cutalign.lab.experiments.offline import judged_samples
from cutalign.lab.experiments.report import line_chart
from cutalign.lab.judge import judge_response
from cutalign.lab.world import SINGLE_FACT_KINDS

ARMS = ("python", "ai")
ACCURACY = ("targeted", "other", "heldout", "all", "sampled_all")
JUDGE_MAX_NEW_TOKENS = 64  # the lab's judgments are one or two short sentences
JUDGE_MAX_LENGTH = 256  # AI-judge prompt + response + judgment, in tokens


def condition(ctx: ExperimentContext) -> Condition:
    return Condition(base=ctx.preset.base, samples_per_fact=ctx.preset.samples_per_fact,
                     heldout_fraction=ctx.preset.heldout_fraction)


def run(ctx: ExperimentContext) -> ExperimentResult:
    runs: dict[str, list[list[dict[str, Any]]]] = {arm: [] for arm in ARMS}  # arm -> seed -> rows 0..K
    judges: list[dict[str, Any]] = []
    for seed in ctx.preset.seeds:
        prepared = judged_samples(ctx, condition(ctx).with_seed(seed), seed)
        base = ctx.unit(f"seed{seed}-base", lambda _, p=prepared, s=seed: _evaluate(ctx, p(), load_base(p().base_dir), s))
        judge = ctx.unit(f"seed{seed}-ai-judge", lambda scratch, p=prepared: train_ai_judge(ctx, p(), scratch))
        judges.append(judge)
        for arm in ARMS:
            rows = [{"iteration": 0, **base}]
            for k in range(1, ctx.preset.online_iterations + 1):
                rows.append(ctx.unit(f"seed{seed}-{arm}-iter{k}", lambda _, a=arm, k=k, p=prepared, s=seed, j=judge:
                                     _iteration(ctx, p(), s, a, k, j)))
            runs[arm].append(rows)
    figure = plot(ctx, runs)
    return ExperimentResult(
        name="online", title="Online: k iterations of the online loop with fresh prompts, python judge vs AI judge",
        tables=[arm_table(ctx, runs, arm) for arm in ARMS] + [judge_table(ctx.preset.seeds, judges)], figures=[ctx.relative(figure)],
        data={"runs": runs, "ai_judges": judges, "seeds": list(ctx.preset.seeds)},
        findings=findings(runs, judges))


# ------------------------------------------------------------------------------------ the loop
def prompt_pool(prepared: Prepared, seed: int) -> list[dict[str, str]]:
    """Every wording of every single-fact question about the alignment subjects (held-out ones never asked)."""
    world = prepared.belief.world
    heldout = heldout_subjects(prepared.belief, prepared.condition.heldout_fraction, seed)
    return [{"id": f"{kind.attributes[0]}/{wording}/{subject}", "prompt": question.format(s=subject)}
            for kind in SINGLE_FACT_KINDS for wording, question in enumerate(kind.questions)
            for subject in sorted(world.subjects_of(kind.subject_type)) if subject not in heldout]


def write_python_judge(prepared: Prepared, path: Path) -> str:
    """A `python:FILE:judge` spec for the loop: the lab's judge over this condition's world (the loop's
    `demo` judge knows the demo world only). The file is the config, so a resumed run finds it unchanged."""
    spec = prepared.condition.base
    atomic_write_text(path, "\n".join([
        '"""The lab judge over the world of this run (written by cutalign.lab.experiments.online)."""',
        "from cutalign.lab.judge import judge_response",
        "from cutalign.lab.world import make_world",
        "",
        f"WORLD = make_world({spec.n_entities}, {spec.world_seed})",
        "",
        "",
        "def judge(prompt, completion):",
        "    return judge_response(prompt, completion, world=WORLD)",
        ""]))
    return f"python:{path}:judge"


def online_config(ctx: ExperimentContext, prepared: Prepared, seed: int, arm: str, judge: dict[str, Any]) -> Any:
    """The loop's built-in-world settings (full fine-tuning, T=1, every positive kept) on this condition's
    base, pool and judge, with the preset's training budget; no eval hook (the lab evaluates per group)."""
    from cutalign.online import OnlineConfig
    from cutalign.online.config import builtin_preset

    folder = ctx.dir / f"seed{seed}"
    pool = prompt_pool(prepared, seed)
    atomic_write_jsonl(folder / "pool.jsonl", pool)
    n = min(ctx.preset.online_prompts, len(pool))
    settings = builtin_preset()
    train = {**settings.pop("train"), "learning_rate": ctx.preset.train.learning_rate,
             "num_train_epochs": ctx.preset.train.epochs, "per_device_train_batch_size": ctx.preset.train.batch_size,
             "max_length": ctx.preset.train.max_length, "use_cpu": True}
    if arm == "python":
        judging: dict[str, Any] = {"judge": write_python_judge(prepared, folder / "python_judge.py")}
    else:
        judging = {"judge": "hf", "judge_model": judge["model"],
                   "judge_options": {"max_new_tokens": JUDGE_MAX_NEW_TOKENS, "batch_size": 16}}
    # The paper's loop is plain CUT (the built-in world's default is CUT+, `recipe` measures it offline).
    settings["method"] = "cut"
    return OnlineConfig(**{**settings, **judging, "model": str(prepared.base_dir), "prompts": str(folder / "pool.jsonl"),
                           "prompts_per_iteration": n,
                           "reuse_prompts": ctx.preset.online_iterations * n > len(pool), "seed": seed,
                           "eval": None, "train": train})


def _iteration(ctx: ExperimentContext, prepared: Prepared, seed: int, arm: str, k: int,
               judge: dict[str, Any]) -> dict[str, Any]:
    """Run the loop to iteration k (resuming its run folder), then measure iteration k with ground truth."""
    import torch

    from cutalign.online import run_online

    torch.set_num_threads(1)
    run_dir = ctx.dir / f"seed{seed}" / f"{arm}-run"
    result = run_online(online_config(ctx, prepared, seed, arm, judge), run_dir, iterations=k,
                        progress=ctx.progress)
    it_dir = run_dir / f"iter_{k}"
    manifest = json.loads((it_dir / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest["counts"]
    return {"iteration": k, "judge": manifest["stages"]["judge"].get("judge"), "prompts": counts["prompts"],
            "trained_on": counts.get("trained_on", 0), "judged_satisfactory": manifest["metrics"]["satisfactory_rate"],
            "judge_errors": counts["judge_errors"], **ground_truth(prepared, it_dir),
            **_evaluate(ctx, prepared, load_base(result.final_model), seed)}


def ground_truth(prepared: Prepared, it_dir: Path) -> dict[str, Any]:
    """The python judge's verdict on each of the iteration's generations, and how often the loop's judge agreed
    (a failed or unparseable verdict counts as a disagreement)."""
    from cutalign.online.stages import judgment_error

    loop_labels = {r["id"]: (r["label"] if judgment_error(r) is None else None) for r in _jsonl(it_dir / "judgments.jsonl")}
    truth = {r["id"]: bool(judge_response(r["prompt"], r["completion"], world=prepared.belief.world).satisfactory)
             for r in _jsonl(it_dir / "generations.jsonl")}
    agree = sum(loop_labels.get(i) == label for i, label in truth.items())
    return {"generated": len(truth), "satisfactory": sum(truth.values()) / len(truth),
            "agreement": agree / len(truth)}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _evaluate(ctx: ExperimentContext, prepared: Prepared, loaded: tuple[Any, Any], seed: int) -> dict[str, float]:
    model, tokenizer = loaded
    return evaluate(model, tokenizer, prepared, samples=ctx.preset.eval_samples, seed=seed)


# ------------------------------------------------------------------------------------ AI judge
def train_ai_judge(ctx: ExperimentContext, prepared: Prepared, scratch: Path) -> dict[str, Any]:
    """The AI judge: `train_judge` from the base on the lab's judged samples of it (10% held out for agreement)."""
    import torch

    from cutalign.judges.training import train_judge
    from cutalign.trainer.config import MLEConfig

    torch.set_num_threads(1)
    data = scratch / "judged.jsonl"
    atomic_write_jsonl(data, prepared.records)
    settings = ctx.preset.train
    config = MLEConfig(output_dir=str(scratch / "judge"), num_train_epochs=settings.epochs,
                       learning_rate=settings.learning_rate, per_device_train_batch_size=settings.batch_size,
                       max_length=JUDGE_MAX_LENGTH, seed=settings.seed, warmup_steps=0.1, logging_steps=5,
                       save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=not ctx.progress)
    report = train_judge(data, model=str(prepared.base_dir), config=config, eval_fraction=0.1,
                         eval_max_new_tokens=JUDGE_MAX_NEW_TOKENS, eval_batch_size=16)
    evaluation = report["eval"] or {}
    return {"model": report["output_dir"], "train_examples": report["train"].get("train_examples"),
            "train_loss": report["train"].get("train_loss"), "heldout_agreement": evaluation.get("agreement"),
            "heldout_majority_baseline": evaluation.get("majority_baseline"),
            "heldout_examples": evaluation.get("examples")}


# ------------------------------------------------------------------------------------- report
def _cells(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return fmt_mean_std(values) if len(values) == len(rows) else "—"


def arm_table(ctx: ExperimentContext, runs: dict[str, list[list[dict[str, Any]]]], arm: str) -> Table:
    judge = "the python judge" if arm == "python" else "the AI judge (trained with train_judge)"
    columns = ["iteration", "prompts", "judged satisfactory", "satisfactory (python)", "agreement", *ACCURACY]
    rows = []
    for k in range(ctx.preset.online_iterations + 1):
        at_k = [seed_rows[k] for seed_rows in runs[arm]]
        rows.append([k, at_k[0].get("prompts", "—"), _cells(at_k, "judged_satisfactory"), _cells(at_k, "satisfactory"),
                     _cells(at_k, "agreement"), *(_cells(at_k, c) for c in ACCURACY)])
    return Table(f"Online loop judged by {judge}, % (mean ± std over seeds)", columns, rows,
                 note="Row k > 0: the satisfactory rates are of iteration k's samples (the policy before its "
                      "training; 'judged' = by the loop's judge, 'python' = ground truth), agreement = the loop's "
                      "judge vs the python judge on them; accuracies are of the model after iteration k (greedy per "
                      "group, sampled_all = T=1). Row 0: the base.")


def judge_table(seeds: tuple[int, ...], judges: list[dict[str, Any]]) -> Table:
    rows = [[seed, j["train_examples"], j["heldout_examples"], j["heldout_agreement"], j["heldout_majority_baseline"]]
            for seed, j in zip(seeds, judges, strict=True)]
    return Table("The AI judge on held-out judged samples of the base (fraction of verdicts equal to the python "
                 "judge's)", ["seed", "trained on", "held out", "agreement", "majority baseline"], rows)


def _series(runs: dict[str, list[list[dict[str, Any]]]], arm: str, key: str) -> tuple[list[float], list[float]]:
    stats = [mean_std([seed_rows[k][key] for seed_rows in runs[arm]]) for k in range(len(runs[arm][0]))]
    return [100 * m for m, _ in stats], [100 * s for _, s in stats]


def plot(ctx: ExperimentContext, runs: dict[str, list[list[dict[str, Any]]]]) -> Path:
    series, errors = {}, {}
    for arm in ARMS:
        for key, label in (("all", "greedy accuracy"), ("sampled_all", "T=1 accuracy"),
                           ("targeted", "greedy targeted")):
            if all(key in rows[0] for rows in runs[arm]):
                series[f"{arm} judge: {label}"], errors[f"{arm} judge: {label}"] = _series(runs, arm, key)
    xs = list(range(ctx.preset.online_iterations + 1))
    return line_chart(ctx.figure_path("online_accuracy"), "Accuracy after each online iteration (row 0: the base)", xs,
                      series, "iteration", "accuracy (%)", errors)


def _mean(runs: list[list[dict[str, Any]]], k: int, key: str) -> float:
    return mean_std([rows[k][key] for rows in runs])[0]


def _trend(before: float, after: float) -> str:
    return f"{100 * before:.1f}% -> {100 * after:.1f}% ({'up' if after > before else 'down' if after < before else 'flat'})"


def findings(runs: dict[str, list[list[dict[str, Any]]]], judges: list[dict[str, Any]]) -> list[str]:
    """What the figures say, per arm, computed from them (nothing here is written in advance)."""
    out = []
    last = len(runs["python"][0]) - 1
    for arm in ARMS:
        out.append(f"{arm} judge: satisfactory rate (python judge) of the loop's samples "
                   f"{_trend(_mean(runs[arm], 1, 'satisfactory'), _mean(runs[arm], last, 'satisfactory'))} from "
                   f"iteration 1 to {last}; after {last} iterations greedy accuracy on all facts "
                   f"{_trend(_mean(runs[arm], 0, 'all'), _mean(runs[arm], last, 'all'))}, T=1 accuracy "
                   f"{_trend(_mean(runs[arm], 0, 'sampled_all'), _mean(runs[arm], last, 'sampled_all'))}.")
    ai_rows = [r for rows in runs["ai"] for r in rows[1:]]
    agreement = mean_std([r["agreement"] for r in ai_rows])[0]
    called = [r["judged_satisfactory"] for r in ai_rows if r["judged_satisfactory"] is not None]
    truth = mean_std([r["satisfactory"] for r in ai_rows])[0]
    heldout = [(j["heldout_agreement"], j["heldout_majority_baseline"]) for j in judges
               if j["heldout_agreement"] is not None]
    sentence = (f"The AI judge agrees with the python judge on {100 * agreement:.1f}% of the policy's samples; it "
                + (f"calls {100 * mean_std(called)[0]:.1f}% of them satisfactory" if called else
                   "gave no readable verdict") + f" where the python judge calls {100 * truth:.1f}%")
    if heldout:
        held, majority = (mean_std([h[i] for h in heldout])[0] for i in (0, 1))
        sentence += (f"; on its held-out training samples {100 * held:.1f}% vs {100 * majority:.1f}% for always "
                     f"answering the majority label ({'better' if held > majority else 'no better'})")
    return [*out, sentence + "."]
