"""Tiny models and real judged data for trainer tests."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int, seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, **overrides,
    )
    return LlamaForCausalLM(config)


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
