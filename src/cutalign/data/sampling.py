"""Align-P downsampling: keep positives in proportion to negatives, as the official CUT code does.

Online judged data is mostly positive (713 of 1000 in iteration 1); without downsampling the
likelihood on positives swamps the contrastive signal of the negatives.
"""

from __future__ import annotations

import random

from datasets import Dataset

from cutalign.data.report import DropReport

DOWNSAMPLE_REASON = "positive_downsampled"


def _negative_flags(dataset: Dataset) -> list[bool]:
    """Polarity per row, from a view dataset (``is_negative``) or canonical examples (``label``)."""
    if "is_negative" in dataset.column_names:
        return [bool(flag) for flag in dataset["is_negative"]]
    if "label" in dataset.column_names:
        return [not label for label in dataset["label"]]
    raise ValueError(
        f"cannot tell positives from negatives: no 'is_negative' or 'label' column in {dataset.column_names}"
    )


def downsample_positives(
    dataset: Dataset, positive_ratio: float | None = 0.25, seed: int = 42
) -> tuple[Dataset, DropReport]:
    """Keep at most ``int(positive_ratio * n_negative)`` positives, chosen at random with ``seed``.

    Mirrors the official code: ``random.sample(positive_indices, n_keep)`` from a generator seeded
    with ``seed`` (the official script seeds the global generator with 42 just before). The subset
    depends on the row order: the same rows in the same order with the same seed give the same
    subset. Kept rows stay in their original order. ``None`` or a negative ratio keeps everything;
    with no negatives, a non-negative ratio keeps no positives (as in the official code).
    """
    report = DropReport()
    if positive_ratio is None or positive_ratio < 0:
        return dataset, report
    negative = _negative_flags(dataset)
    positive_indices = [i for i, is_negative in enumerate(negative) if not is_negative]
    n_keep = int(positive_ratio * (len(negative) - len(positive_indices)))
    if len(positive_indices) <= n_keep:
        return dataset, report
    report.selection_notes[DOWNSAMPLE_REASON] = f"to {positive_ratio:g} × negatives"
    keep_positive = set(random.Random(seed).sample(positive_indices, n_keep))
    ids = dataset["id"] if "id" in dataset.column_names else None
    kept = []
    for index, is_negative in enumerate(negative):
        if is_negative or index in keep_positive:
            kept.append(index)
        else:
            example_id = ids[index] if ids is not None else None
            report.drop(DOWNSAMPLE_REASON, str(example_id) if example_id is not None else f"#{index}")
    return dataset.select(kept), report
