"""Tiny causal LMs built from configs: the lab's base architecture and the project's test models.

:func:`tiny_causal_lm` is the project's one way to get a small randomly initialised model of a
given architecture (Llama, Qwen2, GPT-2); nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from cutalign.lab.tokenizer import MODEL_MAX_LENGTH, build_demo_tokenizer

# Demo model size: chosen with tests/demo/test_assets.py::test_demo_model_learns_the_world (slow).
DEMO_ARCH = "llama"
DEMO_HIDDEN_SIZE = 64
DEMO_NUM_LAYERS = 2
DEMO_NUM_HEADS = 4


def tiny_causal_lm(
    tokenizer_or_vocab_size: PreTrainedTokenizerBase | int,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    **overrides: Any,
) -> PreTrainedModel:
    """A randomly initialised causal LM built from a config (no hub), float32, dropout off.

    ``arch``: "llama" (untied embeddings, like Llama-2), "qwen2" (tied, like small Qwen2) or
    "gpt2" (tied). With a tokenizer, the vocabulary covers ``len(tokenizer)`` and the config's
    bos/eos/pad ids are the tokenizer's (pad falls back to eos); with an int they are None.
    The MLP is 4 x hidden wide. ``overrides`` are set on the config in the architecture's own
    names (e.g. ``num_key_value_heads=2``, ``n_positions=256``). The global torch RNG is untouched.
    """
    if isinstance(tokenizer_or_vocab_size, int):
        vocab_size, ids = (
            tokenizer_or_vocab_size,
            dict.fromkeys(("bos_token_id", "eos_token_id", "pad_token_id")),
        )
    else:
        tok = tokenizer_or_vocab_size
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        vocab_size = len(tok)
        ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": pad}
    config = _config(arch, vocab_size, hidden_size, num_layers, num_heads) | ids | overrides
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gpt2": GPT2Config}[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config_class(**config), dtype=torch.float32)
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    return model


def _config(arch: str, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int) -> dict[str, Any]:
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
    if arch == "gpt2":
        return {
            "vocab_size": vocab_size,
            "n_embd": hidden_size,
            "n_layer": num_layers,
            "n_head": num_heads,
            "n_positions": MODEL_MAX_LENGTH,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": True,
        }
    if arch in ("llama", "qwen2"):
        return {
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": 4 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_heads,
            "max_position_embeddings": MODEL_MAX_LENGTH,
            "tie_word_embeddings": arch == "qwen2",
        }
    raise ValueError(f"unknown arch {arch!r}; choose 'llama', 'qwen2' or 'gpt2'")


def demo_model_and_tokenizer(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The tiny model and tokenizer ``cutalign demo`` trains: sized to learn the sample in about a minute."""
    tokenizer = build_demo_tokenizer()
    model = tiny_causal_lm(
        tokenizer,
        DEMO_ARCH,
        hidden_size=DEMO_HIDDEN_SIZE,
        num_layers=DEMO_NUM_LAYERS,
        num_heads=DEMO_NUM_HEADS,
        seed=seed,
    )
    return model, tokenizer
