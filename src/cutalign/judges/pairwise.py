"""Pairwise verdicts with position bias cancelled: ask (a, b) and (b, a), keep only what both agree on.

Judges prefer the first (or second) position; asking both orders and calling a disagreement a tie
makes a win rate measure the responses, not the order. A failure in either order is a failure of
the pair (`error` set, `winner` None), so callers count it rather than scoring it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cutalign.judges.base import PairwiseJudge, Preference, Prompt

_SWAP = {"a": "b", "b": "a", "tie": "tie"}


def combine_orders(first: Preference, swapped: Preference) -> Preference:
    """One verdict, in the caller's (a, b) order, from the (a, b) and (b, a) verdicts."""
    raw = f"(a, b): {first.raw!r}; (b, a): {swapped.raw!r}"
    if first.error or swapped.error:
        return Preference(None, raw=raw, error=first.error or swapped.error)
    back = _SWAP[swapped.winner] if swapped.winner is not None else None
    return Preference(first.winner if first.winner == back else "tie", raw=raw)


def judge_both_orders(judge: PairwiseJudge, prompts: Sequence[Prompt], a: Sequence[str],
                      b: Sequence[str]) -> list[Preference]:
    """`judge.judge_pairs` in both orders (one call each, so batching backends stay batched), combined."""
    if not len(prompts) == len(a) == len(b):
        raise ValueError(f"pairwise inputs differ in length: {len(prompts)}, {len(a)}, {len(b)}")
    first = judge.judge_pairs(prompts, a, b)
    swapped = judge.judge_pairs(prompts, b, a)
    return [combine_orders(x, y) for x, y in zip(first, swapped, strict=True)]


def judge_pair(judge: PairwiseJudge, prompt: Prompt, a: str, b: str) -> Preference:
    """One prompt's verdict, both orders asked (see `judge_both_orders`)."""
    return judge_both_orders(judge, [prompt], [a], [b])[0]
