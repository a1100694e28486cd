"""cutalign: align language models with natural-language judgments.

Contrastive Unlikelihood Training (CUT, arXiv 2312.14591) as a Hugging Face trainer,
with the baselines, data converters and tools around it. The public API is importable from the
package root and loaded on first use, so ``import cutalign`` (and ``cutalign --help``) stays fast::

    from cutalign import CUTConfig, load_judged, train

    data = load_judged("judged.jsonl")
    result = train("cut", data, model="path/to/model", config=CUTConfig(output_dir="out"))
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # training
    "train": "cutalign.api",
    "TrainResult": "cutalign.api",
    "NoUsableExamplesError": "cutalign.api",
    "METHODS": "cutalign.trainer",
    "CUTConfig": "cutalign.trainer.config",
    "MLEConfig": "cutalign.trainer.config",
    "SFTConfig": "cutalign.trainer.config",
    "JudgmentTrainingConfig": "cutalign.trainer.config",
    "CUTTrainer": "cutalign.trainer.cut_trainer",
    "JudgmentTrainer": "cutalign.trainer.base",
    "SFTTrainer": "cutalign.trainer.mle_trainer",
    "HindsightTrainer": "cutalign.trainer.mle_trainer",
    "ForwardPredictionTrainer": "cutalign.trainer.mle_trainer",
    "ILFMLETrainer": "cutalign.trainer.mle_trainer",
    "JudgmentDPOConfig": "cutalign.trainer.dpo",
    "ScoreDPOTrainer": "cutalign.trainer.dpo",
    "RefinementDPOTrainer": "cutalign.trainer.dpo",
    "cut_loss": "cutalign.losses",
    "CUTAblations": "cutalign.losses",
    "token_logprobs": "cutalign.logprobs",
    # models
    "load_model": "cutalign.models",
    "merge_adapter": "cutalign.models",
    "ModelNotFoundError": "cutalign.models",
    # data
    "load_judged": "cutalign.data.converters",
    "convert": "cutalign.data.converters",
    "JudgedData": "cutalign.data.io",
    "DataError": "cutalign.data.schema",
    "PolarityRule": "cutalign.data.schema",
    "DropReport": "cutalign.data.report",
    # generation and judges
    "Generator": "cutalign.generation.base",
    "SamplingParams": "cutalign.generation.base",
    "GenerationResult": "cutalign.generation.base",
    "make_generator": "cutalign.generation.factory",
    "Judge": "cutalign.judges.base",
    "Judgment": "cutalign.judges.base",
    "make_judge": "cutalign.judges.factory",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cutalign' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # cached: the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
