"""Epoch-level throughput: a real ``cutalign.api.train`` CUT epoch vs the official code's layout.

Both train the same tiny random Llama (same seed, so the same start) on the same examples for one
epoch with AdamW at the same learning rate and batch size. cutalign runs its own dataloader
(length-grouped, packed, chunked log-probs); the reimplementation of the official code runs every
example's two halves in random order, padded to the batch's longest half, with full ``[rows, L, V]``
logits and the official reduction (``_measure.naive_official_step``). Throughput is counted in
``y|x`` tokens (prompt + response of each example) per second of training, the same numerator for
both, so the ratio is the inverse ratio of the epoch times.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import _measure as m
import torch

from cutalign.api import train


def plain_tokens(features: Sequence[m.Features]) -> int:
    """The ``y|x`` tokens of the examples: what one epoch covers, whatever the layout."""
    return sum(len(f["plain_prompt_ids"]) + len(f["completion_ids"]) for f in features)


def cutalign_epoch(spec: Mapping[str, Any], examples: Sequence[m.Features], mode: str) -> dict[str, Any]:
    """One epoch of ``cutalign.api.train("cut", ...)``: its ``train_runtime`` (the ``Trainer.train`` call)."""
    model = m.build_model(spec, spec["vocab_size"])
    tokenizer = m.load_tokenizer(spec["tokenizer"])
    with tempfile.TemporaryDirectory() as output_dir:
        config = m.cut_config(spec, output_dir, misalign_mode=mode, positive_ratio=None, num_train_epochs=1)
        result = train("cut", list(examples), model=model, config=config, tokenizer=tokenizer)
    trained = result.metrics["train_examples"]
    if trained != len(examples):
        raise RuntimeError(f"cutalign trained {trained} of the {len(examples)} examples")
    return {"seconds": float(result.metrics["train_runtime"]), "steps": int(result.trainer.state.global_step),
            "loss": float(result.metrics["train_loss"])}


def official_epoch(spec: Mapping[str, Any], features: Sequence[m.Features], learning_rate: float) -> dict[str, Any]:
    """One epoch of the official layout: random order, both halves, padded batches, full logits, AdamW."""
    model = m.build_model(spec, spec["vocab_size"])
    model.train()
    tokenizer = m.load_tokenizer(spec["tokenizer"])
    device = torch.device(spec["device"])
    order = list(range(len(features)))
    random.Random(spec["seed"]).shuffle(order)
    batches = [[features[i] for i in order[start : start + spec["batch_size"]]]
               for start in range(0, len(order), spec["batch_size"])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    losses, positions = [], 0
    start = time.perf_counter()
    for batch in batches:
        step = m.naive_official_step(model, batch, tokenizer.pad_token_id, device)
        optimizer.zero_grad(set_to_none=True)
        losses.append(step())
        optimizer.step()
        rows, length = m.official_shape(batch)
        positions += rows * length
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": len(batches), "loss": sum(losses) / len(losses), "positions": positions}


def epoch_figures(spec: Mapping[str, Any], examples: Sequence[m.Features],
                  features: Sequence[m.Features]) -> dict[str, Any]:
    """Both cutalign modes and the official layout over ``examples`` (their views: ``features``)."""
    with tempfile.TemporaryDirectory() as output_dir:
        learning_rate = m.cut_config(spec, output_dir).learning_rate
    tokens = plain_tokens(features)
    rows = [{"run": f"cutalign train cut, {mode}", **cutalign_epoch(spec, examples, mode)}
            for mode in ("fake_positive", "instruction_only")]
    rows.append({"run": "official layout (both halves, padded, full logits)",
                 **official_epoch(spec, features, learning_rate)})
    official = rows[-1]["seconds"]
    for row in rows:
        row["tokens_per_s"] = tokens / row["seconds"]
        row["speedup"] = official / row["seconds"]
    return {"examples": len(examples), "negatives": sum(bool(f["is_negative"]) for f in features),
            "plain_tokens": tokens, "learning_rate": learning_rate, "rows": rows}
