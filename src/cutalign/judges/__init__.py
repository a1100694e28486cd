"""Judges: who writes the judgments CUT learns from (API models, local models, programs)."""

from cutalign.judges.base import Judge, Judgment, PairwiseJudge, Preference

__all__ = ["Judge", "Judgment", "PairwiseJudge", "Preference"]
