"""How the detection threshold lambda changes U, and how well U finds the known wrong tokens.

The log-probs do not depend on lambda, so one inspection pass serves every threshold: U is
recomputed per threshold with the loss's own :func:`~cutalign.losses.cut_detection`.

With gold error spans (character spans of the completion, e.g. from the lab's programmatic judge),
a token is *gold-wrong* when its character span overlaps a gold span; precision, recall and F1 of
U are token-level over the negatives that carry gold spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from cutalign.inspection.core import InspectConfig, TokenReport
from cutalign.losses import cut_detection


@dataclass
class SweepRow:
    """U at one threshold; the gold columns are None when no inspected negative has gold spans."""

    threshold: float
    negatives: int
    negative_tokens: int
    unlikely_tokens: int
    unlikely_fraction: float
    gold_examples: int = 0
    gold_tokens: int | None = None
    true_positives: int | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def gold_token_mask(report: TokenReport) -> list[bool] | None:
    """Per token: does its character span overlap a gold error span (None without gold spans)."""
    if report.gold_spans is None:
        return None
    return [t.end > t.start and any(t.start < b and a < t.end for a, b in report.gold_spans) for t in report.tokens]


def unlikely_at(report: TokenReport, threshold: float, config: InspectConfig) -> list[bool]:
    """U of one inspected negative at ``threshold`` (all False for a positive)."""
    if not report.is_negative:
        return [False] * len(report.tokens)
    judged = torch.tensor([[t.logp_judged for t in report.tokens]], dtype=torch.float64)
    misaligned = torch.tensor([[t.logp_misaligned for t in report.tokens]], dtype=torch.float64)
    candidates = torch.ones_like(judged, dtype=torch.bool)
    unlikely, _ = cut_detection(judged, misaligned, candidates, threshold=threshold, alpha=config.alpha,
                                gamma=config.gamma, mode=config.mode, ablations=config.ablations)
    return unlikely[0].tolist()


def sweep_thresholds(reports: Sequence[TokenReport], thresholds: Sequence[float],
                     config: InspectConfig | None = None) -> list[SweepRow]:
    """One :class:`SweepRow` per threshold over the negatives of ``reports``."""
    config = config or InspectConfig()
    negatives = [r for r in reports if r.is_negative]
    golds = [gold_token_mask(r) for r in negatives]
    rows = []
    for threshold in thresholds:
        if not threshold > 0:
            raise ValueError(f"thresholds must be > 0, got {threshold}")
        flags = [unlikely_at(r, threshold, config) for r in negatives]
        tokens = sum(len(f) for f in flags)
        unlikely = sum(sum(f) for f in flags)
        row = SweepRow(threshold=float(threshold), negatives=len(negatives), negative_tokens=tokens,
                       unlikely_tokens=unlikely, unlikely_fraction=unlikely / tokens if tokens else 0.0)
        with_gold = [(f, g) for f, g in zip(flags, golds, strict=True) if g is not None]
        if with_gold:
            tp = sum(a and b for f, g in with_gold for a, b in zip(f, g, strict=True))
            predicted = sum(sum(f) for f, _ in with_gold)
            actual = sum(sum(g) for _, g in with_gold)
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            row.gold_examples, row.gold_tokens, row.true_positives = len(with_gold), actual, tp
            row.precision, row.recall = precision, recall
            row.f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(row)
    return rows


def parse_thresholds(text: str) -> list[float]:
    """``"1.0,1.1,1.2"`` -> ``[1.0, 1.1, 1.2]``, with a clear error for a bad entry."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--sweep: {part.strip()!r} is not a number (expected e.g. 1.0,1.1,1.2)") from None
        if not value > 0:
            raise ValueError(f"--sweep: thresholds must be > 0, got {value}")
        values.append(value)
    return values
