"""`cutalign demo`: what judgments add, on the lab's smallest preset, offline, in minutes on a CPU.

The demo starts from the lab's pretrained tiny base, which holds wrong beliefs (misconceptions: for
a quarter of the facts its corpus mostly stated one fixed wrong value). It samples answers from
that base, judges them with the lab's programmatic judge, and trains two models from the same base
with the same settings on the same judged samples: CUT (uses the judgments) and SFT on the
satisfactory samples only (rejection sampling: what a user would do without judgments). It prints
both models' greedy accuracy before and after, on the targeted (misconceived) facts and on all
facts, the verdict, the wall time of each phase, and one negative with the tokens CUT flags.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from cutalign.api import NoUsableExamplesError
from cutalign.data.templates import ALPACA_PLAIN
from cutalign.files import atomic_write_json, atomic_write_jsonl
from cutalign.lab.base import DEMO_BASE, BaseSpec, Beliefs, beliefs, build_base, load_base
from cutalign.lab.judge import judge_response, judgment_record
from cutalign.lab.training import PhaseTimer, quiet
from cutalign.lab.world import (
    SINGLE_FACT_KINDS,
    EvalQuestion,
    answer_questions,
    evaluation_set,
    score_responses,
)


@dataclass
class DemoSettings:
    """The demo's knobs; the defaults are the figures the README reports."""

    output_dir: Path = Path("runs/cut-demo")
    base: BaseSpec = field(default_factory=lambda: DEMO_BASE)
    cache_dir: Path | None = None  # default: cutalign.lab.base.cache_root()
    samples_per_fact: int = 4
    epochs: float = 8.0
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 128
    seed: int = 42
    progress: bool = False


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Build (or reuse) the base, sample and judge, train CUT and SFT-on-positives, and evaluate."""
    timer, out = PhaseTimer(), settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    with timer.phase("base model (pretraining, cached)"):
        base_dir, built = build_base(settings.base, settings.cache_dir, progress=settings.progress)
        model, tokenizer = load_base(base_dir)
    belief = beliefs(settings.base)
    questions = evaluation_set(belief.world)
    targeted = [i for i, q in enumerate(questions) if _fact(belief, q) in belief.misconceptions]
    with timer.phase("sampling from the base"):
        records = _sample_and_judge(model, tokenizer, belief, settings)
    atomic_write_jsonl(out / "train.jsonl", records)
    with timer.phase("evaluation"):
        before = _accuracy(model, tokenizer, questions, targeted)
    results: dict[str, Any] = {}
    for method in ("cut", "sft"):
        with timer.phase(f"training {method.upper()}"):
            try:
                trainer = _train(method, base_dir, records, out / method, settings)
            except NoUsableExamplesError as error:  # rejection sampling that accepted nothing
                results[method] = before | {"train_loss": None, "examples": 0, "drops": {"no_usable_examples": 0},
                                            "error": str(error)}
                continue
        with timer.phase("evaluation"):
            results[method] = _accuracy(trainer.model, tokenizer, questions, targeted) | {
                "train_loss": trainer.state.log_history[-1].get("train_loss"),
                "examples": len(trainer.train_dataset), "drops": trainer.drop_report.as_dict()}
        if method == "cut":
            detection = detection_example(trainer, records, belief)
    figures = {
        "base": {"dir": str(base_dir), "built_now": built, "key": settings.base.key()},
        "samples": len(records), "negatives": sum(not r["label"] for r in records),
        "targeted_facts": len(targeted), "facts": len(questions),
        "before": before, "cut": results["cut"], "sft": results["sft"], "detection": detection,
        "verdict": verdict(before, results["cut"], results["sft"]),
        "seconds": dict(timer.seconds), "total_seconds": sum(timer.seconds.values()), "output_dir": str(out),
    }
    atomic_write_json(out / "demo_results.json", figures)
    return figures


def _fact(belief: Beliefs, question: EvalQuestion) -> tuple[str, str]:
    fact = belief.world.facts_asked(question.question)[0]
    return fact.subject, fact.attribute


def _sample_and_judge(model: Any, tokenizer: Any, belief: Beliefs, settings: DemoSettings) -> list[dict[str, Any]]:
    """``samples_per_fact`` T=1 samples per fact, each to a randomly worded question, judged."""
    rng = random.Random(settings.seed)
    kinds = {kind.attributes[0]: kind for kind in SINGLE_FACT_KINDS}
    prompts = [rng.choice(kinds[a].questions).format(s=s)
               for s, a, _ in belief.world.facts for _ in range(settings.samples_per_fact)]
    responses = answer_questions(model, tokenizer, [(p, "") for p in prompts],
                                 lambda q: ALPACA_PLAIN.format(instruction=q), do_sample=True, seed=settings.seed)
    records = []
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        judgment = judge_response(prompt, response, world=belief.world, rng=rng)
        if judgment.ok:  # an unparseable prompt cannot happen here: every prompt is the world's
            records.append(judgment_record(prompt, response, judgment, f"demo-{i:04d}"))
    return records


def _accuracy(model: Any, tokenizer: Any, questions: list[EvalQuestion], targeted: list[int]) -> dict[str, float]:
    responses = answer_questions(model, tokenizer, questions, lambda q: ALPACA_PLAIN.format(instruction=q))
    correct = score_responses(responses, questions)
    return {"all": sum(correct) / len(correct),
            "targeted": sum(correct[i] for i in targeted) / max(1, len(targeted)),
            "other": sum(c for i, c in enumerate(correct) if i not in set(targeted))
            / max(1, len(correct) - len(targeted))}


def _train(method: str, base_dir: Path, records: list[dict[str, Any]], out: Path, settings: DemoSettings) -> Any:
    """One method from the base with the shared settings; saves a standard output dir (model card included)."""
    from cutalign.trainer.config import CUTConfig, SFTConfig
    from cutalign.trainer.cut_trainer import CUTTrainer
    from cutalign.trainer.mle_trainer import SFTTrainer

    model, tokenizer = load_base(base_dir)
    common = dict(output_dir=str(out), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
                  per_device_train_batch_size=settings.batch_size, max_length=settings.max_length,
                  positive_ratio=None, seed=settings.seed, warmup_steps=0.1, logging_steps=5,
                  save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    config_cls, trainer_cls = (CUTConfig, CUTTrainer) if method == "cut" else (SFTConfig, SFTTrainer)
    trainer = trainer_cls(model, config_cls(**common), train_dataset=records, processing_class=tokenizer)
    result = quiet(trainer, f"training {method.upper()}" if settings.progress else None).train()
    trainer.save_model()
    trainer.save_metrics("train", result.metrics)
    trainer.create_model_card()
    return trainer


def verdict(before: dict[str, float], cut: dict[str, float], sft: dict[str, float]) -> str:
    """One honest sentence: where CUT beats rejection-sampling SFT and where it does not."""
    parts = []
    for key, name in (("targeted", "the targeted (misconceived) facts"), ("all", "all facts")):
        gap = cut[key] - sft[key]
        word = "beats" if gap > 0 else "ties with" if gap == 0 else "loses to"
        parts.append(f"on {name} CUT {word} SFT-on-positives ({cut[key]:.0%} vs {sft[key]:.0%}, "
                     f"base {before[key]:.0%})")
    return "; ".join(parts) + "."


def detection_example(trainer: Any, records: list[dict[str, Any]], belief: Beliefs) -> dict[str, Any]:
    """The flagged tokens of one negative that states a misconception (else any wrong value)."""
    negatives = [r for r in records if not r["label"] and judge_response(
        r["prompt"], r["completion"], world=belief.world).error_spans]
    if not negatives:
        return {"example": None, "flagged": [], "gold": []}
    def on_topic(record: dict[str, Any]) -> bool:  # names the asked subject: the wrong value is the only slip
        return belief.world.facts_asked(record["prompt"])[0].subject in record["completion"]

    misconceived = set(belief.misconceptions.values())
    ranked = sorted(negatives, key=lambda r: (not on_topic(r), not any(v in r["completion"] for v in misconceived)))
    example = ranked[0]
    spans = judge_response(example["prompt"], example["completion"], world=belief.world).error_spans or []
    pieces = flagged_pieces(trainer, example)
    return {"example": example, "pieces": pieces, "flagged": [t for t, f in pieces if f and t.strip()],
            "gold": [example["completion"][a:b] for a, b in spans]}


@torch.no_grad()
def flagged_pieces(trainer: Any, example: dict[str, Any]) -> list[tuple[str, bool]]:
    """The example's response as (token text, in CUT's unlikely set U) pairs, under the trained model."""
    from cutalign.data.views import ViewBuilder
    from cutalign.losses import cut_loss

    args = trainer.args
    builder = ViewBuilder(trainer.processing_class, trainer.template, max_length=args.max_length,
                          fake_positive=args.fake_positive_text)
    features = builder.build(example, ("plain", "judged", "misaligned"))
    if isinstance(features, str):
        return []
    model = trainer.model.eval()
    batch = trainer._prepare_inputs(trainer.data_collator([features]))
    logps = trainer.context_logps(model, batch)
    plain, mask = logps["plain"]
    misaligned = logps["misaligned"][0] if "misaligned" in logps else None
    out = cut_loss(plain, logps["judged"][0], misaligned, mask, batch["is_negative"],
                   threshold=args.threshold, alpha=args.alpha, gamma=args.gamma, mode=args.mode)
    tokenizer = trainer.processing_class
    return [(tokenizer.decode([t], skip_special_tokens=True), bool(f))
            for t, f in zip(features["completion_ids"], out.unlikely_mask[0].tolist(), strict=False)]


def small_settings(output_dir: Path, cache_dir: Path | None = None) -> DemoSettings:
    """Tiny settings for tests and smoke runs: a smaller base and one epoch (figures mean little)."""
    base = replace(DEMO_BASE, n_entities=3, epochs=8.0, hidden_size=32, demos_per_fact=2, judged_per_fact=1,
                   vocab_size=512)
    return DemoSettings(output_dir=output_dir, base=base, cache_dir=cache_dir, samples_per_fact=2, epochs=1.0)
