"""Offline stand-ins for a hub tokenizer and model: a small BPE tokenizer and tiny random causal LMs.

Nothing can be downloaded in the demo or in the tests, so both are built from scratch: the
tokenizer is trained in well under a second on the bundled fact-world sample and the CUT prompt
templates, and the models come from configs. :func:`tiny_causal_lm` is the project's one way to
get a small model of a given architecture (Llama, Qwen2, GPT-2) for tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from cutalign.data.templates import (
    ALPACA_JUDGED,
    ALPACA_PLAIN,
    CRITIQUE_REQUEST,
    DEFAULT_FAKE_POSITIVE,
    JUDGE_PROMPT,
    USER_JUDGMENT_FORMAT,
)
from cutalign.demo.world import load_sample

DEFAULT_VOCAB_SIZE = 1024
MODEL_MAX_LENGTH = 2048  # tokenizer limit and model positions (the official cutoff length)
SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}

# Llama-2 chat format (the paper's chat model). There is no separate generation prompt: the model
# answers right after "[/INST]". Roles other than system/user/assistant are an error.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system_message = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ bos_token }}[INST] {% if loop.first and system_message %}<<SYS>>\n{{ system_message }}\n<</SYS>>\n\n"
    "{% endif %}{{ message['content'] }} [/INST]"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{%- else -%}{{ raise_exception('unsupported chat role: ' + message['role']) }}{%- endif -%}"
    "{%- endfor -%}"
)

# Demo model size: chosen with tests/demo/test_assets.py::test_demo_model_learns_the_world (slow).
DEMO_ARCH = "llama"
DEMO_HIDDEN_SIZE = 64
DEMO_NUM_LAYERS = 2
DEMO_NUM_HEADS = 4


def default_tokenizer_texts() -> list[str]:
    """The bundled sample rendered in every CUT context, plus the fixed strings of the templates."""
    texts = [DEFAULT_FAKE_POSITIVE, "Perfect!", CRITIQUE_REQUEST]
    for example in load_sample():
        prompt, completion, judgment = example["prompt"], example["completion"], example["judgment"]
        texts.append(ALPACA_PLAIN.format(instruction=prompt) + completion)
        texts.append(
            ALPACA_JUDGED.format(instruction=prompt, judgment=judgment or DEFAULT_FAKE_POSITIVE) + completion
        )
        texts.append(
            f"[INST] <<SYS>>\n{judgment or DEFAULT_FAKE_POSITIVE}\n<</SYS>>\n\n{prompt} [/INST] {completion}"
        )
        if judgment is not None:
            texts.append(JUDGE_PROMPT.format(instruction=prompt, response=completion) + f"{judgment} No.")
            texts.append(USER_JUDGMENT_FORMAT.format(content=prompt, judgment=judgment))
            texts.append(example["refinement"])
    return texts


def build_demo_tokenizer(
    texts: Iterable[str] | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (never produces <unk>) with a Llama-2 style chat template.

    Like Llama-2 it prepends <s> when encoding with special tokens, and ends nothing with </s>.
    Deterministic for the same texts and vocab size. Default texts: :func:`default_tokenizer_texts`.
    """
    backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(default_tokenizer_texts() if texts is None else texts, trainer=trainer)
    # Set on the backend (not via add_bos_token, which transformers does not save) so it survives a reload.
    bos = SPECIAL_TOKENS["bos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, backend.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        **SPECIAL_TOKENS,
    )


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
