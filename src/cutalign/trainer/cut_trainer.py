"""`CUTTrainer`: Contrastive Unlikelihood Training as a `transformers.Trainer`.

Per micro-batch: ONE forward pass with gradient over the rows that need it (plain `x -> y` for
every example, judged `[x, j-] -> y` for negatives) and, in `fake_positive` mode, ONE pass without
gradient over the negatives' `[x, j+] -> y` rows. Positives never get a judged or misaligned row,
so no compute is spent on all-pad halves as in the official layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cutalign.data.io import JudgedData
from cutalign.data.report import DropReport
from cutalign.data.sampling import downsample_positives
from cutalign.losses import CUTAblations, cut_loss
from cutalign.trainer.base import JudgmentTrainer
from cutalign.trainer.config import CUTConfig


class CUTTrainer(JudgmentTrainer):
    """Trainer for CUT (arXiv 2312.14591); see `CUTConfig` for the loss options.

    Usage (any causal LM id or path, canonical examples, optional PEFT config)::

        trainer = CUTTrainer("path/to/model", args=CUTConfig(output_dir="out"),
                             train_dataset=examples, peft_config=LoraConfig(r=16, task_type="CAUSAL_LM"))
        trainer.train()
    """

    method_name = "cut"

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        args: CUTConfig | None = None,
        train_dataset: datasets.Dataset | Sequence[dict] | JudgedData | None = None,
        eval_dataset: datasets.Dataset | Sequence[dict] | JudgedData | dict | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
    ) -> None:
        if args is None:
            args = CUTConfig(output_dir="cut-output")
        if not isinstance(args, CUTConfig):
            raise TypeError(f"CUTTrainer needs a CUTConfig, got {type(args).__name__}")
        self.ablations = CUTAblations(
            no_l1=args.no_l1, no_align_p=args.no_align_p, no_align_n=args.no_align_n,
            no_detection=args.no_detection, no_dynamic_weight=args.no_dynamic_weight,
        )
        detects = not args.no_l1 and not args.no_detection
        dynamic_weight = (not args.no_l1 and args.mode == "paper" and args.gamma > 0
                          and not args.no_dynamic_weight)
        # Compute only what the loss reads: [x, j-] with gradient for Align-N, without gradient when
        # only the detection or the dynamic weight reads it; [x, j+] only for fake_positive detection.
        judged_read = detects or dynamic_weight
        self.grad_contexts = ("plain", "judged") if not args.no_align_n else ("plain",)
        self.nograd_contexts = (("judged",) if args.no_align_n and judged_read else ()) + (
            ("misaligned",) if detects and args.misalign_mode == "fake_positive" else ())
        # Paper mode is a mean over examples (exact under accumulation); official mode keeps the
        # official code's mean of micro-batch means.
        self.per_example_loss = args.mode == "paper"
        super().__init__(model, args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, peft_config=peft_config, callbacks=callbacks,
                         optimizers=optimizers)

    def select_examples(self, views: datasets.Dataset, args: CUTConfig, dropped: DropReport) -> datasets.Dataset:
        kept, downsampled = downsample_positives(views, positive_ratio=args.positive_ratio, seed=args.seed)
        dropped.merge(downsampled)
        return kept

    def compute_method_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        args: CUTConfig = self.args
        logps = self.context_logps(model, inputs)
        logp_plain, mask = logps["plain"]
        length = logp_plain.shape[1]
        logp_judged = _fit(logps.get("judged"), length, like=logp_plain)
        logp_misaligned = _fit(logps["misaligned"], length, like=logp_plain) if "misaligned" in logps else None
        out = cut_loss(
            logp_plain, logp_judged, logp_misaligned, mask, inputs["is_negative"],
            threshold=args.threshold, alpha=args.alpha, gamma=args.gamma, mode=args.mode,
            ablations=self.ablations,
        )
        return out.loss, out.metrics()


def _fit(pair: tuple[torch.Tensor, torch.Tensor] | None, length: int, like: torch.Tensor) -> torch.Tensor:
    """Right-pad a context's [B, T_c] log-probs to the plain context's T (targets are shared)."""
    if pair is None:
        return torch.zeros_like(like)
    values = pair[0]
    if values.shape[1] < length:
        values = nn.functional.pad(values, (0, length - values.shape[1]))
    return values
