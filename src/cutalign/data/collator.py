"""Batching the contexts of a micro-batch into one forward pass per gradient mode.

CUT needs the same response scored under several contexts. Rather than one forward pass per
context, every ``(example, context)`` row of the contexts that carry a gradient goes into one
"grad" block and the no-gradient contexts (the fake-positive pass) into a "nograd" block. Each
block says, for every target token, which flattened logit predicts it and which example, context
and target position it belongs to; :func:`block_to_matrices` scatters per-token values back into
per-context ``[B, T]`` matrices for the losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cutalign.data.packing import RowLength, pack

Features = Mapping[str, Any]


@dataclass
class ContextCollator:
    """Collate feature dicts from :mod:`cutalign.data.views` into grad / nograd blocks.

    Rows are ordered context by context, then example by example. In a block, target token ``k``
    of a row with prompt length ``P`` is predicted by the logits at position ``P - 1 + k``;
    ``logit_index`` holds that position flattened over the block's ``[R, L]`` (or packed
    ``[1, sum L]``) input.

    ``padding_free=True`` packs a block into rows whose ``position_ids`` restart at 0 per
    sequence, with no ``attention_mask``; transformers (5.24) then builds a block-diagonal mask for
    sdpa and eager attention (flash attention reads the same position_ids) -- but only when no KV
    cache is in play, so call the model with ``use_cache=False``: with the default cache the packed
    sequences silently attend to each other.

    ``packed_row_length`` says which sequences share a row (:func:`cutalign.data.packing.pack`):
    ``None`` one row (what flash attention needs), ``"auto"`` the layout cheapest for mask-based
    attention given ``attention_pair_cost``, an int rows of at most ``max(int, longest)`` tokens.

    >>> features = [
    ...     {"completion_ids": [7, 2], "plain_prompt_ids": [1, 5], "judged_prompt_ids": [1, 5, 6],
    ...      "is_negative": True},
    ...     {"completion_ids": [8, 9, 2], "plain_prompt_ids": [1, 4], "judged_prompt_ids": [],
    ...      "is_negative": False},
    ... ]
    >>> batch = ContextCollator(pad_token_id=0, nograd_contexts=())(features)
    >>> sorted(batch)
    ['grad', 'is_negative']
    >>> grad = batch["grad"]
    >>> grad["input_ids"]
    tensor([[1, 5, 7, 2, 0],
            [1, 4, 8, 9, 2],
            [1, 5, 6, 7, 2]])
    >>> grad["attention_mask"]
    tensor([[1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1]])
    >>> int(grad["real_tokens"]), grad["input_ids"].numel()
    (14, 15)
    >>> grad["logit_index"], grad["target_ids"]
    (tensor([ 1,  2,  6,  7,  8, 12, 13]), tensor([7, 2, 8, 9, 2, 7, 2]))
    >>> grad["example_index"], grad["token_index"], grad["context_index"]
    (tensor([0, 0, 1, 1, 1, 0, 0]), tensor([0, 1, 0, 1, 2, 0, 1]), tensor([0, 0, 0, 0, 0, 1, 1]))
    >>> packed = ContextCollator(pad_token_id=0, nograd_contexts=(), padding_free=True)(features)["grad"]
    >>> packed["input_ids"], packed["position_ids"]
    (tensor([[1, 5, 7, 2, 1, 4, 8, 9, 2, 1, 5, 6, 7, 2]]), tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]))
    >>> packed["logit_index"]
    tensor([ 1,  2,  5,  6,  7, 11, 12])
    >>> bounded = ContextCollator(pad_token_id=0, nograd_contexts=(), padding_free=True, packed_row_length=9)
    >>> bounded = bounded(features)["grad"]
    >>> bounded["input_ids"], bounded["position_ids"]
    (tensor([[1, 5, 7, 2, 1, 4, 8, 9, 2],
            [1, 5, 6, 7, 2, 0, 0, 0, 0]]), tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4],
            [0, 1, 2, 3, 4, 0, 1, 2, 3]]))
    >>> bounded["logit_index"]
    tensor([ 1,  2,  5,  6,  7, 11, 12])
    """

    pad_token_id: int
    grad_contexts: Sequence[str] = ("plain", "judged")
    nograd_contexts: Sequence[str] = ("misaligned",)
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    packed_row_length: RowLength = None
    attention_pair_cost: float = 0.0

    def __call__(self, features: Sequence[Features]) -> dict[str, Any]:
        grad_rows = _rows(features, self.grad_contexts)
        if not grad_rows:
            raise ValueError(
                f"no example of this batch has a prompt in any of the grad contexts {list(self.grad_contexts)}"
            )
        batch: dict[str, Any] = {
            "grad": self._block(grad_rows),
            "is_negative": torch.tensor([bool(f["is_negative"]) for f in features], dtype=torch.bool),
        }
        nograd_rows = _rows(features, self.nograd_contexts)
        if nograd_rows:
            batch["nograd"] = self._block(nograd_rows)
        return batch

    def _padded_length(self, length: int) -> int:
        multiple = self.pad_to_multiple_of
        return -(-length // multiple) * multiple if multiple else length

    def _block(self, rows: list[tuple[int, int, list[int], list[int]]]) -> dict[str, torch.Tensor]:
        lengths = [len(prompt) + len(target) for _, _, prompt, target in rows]
        if self.padding_free:
            bins = pack(lengths, self.packed_row_length, self.attention_pair_cost)
            width = self._padded_length(max(sum(lengths[r] for r in members) for members in bins))
            starts = [0] * len(rows)
            input_ids, positions = [], []
            for index, members in enumerate(bins):
                offset = index * width
                row_ids = []
                for r in members:
                    starts[r] = offset + len(row_ids)
                    _, _, prompt, target = rows[r]
                    row_ids += [*prompt, *target]
                tail = width - len(row_ids)
                input_ids.append(row_ids + [self.pad_token_id] * tail)
                # The padding tail restarts at 0 so it is a sequence of its own, never attended to by others.
                positions.append([p for r in [*members, None] for p in range(lengths[r] if r is not None else tail)])
            block = {"input_ids": torch.tensor(input_ids), "position_ids": torch.tensor(positions)}
        else:
            width = self._padded_length(max(lengths))
            starts = [r * width for r in range(len(rows))]
            input_ids = [
                [*prompt, *target] + [self.pad_token_id] * (width - n)
                for (_, _, prompt, target), n in zip(rows, lengths, strict=True)
            ]
            block = {
                "input_ids": torch.tensor(input_ids),
                "attention_mask": torch.tensor([[1] * n + [0] * (width - n) for n in lengths]),
                "position_ids": torch.arange(width).expand(len(rows), width).clone(),
            }
        logit_index, target_ids, example_index, token_index, context_index = [], [], [], [], []
        for (example, context, prompt, target), start in zip(rows, starts, strict=True):
            first = start + len(prompt) - 1
            logit_index.extend(range(first, first + len(target)))
            target_ids.extend(target)
            example_index.extend([example] * len(target))
            token_index.extend(range(len(target)))
            context_index.extend([context] * len(target))
        block.update(
            real_tokens=torch.tensor(sum(lengths)),  # what the forward pass must compute; the rest is padding
            logit_index=torch.tensor(logit_index),
            target_ids=torch.tensor(target_ids),
            example_index=torch.tensor(example_index),
            token_index=torch.tensor(token_index),
            context_index=torch.tensor(context_index),
        )
        return block


def _rows(
    features: Sequence[Features], contexts: Sequence[str]
) -> list[tuple[int, int, list[int], list[int]]]:
    """``(example, context, prompt_ids, target_ids)`` for every context that applies to an example."""
    rows = []
    for context_index, context in enumerate(contexts):
        key = f"{context}_prompt_ids"
        for example_index, feature in enumerate(features):
            if key not in feature:
                raise KeyError(f"feature dict has no {key!r}: build the views with the {context!r} context")
            prompt = list(feature[key])
            if prompt:
                target = feature.get(f"{context}_target_ids", feature["completion_ids"])
                rows.append((example_index, context_index, prompt, list(target)))
    return rows


def block_to_matrices(
    values: torch.Tensor, block: Mapping[str, torch.Tensor], contexts: Sequence[str], batch_size: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Scatter per-target-token ``values`` [N] into ``{context: (matrix [B, T_c], mask [B, T_c])}``.

    ``T_c`` is the longest target of that context in the batch (0 when it has no row); positions
    without a token hold 0 and are False in the mask. Built with out-of-place ``index_put`` so
    gradients flow back to ``values``.
    """
    out = {}
    for index, context in enumerate(contexts):
        selected = block["context_index"] == index
        examples = block["example_index"][selected]
        tokens = block["token_index"][selected]
        width = int(tokens.max()) + 1 if tokens.numel() else 0
        zeros = values.new_zeros((batch_size, width))
        matrix = zeros.index_put((examples, tokens), values[selected])
        mask = torch.zeros((batch_size, width), dtype=torch.bool, device=values.device)
        mask = mask.index_put((examples, tokens), torch.ones_like(tokens, dtype=torch.bool))
        out[context] = (matrix, mask)
    return out
