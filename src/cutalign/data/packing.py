"""Which sequences of a forward pass share a packed row.

A packed row holds whole sequences whose ``position_ids`` restart at 0; rows are padded to the
widest. Two costs pull apart. Mask-based attention (sdpa, eager) computes every query-key pair of
a row, so one row of ``W`` tokens costs ``W^2`` pairs where its sequences alone need the sum of
their squares; more, shorter rows waste positions on their padding tails instead. The layout is
chosen per pass to minimise ``rows * W * (1 + pair_cost * W)``: ``pair_cost`` is one attended pair's
cost relative to one position's through the decoder (:func:`attention_pair_cost`, from the model's
shapes). A small model spends much of a step on attention and gets several rows; a 7B model, whose
pairs are ~25,000x cheaper than its positions, gets one row. FlashAttention's varlen kernel costs
each sequence alone and reads packed position_ids only at batch size 1, so it always gets one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

# The auto layout's longest row (unless a sequence is longer): its [W, W] attention mask stays <= 256 MiB.
AUTO_ROW_CAP = 8192

RowLength = int | Literal["auto"] | None


def packed_row_length(model: Any, setting: int | None = None) -> RowLength:
    """The collator's ``packed_row_length`` for ``model`` from the config's (unset, 0 or N)."""
    if setting == 0:
        return None
    if setting is not None:
        return setting
    implementation = str(getattr(getattr(model, "config", None), "_attn_implementation", None) or "")
    return None if "flash" in implementation else "auto"


def attention_pair_cost(config: Any) -> float:
    """FLOPs of one attended query-key pair over those of one position through a decoder layer.

    A pair costs ``4 * heads * head_dim`` (``q.k`` and the weighted ``v``); a position costs twice
    the layer's weights (attention projections plus a gated MLP). 1/1024 for the benchmark's tiny
    Llama (hidden 128, MLP 512); 1/24,704 for Llama-2-7B. 0 when the config lacks the shapes.
    """
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    if not hidden or not heads:
        return 0.0
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    mlp = getattr(config, "intermediate_size", None) or 4 * hidden
    weights = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * mlp
    return 4 * heads * head_dim / (2 * weights)


def pack(lengths: Sequence[int], row_length: RowLength, pair_cost: float = 0.0) -> list[list[int]]:
    """Sequence indices grouped into packed rows (see the module docstring), each row in index order.

    >>> pack([4, 5, 5], None)
    [[0, 1, 2]]
    >>> pack([4, 5, 5], 9)
    [[0, 1], [2]]
    >>> pack([300, 250, 200, 100], "auto", pair_cost=1 / 1024)  # attention dear: rows of <= 300
    [[0], [1], [2, 3]]
    >>> pack([300, 250, 200, 100], "auto", pair_cost=1 / 25_000)  # padding dearer: one row
    [[0, 1, 2, 3]]
    """
    if row_length is None:
        return [list(range(len(lengths)))]
    if row_length == "auto":
        return _cheapest(lengths, pair_cost)
    if isinstance(row_length, bool) or not isinstance(row_length, int) or row_length < 1:
        raise ValueError(f"packed_row_length must be None, 'auto' or a positive int; got {row_length!r}")
    return first_fit_decreasing(lengths, max(row_length, max(lengths)))


def _cheapest(lengths: Sequence[int], pair_cost: float, counts: int = 32, grid: int = 64) -> list[list[int]]:
    """The first-fit-decreasing layout that costs least over candidate row capacities (ties: the smaller).

    Candidates: the capacities that would exactly fit up to ``counts`` row counts (all of them for a pass
    of at most ``counts`` sequences), and ``grid`` even steps from the longest sequence to the cap: a
    capacity between two row counts can fill the rows better than either. About 2 ms for a pass of
    16 sequences, 40 ms for 192.
    """
    total, longest, count = sum(lengths), max(lengths), len(lengths)
    top = min(total, max(AUTO_ROW_CAP, longest))
    row_counts = {1 + (count - 1) * step // counts for step in range(counts + 1)}
    capacities = {max(longest, -(-total // rows)) for rows in row_counts}
    capacities |= {longest + (top - longest) * step // grid for step in range(grid + 1)}
    best: tuple[float, list[list[int]]] | None = None
    for capacity in sorted(c for c in capacities if c <= top):
        bins = first_fit_decreasing(lengths, capacity)
        width = max(sum(lengths[i] for i in members) for members in bins)
        cost = len(bins) * width * (1 + pair_cost * width)
        if best is None or cost < best[0]:
            best = (cost, bins)
    assert best is not None  # the longest sequence's own length is always a candidate
    return best[1]


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of at most ``capacity`` tokens, longest first; bins in index order."""
    bins: list[list[int]] = []
    loads: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        target = next((b for b, load in enumerate(loads) if load + lengths[index] <= capacity), None)
        if target is None:
            bins.append([index])
            loads.append(lengths[index])
        else:
            bins[target].append(index)
            loads[target] += lengths[index]
    return sorted(sorted(members) for members in bins)
