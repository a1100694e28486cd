"""Pairwise win rate of a model's outputs against reference outputs, position bias cancelled.

Method (documented so the figure can be reproduced):

- every (model, reference) pair is judged in both orders (:func:`~cutalign.judges.pairwise.judge_both_orders`);
  the two verdicts must agree for a win or a loss, a disagreement is a tie; a failure in either
  order is an error, counted and left out;
- win rate = (wins + ties / 2) / judged pairs;
- its 95% interval is the 2.5th-97.5th percentile of the win rate over ``n_bootstrap`` resamples
  of the pairs with replacement (numpy, seeded, so the interval is reproducible);
- length-controlled win rate (after AlpacaEval 2's idea, simplified to one covariate): a logistic
  regression of the preference (win 1, tie 0.5, loss 0) on ``x = tanh(d / sd(d))``, ``d`` = model
  length - reference length in characters, fitted by IRLS; the LC win rate is the fitted
  preference at zero length difference, ``sigmoid(intercept)``, with its own bootstrap interval.
  A judge that rewards length shows a positive slope and an LC win rate below the raw one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cutalign.eval.outputs import OutputRow
from cutalign.judges.base import Judge, Judgment, PairwiseJudge, Preference, Prompt
from cutalign.judges.pairwise import judge_both_orders

SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}  # the model's outputs are "a"


class PointwisePairwise:
    """A pairwise judge from a pointwise one (e.g. the lab's programmatic judge): the better verdict wins.

    "Better" is the higher ``score`` when both have one, else satisfactory over unsatisfactory;
    equal verdicts tie, and a failed verdict on either side is the pair's error. Symmetric by
    construction, so both orders agree (the position-bias cancellation still runs).
    """

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.name = f"pointwise({judge.name})"

    def judge_pairs(self, prompts: Sequence[Prompt], a: Sequence[str], b: Sequence[str]) -> list[Preference]:
        first = self.judge.judge(list(prompts), list(a))
        second = self.judge.judge(list(prompts), list(b))
        return [_better(x, y) for x, y in zip(first, second, strict=True)]


def _better(x: Judgment, y: Judgment) -> Preference:
    if not (x.ok and y.ok):
        return Preference(None, raw=f"{x.error or x.raw!r} / {y.error or y.raw!r}", error=x.error or y.error or "no_verdict")
    left, right = (x.score, y.score) if x.score is not None and y.score is not None else (
        float(x.satisfactory), float(y.satisfactory))
    return Preference("a" if left > right else "b" if right > left else "tie", raw=f"{left} vs {right}")


def judge_pairs_both_orders(pairs: Sequence[tuple[OutputRow, OutputRow]], judge: PairwiseJudge, *,
                            batch_size: int = 16, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One verdict row per pair (the model's output as "a"), judged in both orders, batch by batch."""
    rows = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        verdicts = judge_both_orders(judge, [m.prompt for m, _ in batch], [m.output for m, _ in batch],
                                     [r.output for _, r in batch])
        for (model, ref), verdict in zip(batch, verdicts, strict=True):
            rows.append({"id": model.id, "instruction": model.instruction, "output": model.output,
                         "reference": ref.output, "winner": verdict.winner, "error": verdict.error,
                         "model_length": len(model.output), "reference_length": len(ref.output)})
        if progress is not None:
            progress(len(batch))
    return rows


def winrate_from_verdicts(verdicts: Sequence[dict[str, Any]], *, n_bootstrap: int = 2000,
                          seed: int = 0) -> dict[str, Any]:
    """Wins, ties, losses, errors; the win rate and the length-controlled one, each with a 95% interval."""
    judged = [v for v in verdicts if v["error"] is None and v["winner"] in SCORE]
    counts = {"wins": sum(v["winner"] == "a" for v in judged), "ties": sum(v["winner"] == "tie" for v in judged),
              "losses": sum(v["winner"] == "b" for v in judged), "errors": len(verdicts) - len(judged)}
    out: dict[str, Any] = {"eval": "winrate", "pairs": len(verdicts), "judged": len(judged), **counts,
                           "n_bootstrap": n_bootstrap, "seed": seed}
    if not judged:
        return out | {"scores": {"win_rate": None, "lc_win_rate": None}, "win_rate_ci": None, "lc_win_rate_ci": None,
                      "length_slope": None}
    y = np.array([SCORE[v["winner"]] for v in judged])
    d = np.array([v["model_length"] - v["reference_length"] for v in judged], dtype=float)
    x = length_feature(d)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(n_bootstrap, len(y)))
    boot = y[draws].mean(axis=1)
    intercept, slope = fit_logistic(x, y)
    lc_boot = np.array([_sigmoid(fit_logistic(x[i], y[i])[0]) for i in draws[: min(n_bootstrap, 1000)]])
    return out | {
        "scores": {"win_rate": float(y.mean()), "lc_win_rate": _sigmoid(intercept)},
        "win_rate_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "lc_win_rate_ci": [float(np.percentile(lc_boot, 2.5)), float(np.percentile(lc_boot, 97.5))],
        "length_slope": slope, "mean_length_difference": float(d.mean()),
    }


def length_feature(d: np.ndarray) -> np.ndarray:
    """``tanh(d / sd(d))``: bounded, so one very long answer cannot dominate the fit (0 when all equal)."""
    sd = float(d.std())
    return np.tanh(d / sd) if sd > 0 else np.zeros_like(d)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-3, iterations: int = 50) -> tuple[float, float]:
    """Intercept and slope of ``y ~ sigmoid(b0 + b1 x)`` for fractional ``y`` in [0, 1] (IRLS, tiny ridge
    so perfectly separated or constant data still give finite, clipped coefficients)."""
    features = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(features @ beta)))
        w = np.clip(p * (1 - p), 1e-9, None)
        hessian = features.T @ (features * w[:, None]) + ridge * np.eye(2)
        step = np.linalg.solve(hessian, features.T @ (y - p) - ridge * beta)
        beta = np.clip(beta + step, -30, 30)
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def winrate_summary(results: dict[str, Any], title: str) -> str:
    from cutalign.eval.results import markdown_table

    scores = results["scores"]
    if scores["win_rate"] is None:
        return f"# Win rate: {title}\n\nNo pair was judged ({results['errors']} errors of {results['pairs']})."

    def cell(value: float, ci: list[float]) -> str:
        return f"{value:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"

    table = markdown_table(
        ["win rate (95% CI)", "LC win rate (95% CI)", "wins", "ties", "losses", "errors", "pairs"],
        [[cell(scores["win_rate"], results["win_rate_ci"]), cell(scores["lc_win_rate"], results["lc_win_rate_ci"]),
          results["wins"], results["ties"], results["losses"], results["errors"], results["pairs"]]])
    return (f"# Win rate: {title}\n\n{table}\n\nJudge: `{results.get('judge', '?')}`, both orders per pair "
            f"(disagreement = tie), ties count half; bootstrap {results['n_bootstrap']} resamples, seed "
            f"{results['seed']}. LC: logistic regression on tanh(length difference / sd), value at zero "
            f"difference (slope {results['length_slope']:+.2f}).")
