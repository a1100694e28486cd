"""`JudgeTrainer`: fine-tune a model to write judgments, in the paper's AI-judge format.

The model reads the AI-judge prompt ("Below is an instruction-response pair. Write a judgment ...
Then reply with 'Yes.' or 'No.' ...", the instruction, the response, `### Judgment:`) and learns
to write the judgment followed by " Yes." (satisfactory) or " No.". Positives whose data has no
judgment text (null = satisfactory) get `POSITIVE_JUDGMENT` ("The response is perfect."), so
every target ends with the decision the `hf` judge parses. This is the `critique` context of the
views (target tokens only, prompt masked), trained with the MLE loss of the baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from cutalign.data.io import unwrap_judged
from cutalign.judges.prompts import AIJudgeTemplate, ai_judge_target
from cutalign.trainer.config import JudgmentTrainingConfig
from cutalign.trainer.mle_trainer import MLETrainer


def with_judge_targets(dataset: datasets.Dataset) -> datasets.Dataset:
    """Canonical examples whose `judgment` is replaced by the judge's target text (judgment + Yes./No.)."""
    return dataset.map(lambda ex: {"judgment": ai_judge_target(ex["judgment"], bool(ex["label"]))},
                       desc="AI-judge targets")


class JudgeTrainer(MLETrainer):
    """MLE on the judge target given the AI-judge prompt; every example (positive or not) is used."""

    method_name = "judge"
    grad_contexts = ("critique",)

    def _prepare_dataset(self, dataset: datasets.Dataset | Sequence[dict] | None, tokenizer: PreTrainedTokenizerBase,
                         args: JudgmentTrainingConfig, name: str) -> datasets.Dataset | None:
        if dataset is None:
            return None
        if args.template != "alpaca":
            raise ValueError("the judge is trained in the paper's AI-judge format; use template='alpaca' "
                             "(conversational prompts are flattened into the instruction)")
        self.template: Any = AIJudgeTemplate()
        dataset = unwrap_judged(dataset, self.drop_report if name == "train" else self.eval_drop_report)
        if not isinstance(dataset, datasets.Dataset):
            dataset = datasets.Dataset.from_list(list(dataset))
        if "completion_ids" not in dataset.column_names:
            dataset = with_judge_targets(dataset)
        return super()._prepare_dataset(dataset, tokenizer, args, name)
