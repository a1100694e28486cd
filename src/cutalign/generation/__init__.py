"""Generation: one `Generator` interface, several backends (transformers, OpenAI-compatible HTTP, vLLM).

Everything that produces text (`generate`, `refine`, `serve`, the `hf` judge, the online loop,
`eval`) goes through a `Generator`, so a backend change is a flag, not a code path. The HTTP and vLLM
backends are imported on first use (`from cutalign.generation import OpenAIGenerator`).
"""

from __future__ import annotations

from typing import Any

from cutalign.generation.base import (
    GenerationError,
    GenerationResult,
    Generator,
    SamplingParams,
    prompt_seeds,
)

# Backends import torch / openai / vllm: loaded on first use, so `cutalign --help` stays fast.
_LAZY = {
    "TransformersGenerator": "cutalign.generation.transformers_backend",
    "generate_from_texts": "cutalign.generation.transformers_backend",
    "generate_responses": "cutalign.generation.transformers_backend",
    "load_for_inference": "cutalign.generation.transformers_backend",
    "OpenAIGenerator": "cutalign.generation.openai_backend",
    "VLLMGenerator": "cutalign.generation.vllm_backend",
    "make_generator": "cutalign.generation.factory",
    "BACKENDS": "cutalign.generation.factory",
}

__all__ = [
    "BACKENDS",
    "GenerationError",
    "GenerationResult",
    "Generator",
    "OpenAIGenerator",
    "SamplingParams",
    "TransformersGenerator",
    "VLLMGenerator",
    "generate_from_texts",
    "generate_responses",
    "load_for_inference",
    "make_generator",
    "prompt_seeds",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cutalign.generation' has no attribute {name!r}")
