"""Maximum-likelihood baselines of the CUT paper (section 3.2): one small trainer per method.

Each method is a choice of contexts from :mod:`cutalign.data.views` (what the model conditions on
and which target it predicts); the loss is the same for all of them. Per example, every context
it has contributes the mean NLL over that context's target tokens; the loss is the mean over
examples, so `JudgmentTrainer`'s exact gradient-accumulation scaling applies:

| method               | contexts                      | per-example loss                          |
|----------------------|-------------------------------|-------------------------------------------|
| `sft`                | plain (y given x)             | -1/N sum log p(y_t given x), positives    |
| `hindsight`          | hindsight (y given [x, j])    | -1/N sum log p(y_t given x, j)            |
| `forward_prediction` | plain, critique (j given [x, y]) | -1/N sum log p(y_t given x) - 1/Q sum log p(j_t given x, y) |
| `ilf_mle`            | refined (y_hat given x)       | -1/M sum log p(y_hat_t given x)           |

`SFTTrainer` is cutalign's positives-only baseline, not `trl.SFTTrainer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from cutalign.data.report import DropReport
from cutalign.data.sampling import downsample_positives
from cutalign.trainer.base import JudgmentTrainer
from cutalign.trainer.config import JudgmentTrainingConfig, MLEConfig, SFTConfig

NEGATIVE_EXCLUDED = "negative_excluded"


def mean_nll_per_example(logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL over each row's masked target tokens ([B]) and which rows have any token ([B] bool)."""
    counts = mask.sum(dim=1)
    nll = -torch.where(mask, logp, 0.0).sum(dim=1) / counts.clamp(min=1)
    return nll, counts > 0


class MLETrainer(JudgmentTrainer):
    """Sum over `grad_contexts` of each context's per-example mean NLL; mean over the micro-batch.

    Logs `nll_<context>`: the mean over the micro-batch's examples that have that context.
    """

    method_name = "mle"
    config_class: type[JudgmentTrainingConfig] = MLEConfig

    def __init__(self, model: Any, args: JudgmentTrainingConfig | None = None, **kwargs: Any) -> None:
        if args is None:
            args = self.config_class(output_dir=f"{self.method_name}-output")
        if not isinstance(args, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(args).__name__}")
        super().__init__(model, args, **kwargs)

    def select_examples(self, views: datasets.Dataset, args: JudgmentTrainingConfig,
                        dropped: DropReport) -> datasets.Dataset:
        """Optional Align-P downsampling, as CUT does, so a baseline can train on CUT's examples."""
        kept, downsampled = downsample_positives(views, positive_ratio=args.positive_ratio, seed=args.seed)
        dropped.merge(downsampled)
        return kept

    def compute_method_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logps = self.context_logps(model, inputs)
        batch_size = int(inputs["is_negative"].shape[0])
        total: torch.Tensor | float = 0.0
        metrics: dict[str, float] = {}
        for context in self.grad_contexts:
            nll, present = mean_nll_per_example(*logps[context])
            total = total + nll.sum()
            metrics[f"nll_{context}"] = float(nll.detach().sum() / present.sum().clamp(min=1))
        return total / batch_size, metrics


class SFTTrainer(MLETrainer):
    """MLE on y given x over the satisfactory examples (all of them with `sft_include_negatives`)."""

    method_name = "sft"
    config_class = SFTConfig
    grad_contexts = ("plain",)

    def select_examples(self, views: datasets.Dataset, args: SFTConfig, dropped: DropReport) -> datasets.Dataset:
        # Downsample first: the ratio is relative to the negatives, which the exclusion removes.
        views = super().select_examples(views, args, dropped)
        if args.sft_include_negatives:
            return views
        negative = views["is_negative"]
        ids = views["id"] if "id" in views.column_names else [f"#{i}" for i in range(len(views))]
        for example_id, is_negative in zip(ids, negative, strict=True):
            if is_negative:
                dropped.drop(NEGATIVE_EXCLUDED, example_id)
        return views.select([i for i, is_negative in enumerate(negative) if not is_negative])


class HindsightTrainer(MLETrainer):
    """MLE on y given [x, j] (the judged template); a positive without judgment shows the fake positive j+."""

    method_name = "hindsight"
    grad_contexts = ("hindsight",)


class ForwardPredictionTrainer(MLETrainer):
    """MLE on y given x, then on the judgment j given [x, y]; each part normalised by its own length."""

    method_name = "forward_prediction"
    grad_contexts = ("plain", "critique")


class ILFMLETrainer(MLETrainer):
    """MLE on the refined response y_hat given x (ILF-MLE).

    y_hat is the example's `refinement` (from the data or `cutalign refine`). A positive example's
    response is already satisfactory, so when it has no refinement its own response is the target.
    Negatives without one are dropped (`missing_refinement`).
    """

    method_name = "ilf_mle"
    grad_contexts = ("refined",)

    def _prepare_dataset(self, dataset: datasets.Dataset | Sequence[dict] | None, tokenizer: PreTrainedTokenizerBase,
                         args: JudgmentTrainingConfig, name: str) -> datasets.Dataset | None:
        if dataset is None:
            return None
        if not isinstance(dataset, datasets.Dataset):
            dataset = datasets.Dataset.from_list(list(dataset))
        if "completion_ids" not in dataset.column_names:
            refinements = dataset["refinement"] if "refinement" in dataset.column_names else []
            if not any(isinstance(r, str) and r.strip() for r in refinements):
                raise ValueError(
                    f"the {name} data has no refinements; ILF-MLE trains on refined responses: generate them "
                    "with `cutalign refine` (or use data that has a `refinement` field)"
                )
            dataset = dataset.map(_positive_refines_to_itself, desc=f"ILF targets of the {name} dataset")
        return super()._prepare_dataset(dataset, tokenizer, args, name)


def _positive_refines_to_itself(example: dict[str, Any]) -> dict[str, Any]:
    refinement = example.get("refinement")
    if example["label"] and not (isinstance(refinement, str) and refinement.strip()):
        return {"refinement": example["completion"]}
    return {"refinement": refinement}
