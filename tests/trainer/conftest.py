"""Tiny models and real judged data for trainer tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def online_examples(cut_online_dir):
    """The first 48 canonical examples of the paper's online iteration 1 (judge errors dropped)."""
    from cutalign.data.converters import convert
    from cutalign.data.schema import PolarityRule

    examples, _ = convert("cut-alpaca", [cut_online_dir / "train-alpaca-sample-iter1.json"], PolarityRule())
    return examples[:48]


@pytest.fixture()
def tokenizer(llama2_tokenizer):
    import copy

    tok = copy.deepcopy(llama2_tokenizer)
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token
    return tok
