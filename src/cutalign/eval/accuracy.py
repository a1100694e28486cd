"""Exact-match accuracy of programmatic tasks (the built-in world, the lab) via a python judge.

A python judge (``python:MODULE:FUNCTION``, or the lab's ``cutalign.lab.judge:judge_response``)
knows the right answer, so ``satisfactory`` *is* correctness. Rows the judge cannot score
(unparseable: not a task question) are counted apart, never as wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from cutalign.eval.outputs import OutputRow
from cutalign.judges.base import Judge

LAB_JUDGE = "python:cutalign.lab.judge:judge_response"


def accuracy(rows: Sequence[OutputRow], judge: Judge, *, batch_size: int = 64,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Correct / scored, with the unscored rows counted by reason and each row's verdict."""
    verdicts, reasons = [], Counter()
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        for row, judgment in zip(batch, judge.judge([r.prompt for r in batch], [r.output for r in batch]),
                                 strict=True):
            correct = judgment.satisfactory if judgment.ok else None
            if correct is None:
                reasons[judgment.error or "no_verdict"] += 1
            verdicts.append({"id": row.id, "instruction": row.instruction, "output": row.output, "correct": correct})
        if progress is not None:
            progress(len(batch))
    scored = [v for v in verdicts if v["correct"] is not None]
    right = sum(bool(v["correct"]) for v in scored)
    return {"eval": "accuracy", "judge": judge.name, "examples": len(rows), "scored": len(scored),
            "correct": right, "scores": {"accuracy": right / len(scored) if scored else None},
            "unscored": dict(reasons), "rows": verdicts}


def accuracy_summary(results: dict[str, Any], title: str) -> str:
    acc = results["scores"]["accuracy"]
    shown = "n/a (nothing scored)" if acc is None else f"{acc:.1%} ({results['correct']}/{results['scored']})"
    unscored = ", ".join(f"{k} {v}" for k, v in results["unscored"].items()) or "none"
    return (f"# Accuracy: {title}\n\n- judge: `{results['judge']}`\n- accuracy: **{shown}**\n"
            f"- rows: {results['examples']}; not scored: {unscored}")
