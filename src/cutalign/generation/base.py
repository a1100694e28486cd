"""The `Generator` protocol: batched prompts in, texts out, with explicit sampling parameters and seeds.

Prompts are either fully rendered strings (the backend encodes them exactly, as in training; over
an OpenAI chat endpoint a string is sent as one user message) or chat message lists (the backend
renders them with the model's training template, or the server does). A backend never reorders
its output: result `i` answers prompt `i`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by every backend (greedy by default, as the paper's evaluation).

    `seed` makes sampling reproducible: backends derive one seed per prompt from it and the
    prompt's position, so results do not depend on batch composition where the backend allows.
    """

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0 and self.do_sample:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class GenerationResult:
    """One generated text plus what a caller may want to report (token counts, finish reason)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop" | "length" | "error" | None when unknown
    error: str | None = None  # why this prompt got no text (a request the endpoint refused); text is ""
    extra: dict = field(default_factory=dict)


class GenerationError(RuntimeError):
    """A backend cannot go on (endpoint down after every retry, wrong key or model): stop the run;
    everything written so far is kept and a rerun resumes."""


# Streaming callback: (index of the prompt in the call, new text) as tokens arrive.
OnText = Callable[[int, str], None]


def prompt_seeds(seed: int | None, keys: Sequence[object]) -> list[int] | None:
    """One seed per prompt from a run seed and each prompt's key (its id): the same id gets the same
    sample whatever its batch or position, so a resumed run samples what the first run would have."""
    if seed is None:
        return None
    return [int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=4).digest(), "little")
            for key in keys]


@runtime_checkable
class Generator(Protocol):
    """Anything that answers a batch of prompts; `name` identifies the model in outputs and manifests."""

    name: str

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, seeds: Sequence[int] | None = None,
    ) -> list[GenerationResult]:
        """One result per prompt, in input order. `seeds` (one per prompt, see :func:`prompt_seeds`)
        overrides the default per-prompt seeds `params.seed + i`."""
        ...
