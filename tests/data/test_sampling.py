"""Align-P downsampling: exact counts, determinism, and the official code's selection."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset

from cutalign.data.sampling import downsample_positives


def polarity_dataset(flags: list[bool], column: str = "is_negative") -> Dataset:
    """Rows with ids ``r0, r1, ...``; ``flags`` are negative flags (or labels when column='label')."""
    return Dataset.from_dict({"id": [f"r{i}" for i in range(len(flags))], column: flags})


def test_keeps_int_ratio_of_negatives_and_reports_the_rest():
    negative = [i % 5 == 0 for i in range(100)]  # 20 negatives, 80 positives
    dataset, report = downsample_positives(polarity_dataset(negative), positive_ratio=0.25, seed=42)
    assert sum(dataset["is_negative"]) == 20
    assert len(dataset) - 20 == int(0.25 * 20) == 5
    assert report.as_dict() == {"positive_downsampled": 75}
    assert report.samples["positive_downsampled"][0].startswith("r")
    assert dataset["id"] == sorted(dataset["id"], key=lambda s: int(s[1:])), "original order kept"


def test_matches_the_official_selection():
    """Official code: random.seed(42); random.sample(pos_ids, int(n_neg * downsample))."""
    negative = [i % 3 == 0 for i in range(60)]
    dataset, _ = downsample_positives(polarity_dataset(negative), positive_ratio=0.5, seed=42)
    pos_ids = [i for i, n in enumerate(negative) if not n]
    random.seed(42)
    official = set(random.sample(pos_ids, int(sum(negative) * 0.5)))
    kept_positives = {int(i[1:]) for i, n in zip(dataset["id"], dataset["is_negative"], strict=True) if not n}
    assert kept_positives == official


def test_deterministic_for_the_same_order_and_seed():
    negative = [i % 4 == 0 for i in range(200)]
    first, _ = downsample_positives(polarity_dataset(negative), seed=7)
    again, _ = downsample_positives(polarity_dataset(negative), seed=7)
    other_seed, _ = downsample_positives(polarity_dataset(negative), seed=8)
    assert first["id"] == again["id"]
    assert first["id"] != other_seed["id"] and len(first) == len(other_seed) == 50 + 12


@pytest.mark.parametrize("ratio", [None, -1])
def test_none_or_negative_ratio_keeps_everything(ratio):
    dataset = polarity_dataset([False] * 10 + [True])
    kept, report = downsample_positives(dataset, positive_ratio=ratio)
    assert len(kept) == 11 and not report


def test_few_positives_are_all_kept_and_label_column_works():
    labels = [True, False, False, False, False]  # 1 positive, 4 negatives: int(0.25 * 4) = 1
    kept, report = downsample_positives(polarity_dataset(labels, column="label"))
    assert len(kept) == 5 and not report
    kept, report = downsample_positives(
        polarity_dataset([True, True, False, False, False, False], column="label")
    )
    assert kept["label"].count(True) == 1 and report.total == 1


def test_no_negatives_keeps_no_positives_like_the_official_code():
    kept, report = downsample_positives(polarity_dataset([False] * 4))
    assert len(kept) == 0 and report.as_dict() == {"positive_downsampled": 4}


def test_unknown_polarity_column():
    with pytest.raises(ValueError, match="no 'is_negative' or 'label' column"):
        downsample_positives(Dataset.from_dict({"x": [1]}))
