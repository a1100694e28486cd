"""Kept for the imports elsewhere in the project (tests, benchmarks): the assets now live in the lab.

Use :mod:`cutalign.lab.tokenizer` and :mod:`cutalign.lab.models` in new code.
"""

from cutalign.lab.models import (
    DEMO_ARCH,
    DEMO_HIDDEN_SIZE,
    DEMO_NUM_HEADS,
    DEMO_NUM_LAYERS,
    demo_model_and_tokenizer,
    tiny_causal_lm,
)
from cutalign.lab.tokenizer import (
    CHAT_TEMPLATE,
    DEFAULT_VOCAB_SIZE,
    MODEL_MAX_LENGTH,
    SPECIAL_TOKENS,
    build_demo_tokenizer,
    default_tokenizer_texts,
)

__all__ = [
    "CHAT_TEMPLATE", "DEFAULT_VOCAB_SIZE", "DEMO_ARCH", "DEMO_HIDDEN_SIZE", "DEMO_NUM_HEADS", "DEMO_NUM_LAYERS",
    "MODEL_MAX_LENGTH", "SPECIAL_TOKENS", "build_demo_tokenizer", "default_tokenizer_texts",
    "demo_model_and_tokenizer", "tiny_causal_lm",
]
