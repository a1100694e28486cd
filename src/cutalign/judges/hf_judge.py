"""A local model as judge, in the paper's AI-judge format, on any `Generator` backend.

The prompt is the one `cutalign train-judge` trains on (`AIJudgeTemplate.critique`): "... Write a
judgment ... Then reply with 'Yes.' or 'No.' ..." followed by `### Judgment:`. The reply is the
judgment and a final "Yes." (perfect) or "No."; a reply without that decision is unparseable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cutalign.generation.base import GenerationResult, Generator, SamplingParams
from cutalign.judges.base import Judgment, Preference, Prompt
from cutalign.judges.prompts import (
    PAIRWISE_AI_PROMPT,
    AIJudgeTemplate,
    instruction_text,
    parse_ai_judgment,
    parse_preference,
)


class HFJudge:
    """Judges batches with `generator` (greedy by default), `batch_size` prompts per generate() call."""

    kind = "hf"

    def __init__(self, generator: Generator, *, params: SamplingParams | None = None, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.generator = generator
        self.name = generator.name
        self.params = params or SamplingParams(max_new_tokens=256)
        self.batch_size = batch_size
        self.template = AIJudgeTemplate()

    @classmethod
    def from_pretrained(cls, model: str, *, backend: str = "transformers", dtype: str | None = None,
                        params: SamplingParams | None = None, batch_size: int = 8) -> HFJudge:
        """A judge from a model dir, adapter dir (e.g. `cutalign train-judge` output) or hub id, on the
        `transformers` or `vllm` generation backend (prompts are rendered strings, encoded as in training)."""
        from cutalign.generation import make_generator

        options: dict[str, Any] = {"dtype": dtype}
        if backend == "transformers":  # vLLM batches by itself and names the model after its path
            options.update(name=model, batch_size=batch_size)
        return cls(make_generator(backend, model=model, **options), params=params, batch_size=batch_size)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.name}

    def _generate(self, texts: list[str]) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            out = self.generator.generate(batch, self.params)
            if len(out) != len(batch):
                raise RuntimeError(f"generator {self.name!r} returned {len(out)} results for {len(batch)} prompts")
            results.extend(out)
        return results

    def judge(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Judgment]:
        texts = [self.template.critique(p, c) for p, c in zip(prompts, completions, strict=True)]
        return [_failed(r) or parse_ai_judgment(r.text) for r in self._generate(texts)]

    def judge_pairs(self, prompts: Sequence[Prompt], a: Sequence[str], b: Sequence[str]) -> list[Preference]:
        texts = [PAIRWISE_AI_PROMPT.format(instruction=instruction_text(p), response_a=x, response_b=y)
                 for p, x, y in zip(prompts, a, b, strict=True)]
        results = self._generate(texts)
        return [Preference(None, raw=r.text, error=_error(r)) if _error(r) else parse_preference(r.text)
                for r in results]


def _error(result: GenerationResult) -> str | None:
    return getattr(result, "error", None)


def _failed(result: GenerationResult) -> Judgment | None:
    error = _error(result)
    return Judgment(None, None, raw=result.text, error=f"generation_error: {error}") if error else None
