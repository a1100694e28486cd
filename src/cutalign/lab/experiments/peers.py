"""Experiment 7 (peers): TRL's experimental SDFT with the judgment as privileged context, against CUT and SFT.

SDFT (Shenfeld et al. 2026, `trl.experimental.sdft`) learns from text the student never sees: the student
samples on-policy from the plain prompt, and is distilled towards a teacher (the frozen base, TRL's default)
that reads the same prompt *with* the privileged context. Here the context is the lab judge's judgment of
the base's sample (the fake-positive sentence for satisfactory ones, as in pretraining), so teacher and CUT
read the very same ``[x, j]`` text: the teacher prompt is the CUT judged template the base was pretrained
on, produced by a chat template on the lab tokenizer (TRL's trainer is used as is). Every method trains from
the same base on the same judged samples; SDFT gets CUT's number of optimizer steps and batch size (so the
same number of examples) and the same learning-rate grid, chosen on the validation wording like offline.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from cutalign.data.templates import ALPACA_JUDGED, ALPACA_PLAIN, DEFAULT_FAKE_POSITIVE
from cutalign.lab.align import Condition, Prepared, TrainSettings, train_method
from cutalign.lab.base import load_base
from cutalign.lab.experiments import offline
from cutalign.lab.experiments.context import (
    ExperimentContext,
    ExperimentResult,
    Table,
    fmt_mean_std,
    mean_std,
)
from cutalign.lab.experiments.offline import judged_samples, nothing_to_learn, select
from cutalign.lab.experiments.report import bar_chart

METHODS = ("cut", "sdft", "sft")
COLUMNS = ("targeted", "other", "heldout", "all", "sampled_targeted", "sampled_other", "sampled_heldout",
           "sampled_all")
# The teacher's user turn is "<question><MARKER><judgment>"; the chat template renders it as ALPACA_JUDGED.
MARKER = "\n\n### Judgment:\n"
TEACHER_TEMPLATE = "{prompt}" + MARKER + "{privileged_context}"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% set parts = messages[-1]['content'].split(judgment_marker) %}{% if parts | length > 1 %}"
    + ALPACA_JUDGED.format(instruction="{{ parts[0] }}", judgment="{{ parts[1] }}") + "{% else %}"
    + ALPACA_PLAIN.format(instruction="{{ parts[0] }}") + "{% endif %}"
)
MAX_COMPLETION_TOKENS = 32  # the lab's answers are one short sentence (evaluation generates 32 tokens too)


def condition(ctx: ExperimentContext) -> Condition:
    """The preset's base in the misconception regime (where judgments matter most), the preset's sizes."""
    base = replace(ctx.preset.base, regime=replace(ctx.preset.base.regime, kind="misconception"))
    return Condition(base=base, samples_per_fact=ctx.preset.samples_per_fact,
                     heldout_fraction=ctx.preset.heldout_fraction)


def sdft_blocked() -> str | None:
    """Why TRL's SDFT cannot run in this environment, or None when it can."""
    try:
        from trl.experimental.sdft import SDFTConfig, SDFTTrainer  # noqa: F401
    except ImportError as error:
        return f"trl.experimental.sdft does not import: {error}"
    needed = {"teacher_prompt_template", "chat_template_kwargs", "num_generations", "max_completion_length"}
    missing = sorted(needed - set(SDFTConfig.__dataclass_fields__))
    return f"SDFTConfig has no {', '.join(missing)}" if missing else None


def run(ctx: ExperimentContext) -> ExperimentResult:
    blocked = sdft_blocked()
    runs: dict[str, list[dict[str, Any]]] = {"base": [], **{m: [] for m in METHODS if m != "sdft" or not blocked}}
    for seed in ctx.preset.seeds:
        prepared = judged_samples(ctx, condition(ctx).with_seed(seed), seed)
        runs["base"].append(ctx.unit(f"seed{seed}-base", lambda _, p=prepared, s=seed: offline.base_run(ctx, p(), s)))
        steps: dict[float, int] = {}
        for method in runs:
            if method == "base":
                continue
            by_lr = []
            for lr in ctx.preset.grid:
                budget = steps.get(lr, 0)
                unit = ctx.unit(f"seed{seed}-{method}-lr{lr:g}", lambda scratch, m=method, lr=lr, p=prepared, s=seed,
                                b=budget: _train(ctx, p(), s, m, lr, b, scratch))
                steps.setdefault(lr, unit["steps"])  # CUT runs first: its step count is SDFT's budget
                by_lr.append(unit)
            runs[method].append(select(by_lr) | {"seed": seed})
    figure = ctx.figure_path("peers_accuracy")
    bar_chart(figure, "Greedy accuracy per group (mean ± std over seeds)",
              {name: {c: offline.percent(mean_std([r[c] for r in rs])) for c in COLUMNS[:4] if all(c in r for r in rs)}
               for name, rs in runs.items()}, "accuracy (%)")
    return ExperimentResult(
        name="peers", title="Peers: TRL's SDFT with the judgment as privileged context vs CUT and SFT",
        tables=[results_table(ctx, runs, blocked)], figures=[ctx.relative(figure)],
        data={"runs": runs, "seeds": list(ctx.preset.seeds), "grid": list(ctx.preset.grid), "blocked": blocked},
        findings=findings(runs, blocked))


def _train(ctx: ExperimentContext, prepared: Prepared, seed: int, method: str, lr: float, cut_steps: int,
           scratch: Path) -> dict[str, Any]:
    settings = replace(ctx.preset.train, learning_rate=lr)
    if method == "sdft":
        model, tokenizer, extra = train_sdft(prepared.base_dir, prepared.records, scratch / "model", settings,
                                             cut_steps, ctx.progress)
    else:
        try:
            trained = train_method(method, prepared.base_dir, prepared.records, scratch / "model", settings,
                                   progress=ctx.progress)
        except ValueError as error:
            if not nothing_to_learn(error):
                raise
            model, tokenizer = load_base(prepared.base_dir)  # no positive for SFT: the model stays the base
            return offline.model_scores(model, tokenizer, prepared, ctx.preset.eval_samples, seed) | {
                "lr": lr, "steps": 0, "train_examples": 0, "untrained": str(error)}
        model, tokenizer = trained.trainer.model, trained.trainer.processing_class
        extra = {"steps": trained.trainer.state.global_step, "train_loss": trained.metrics.get("train_loss"),
                 "train_examples": trained.metrics.get("train_examples")}
    extra["weight_change"] = weight_change(model, prepared.base_dir)
    return offline.model_scores(model, tokenizer, prepared, ctx.preset.eval_samples, seed) | extra | {"lr": lr}


def weight_change(model: Any, base_dir: Path) -> float:
    """||theta - theta_base|| / ||theta_base||: proof that a method moved the weights at all."""
    import torch

    base, _ = load_base(base_dir)
    reference = dict(base.named_parameters())
    with torch.no_grad():
        diff = sum(float((p.detach().cpu() - reference[n]).pow(2).sum()) for n, p in model.named_parameters())
        norm = sum(float(p.pow(2).sum()) for p in reference.values())
    return math.sqrt(diff / norm)


def sdft_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's SDFT dataset: the question as a user turn (the student's prompt) and its judgment as
    ``privileged_context`` (the teacher's only extra); satisfactory samples get the fake-positive judgment."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "privileged_context": r["judgment"] or DEFAULT_FAKE_POSITIVE} for r in records]


def lab_chat_tokenizer(tokenizer: Any) -> Any:
    """The lab tokenizer rendering a user turn as ALPACA_PLAIN, or as ALPACA_JUDGED when it carries a judgment."""
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


class BatchProbe:
    """A TRL self-distillation callback that checks every batch SDFT builds: each student prompt must be a
    lab prompt without judgment, each teacher prompt the same question in the judged template with the
    judgment of a record (exact token ids), so "the teacher saw the judgment, the student did not" is measured."""

    def __init__(self, tokenizer: Any, records: list[dict[str, Any]]) -> None:
        self.tokenizer = tokenizer
        self.plain = {self._ids(ALPACA_PLAIN.format(instruction=r["prompt"])) for r in records}
        self.judged = {self._ids(ALPACA_JUDGED.format(instruction=row["prompt"][0]["content"],
                                                      judgment=row["privileged_context"]))
                       for row in sdft_rows(records)}
        self.counts = {"batches": 0, "rows": 0, "student_plain": 0, "student_judged": 0, "teacher_judged": 0}
        self.example: dict[str, str] = {}

    def _ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text).input_ids)

    def _unpad(self, row: Any) -> tuple[int, ...]:
        ids = row.tolist()
        start = next((i for i, t in enumerate(ids) if t != self.tokenizer.pad_token_id), len(ids))
        return tuple(ids[start:])

    def on_self_distillation_batch_prepared(self, prompt_ids: Any, completion_ids: Any, teacher_input_ids: Any,
                                            **_: Any) -> None:
        teacher_prompts = teacher_input_ids[:, : teacher_input_ids.size(1) - completion_ids.size(1)]
        self.counts["batches"] += 1
        for student_row, teacher_row, completion in zip(prompt_ids, teacher_prompts, completion_ids, strict=True):
            student, teacher = self._unpad(student_row), self._unpad(teacher_row)
            self.counts["rows"] += 1
            self.counts["student_plain"] += student in self.plain
            self.counts["student_judged"] += student in self.judged
            self.counts["teacher_judged"] += teacher in self.judged
            if not self.example:
                decode = self.tokenizer.decode
                self.example = {"student": decode(student), "teacher": decode(teacher),
                                "completion": decode(completion, skip_special_tokens=True)}

    def summary(self) -> dict[str, Any]:
        return self.counts | {"example": self.example}


def train_sdft(base_dir: Path, records: list[dict[str, Any]], output_dir: Path, settings: TrainSettings,
               steps: int, progress: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """TRL's SDFTTrainer from the base on the judged samples for ``steps`` optimizer steps (CUT's), one
    on-policy sample per prompt so a batch holds as many examples as CUT's; returns model, tokenizer, facts."""
    import datasets
    from transformers import TrainerCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from cutalign.lab.training import quiet

    if steps <= 0:
        raise ValueError(f"SDFT needs CUT's step count as its budget, got {steps}")
    model, tokenizer = load_base(base_dir)
    tokenizer = lab_chat_tokenizer(tokenizer)
    batch = min(settings.batch_size, len(records))  # TRL's sampler drops incomplete batches
    # No prompt truncation: TRL cuts the *teacher* prompt from the left too, which would cut the judged template.
    config = SDFTConfig(
        output_dir=str(output_dir), max_steps=steps, learning_rate=settings.learning_rate,
        per_device_train_batch_size=batch, num_generations=1, max_completion_length=MAX_COMPLETION_TOKENS,
        max_prompt_length=None, teacher_prompt_template=TEACHER_TEMPLATE,
        chat_template_kwargs={"judgment_marker": MARKER}, seed=settings.seed, warmup_steps=0.1, logging_steps=5,
        save_strategy="no", report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False,
        disable_tqdm=not progress, dataloader_num_workers=0)
    probe = BatchProbe(tokenizer, records)
    callback = type("SDFTBatchProbe", (TrainerCallback,), {
        "on_self_distillation_batch_prepared": lambda self, **kw: probe.on_self_distillation_batch_prepared(**kw)})
    trainer = SDFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(sdft_rows(records)),
                          processing_class=tokenizer, callbacks=[callback()])
    result = quiet(trainer, "sdft" if progress else None).train()
    return trainer.model, tokenizer, {"steps": trainer.state.global_step, "train_loss": result.training_loss,
                                      "train_examples": trainer.state.global_step * batch, "probe": probe.summary(),
                                      "teacher": config.teacher_model_kind,
                                      "distillation": config.distillation_mode}


def results_table(ctx: ExperimentContext, runs: dict[str, list[dict[str, Any]]], blocked: str | None) -> Table:
    rows = [[name, "-" if name == "base" else ", ".join(f"{r['lr']:g}" for r in rs),
             "-" if name == "base" else ", ".join(str(r["steps"]) for r in rs),
             *(fmt_mean_std([r[c] for r in rs]) if all(c in r for r in rs) else "-" for c in COLUMNS)]
            for name, rs in runs.items()]
    if blocked:
        rows.append(["sdft", "-", "-", *(f"blocked: {blocked}" if i == 0 else "-" for i in range(len(COLUMNS)))])
    preset = ctx.preset
    note = (f"Accuracy %, mean ± std over seeds {list(preset.seeds)}, misconception-regime base. Greedy per group "
            "(targeted = misconceived alignment facts, other = the other alignment facts, heldout = subjects never "
            f"sampled, all); sampled_* = T=1 accuracy over {preset.eval_samples} samples per question. Same judged "
            f"samples for every method; lr from the grid {list(preset.grid)} chosen per seed on the alignment facts "
            "in another wording. CUT and SFT (rejection sampling: the satisfactory samples only): "
            f"{preset.train.epochs:g} epochs, batch {preset.train.batch_size}. SDFT (TRL 'base' teacher, top-k logit "
            "distillation, TRL defaults): CUT's optimizer steps and batch, one on-policy T=1 sample per prompt; "
            "the teacher reads the judgment of the base's sample, not of the student's fresh one.")
    return Table("Peers: greedy and sampled accuracy per group", ["method", "lr", "steps", *COLUMNS], rows, note)


def findings(runs: dict[str, list[dict[str, Any]]], blocked: str | None) -> list[str]:
    """Who wins on all facts and on the targeted ones, and what SDFT does against CUT and the base."""
    out = [f"SDFT blocked: {blocked}."] if blocked else []
    mean = {name: {c: mean_std([r[c] for r in rs])[0] for c in COLUMNS if all(c in r for r in rs)}
            for name, rs in runs.items()}
    methods = [m for m in mean if m != "base"]
    for column, label in (("all", "all facts (greedy)"), ("targeted", "the targeted facts (greedy)"),
                          ("sampled_all", "all facts (T=1)")):
        if all(column in mean[m] for m in methods):
            top = max(mean[m][column] for m in methods)
            best = " = ".join(m for m in methods if mean[m][column] == top)
            out.append(f"Best on {label}: {best} at {top * 100:.1f}% (base {mean['base'][column] * 100:.1f}%).")
    if "sdft" in mean:
        for rival in ("cut", "sft", "base"):
            gaps = ", ".join(f"{c} {(mean['sdft'][c] - mean[rival][c]) * 100:+.1f}" for c in COLUMNS
                             if c in mean["sdft"] and c in mean[rival])
            out.append(f"SDFT vs {rival}: {gaps} points.")
        change = mean_std([r["weight_change"] for r in runs["sdft"]])[0]
        out.append(f"SDFT moved the weights by {change:.2%} of their norm (CUT "
                   f"{mean_std([r['weight_change'] for r in runs['cut']])[0]:.2%}).")
    return out
