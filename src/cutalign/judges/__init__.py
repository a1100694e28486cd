"""Judges: who writes the judgments CUT learns from (API models, local models, programs).

Imports are lazy so that `from cutalign.judges import Judgment` does not load `openai` or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from cutalign.judges.base import Judge, Judgment, PairwiseJudge, Preference

_LAZY = {
    "OpenAIJudge": "cutalign.judges.openai_judge",
    "HFJudge": "cutalign.judges.hf_judge",
    "PythonJudge": "cutalign.judges.python_judge",
    "FailureGuard": "cutalign.judges.guard",
    "JudgeFailureError": "cutalign.judges.guard",
    "judge_both_orders": "cutalign.judges.pairwise",
    "judge_pair": "cutalign.judges.pairwise",
    "judge_file": "cutalign.judges.annotate",
    "JudgeSummary": "cutalign.judges.annotate",
    "make_judge": "cutalign.judges.factory",
    "parse_annotation": "cutalign.judges.prompts",
    "parse_ai_judgment": "cutalign.judges.prompts",
    "parse_preference": "cutalign.judges.prompts",
    "train_judge": "cutalign.judges.training",
}

__all__ = ["Judge", "Judgment", "PairwiseJudge", "Preference", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cutalign.judges' has no attribute {name!r}")
