"""The lab's offline tokenizer: a small byte-level BPE trained in well under a second.

Nothing can be downloaded in the lab, the demo or the tests, so the tokenizer is trained on the
world's texts rendered in every CUT context (and the templates' fixed strings). It behaves like
Llama-2's: <s> prepended, a Llama-2 chat template, never <unk>.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from cutalign.data.templates import (
    ALPACA_JUDGED,
    ALPACA_PLAIN,
    CRITIQUE_REQUEST,
    DEFAULT_FAKE_POSITIVE,
    JUDGE_PROMPT,
    USER_JUDGMENT_FORMAT,
)
from cutalign.lab.world import judged_examples, make_world

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



def default_tokenizer_texts() -> list[str]:
    """The demo's judged examples (the bundled sample) rendered in every CUT context, plus fixed strings."""
    return tokenizer_texts(judged_examples(make_world(12, 0), 480, 0.3, 0))


def tokenizer_texts(examples: Iterable[dict[str, Any]], extra: Iterable[str] = ()) -> list[str]:
    """Canonical judged examples rendered in every CUT context, the templates' fixed strings and ``extra``."""
    texts = [DEFAULT_FAKE_POSITIVE, "Perfect!", CRITIQUE_REQUEST, *extra]
    for example in examples:
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
