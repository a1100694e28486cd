"""`train_judge`: fine-tune an AI judge on judged data, then measure it on a held-out split.

The paper's online runs replace GPT-4 by a judge fine-tuned from the target model on 3000/5000
collected judgments. Agreement on held-out data (does the judge's Yes./No. match the data's
satisfactory label?) is what tells whether such a judge can be trusted; it is measured with the
saved output loaded back through `HFJudge`, exactly as `cutalign judge --judge hf` will use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from cutalign.data.converters import load_judged
from cutalign.data.schema import PolarityRule
from cutalign.files import atomic_write_json
from cutalign.judges.base import Judge

EVAL_FILE = "judge_eval.json"


def split_heldout(dataset: datasets.Dataset, eval_fraction: float, seed: int) -> tuple[datasets.Dataset,
                                                                                        datasets.Dataset | None]:
    """(train, held-out): a seeded random `eval_fraction` of the examples is held out (0: none)."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0:
        return dataset, None
    n_eval = max(1, round(len(dataset) * eval_fraction))
    if n_eval >= len(dataset):
        raise ValueError(f"{len(dataset)} examples cannot be split into training and a held-out "
                         f"{eval_fraction:.0%}; use more data or eval_fraction=0")
    split = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return split["train"], split["test"]


def judge_agreement(judge: Judge, examples: Sequence[dict[str, Any]] | datasets.Dataset) -> dict[str, Any]:
    """How often `judge`'s verdict equals each example's label, from real counts.

    `agreement` counts an unparseable or failed verdict as a disagreement (what a run would lose);
    `parsed_agreement` is over the verdicts that could be read. `confusion` is keyed gold/predicted.
    """
    rows = list(examples)
    judgments = judge.judge([r["prompt"] for r in rows], [r["completion"] for r in rows])
    confusion = {"yes/yes": 0, "yes/no": 0, "no/yes": 0, "no/no": 0}
    failed: dict[str, int] = {}
    for row, judgment in zip(rows, judgments, strict=True):
        if judgment.error is not None or judgment.satisfactory is None:
            kind = judgment.error or "unparseable"
            failed[kind] = failed.get(kind, 0) + 1
            continue
        gold, predicted = ("yes" if row["label"] else "no"), ("yes" if judgment.satisfactory else "no")
        confusion[f"{gold}/{predicted}"] += 1
    agree = confusion["yes/yes"] + confusion["no/no"]
    gold_yes = sum(bool(r["label"]) for r in rows)
    parsed = sum(confusion.values())
    return {
        "examples": len(rows),
        "agreeing": agree,
        "parsed": parsed,
        "failed": failed,
        "agreement": agree / len(rows) if rows else None,
        "parsed_agreement": agree / parsed if parsed else None,
        "confusion_gold_predicted": confusion,
        "gold_satisfactory": gold_yes,
        # What always answering the majority label would score: a judge must beat it to be useful.
        "majority_baseline": max(gold_yes, len(rows) - gold_yes) / len(rows) if rows else None,
    }


def train_judge(data: str | Path | Sequence[str | Path], *, model: str, config: Any, peft_config: Any = None,
                data_format: str = "canonical", rule: PolarityRule | None = None, eval_fraction: float = 0.1,
                eval_max_new_tokens: int = 256, eval_batch_size: int = 8,
                run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a judge into `config.output_dir` and write `judge_eval.json`; returns the report.

    Training is `cutalign.train("judge", ...)` (method `judge`: `JudgeTrainer`) on the training split;
    `config` is an `MLEConfig`; `run_config` is saved beside the model; the output is a model (or LoRA adapter) dir that
    `HFJudge.from_pretrained` / `cutalign judge --judge hf --model DIR` loads.
    """
    from cutalign.api import train
    from cutalign.data.io import JudgedData
    from cutalign.generation.base import SamplingParams
    from cutalign.judges.hf_judge import HFJudge

    rule = rule or PolarityRule(score_threshold=config.score_threshold, positive_pattern=config.positive_pattern)
    loaded = load_judged(data, data_format, rule=rule)
    train_split, heldout = split_heldout(loaded.dataset, eval_fraction, config.seed)
    # The training split keeps the loading drops, so the model card counts them.
    result = train("judge", JudgedData(train_split, loaded.report), model=model, config=config,
                   peft_config=peft_config, run_config={**(run_config or {}), "eval_fraction": eval_fraction})
    trainer, metrics, output_dir = result.trainer, result.metrics, result.output_dir
    report: dict[str, Any] = {"output_dir": str(output_dir), "train": metrics,
                              "dropped": trainer.drop_report.as_dict(), "eval": None}
    if heldout is not None and trainer.is_world_process_zero():
        judge = HFJudge.from_pretrained(str(output_dir), params=SamplingParams(max_new_tokens=eval_max_new_tokens),
                                        batch_size=eval_batch_size)
        evaluation = {"eval_fraction": eval_fraction, "seed": config.seed, **judge_agreement(judge, heldout)}
        atomic_write_json(output_dir / EVAL_FILE, evaluation)
        report["eval"] = evaluation
    return report
