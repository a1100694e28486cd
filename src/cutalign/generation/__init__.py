"""Generation: one `Generator` interface, several backends (transformers, OpenAI-compatible HTTP, vLLM).

Everything that produces text (`generate`, `refine`, the `hf` judge, the online loop, `eval`) goes
through a `Generator`, so a backend change is a flag, not a code path.
"""

from cutalign.generation.base import GenerationResult, Generator, SamplingParams
from cutalign.generation.transformers_backend import (
    generate_from_texts,
    generate_responses,
    load_for_inference,
    write_generations,
)

__all__ = [
    "GenerationResult",
    "Generator",
    "SamplingParams",
    "generate_from_texts",
    "generate_responses",
    "load_for_inference",
    "write_generations",
]
