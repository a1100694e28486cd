"""ROUGE-1/2/L/Lsum against references with Google's ``rouge-score`` (the paper's summarisation metric).

F-measures are averaged over examples (precision and recall reported beside them). ROUGE-Lsum
treats newlines as sentence boundaries, as ``rouge-score`` does: summaries with one sentence per
line get the summary-level LCS, others score as ROUGE-L.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> dict[str, Any]:
    """Mean precision / recall / F-measure per ROUGE type, and the per-example F-measures."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    per_example = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    n = len(per_example)
    means = {kind: {part: sum(getattr(s[kind], part) for s in per_example) / n
                    for part in ("precision", "recall", "fmeasure")} for kind in ROUGE_TYPES}
    return {"eval": "rouge", "examples": n, "use_stemmer": use_stemmer,
            "scores": {kind: means[kind]["fmeasure"] for kind in ROUGE_TYPES}, "detail": means,
            "per_example": [{kind: s[kind].fmeasure for kind in ROUGE_TYPES} for s in per_example]}


def rouge_summary(results: dict[str, Any], title: str) -> str:
    from cutalign.eval.results import markdown_table

    rows = [[kind, f"{d['fmeasure'] * 100:.2f}", f"{d['precision'] * 100:.2f}", f"{d['recall'] * 100:.2f}"]
            for kind, d in results["detail"].items()]
    return (f"# ROUGE: {title}\n\n{results['examples']} examples, stemming {'on' if results['use_stemmer'] else 'off'}."
            f"\n\n" + markdown_table(["metric", "F1 (x100)", "precision", "recall"], rows))
