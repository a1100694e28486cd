"""Trainers and their configurations, one registry entry per method of `cutalign train --method`."""

from __future__ import annotations

from dataclasses import dataclass

from cutalign.trainer.config import CUTConfig, JudgmentTrainingConfig, MLEConfig, SFTConfig


@dataclass(frozen=True)
class Method:
    """A training method: its config class and trainer class, by import path (imported lazily)."""

    name: str
    config: str
    trainer: str
    summary: str

    def load(self) -> tuple[type, type]:
        from importlib import import_module

        def get(path: str) -> type:
            module, _, attr = path.rpartition(".")
            return getattr(import_module(module), attr)

        return get(self.config), get(self.trainer)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cut", "cutalign.trainer.config.CUTConfig", "cutalign.trainer.cut_trainer.CUTTrainer",
               "Contrastive Unlikelihood Training (the paper's method)."),
        Method("sft", "cutalign.trainer.config.SFTConfig", "cutalign.trainer.mle_trainer.SFTTrainer",
               "MLE on y given x over the satisfactory (positive) examples."),
        Method("hindsight", "cutalign.trainer.config.MLEConfig", "cutalign.trainer.mle_trainer.HindsightTrainer",
               "MLE on y given [x, j] (the judged template), all examples."),
        Method("forward_prediction", "cutalign.trainer.config.MLEConfig",
               "cutalign.trainer.mle_trainer.ForwardPredictionTrainer",
               "MLE on y given x, then on the judgment j given [x, y]."),
        Method("ilf_mle", "cutalign.trainer.config.MLEConfig", "cutalign.trainer.mle_trainer.ILFMLETrainer",
               "MLE on the refined response y_hat given x (see `cutalign refine`)."),
        Method("ilf_dpo", "cutalign.trainer.dpo.JudgmentDPOConfig", "cutalign.trainer.dpo.RefinementDPOTrainer",
               "DPO (TRL) with the refined response y_hat preferred over y."),
        Method("dpo", "cutalign.trainer.dpo.JudgmentDPOConfig", "cutalign.trainer.dpo.ScoreDPOTrainer",
               "DPO (TRL) on all pairs of completions to a prompt whose scores differ."),
        Method("unlikelihood", "cutalign.trainer.unlikelihood.UnlikelihoodConfig",
               "cutalign.trainer.unlikelihood.UnlikelihoodTrainer",
               "Unlikelihood on every response token of negatives plus MLE on positives."),
        Method("cut_plus", "cutalign.trainer.cut_plus.CUTPlusConfig", "cutalign.trainer.cut_plus.CUTPlusTrainer",
               "CUT without imitating the negatives' unflagged tokens (the lab's recipe; weights per term)."),
        Method("judge", "cutalign.trainer.config.MLEConfig", "cutalign.trainer.judge_trainer.JudgeTrainer",
               "An AI judge: judgment + Yes./No. given [x, y] (`cutalign train-judge` adds held-out agreement)."),
    )
}

__all__ = ["METHODS", "CUTConfig", "JudgmentTrainingConfig", "MLEConfig", "Method", "SFTConfig"]
