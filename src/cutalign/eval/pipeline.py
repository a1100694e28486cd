"""The generate half of generate-and-judge: a model answers a prompts file into resumable JSONL.

Reuses the library behind ``cutalign generate`` (:func:`~cutalign.generation.make_generator`,
:func:`~cutalign.generation.jsonl.generate_jsonl`, the model's saved template): rerunning after a
crash answers only the prompts not yet written. The judge half is each eval's own
(:mod:`~cutalign.eval.accuracy`, :mod:`~cutalign.eval.winrate`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cutalign.eval.outputs import OutputRow, read_outputs


def generate_outputs(model: str, prompts: str | Path, output: str | Path, *, max_new_tokens: int = 256,
                     batch_size: int = 8, dtype: str = "auto", seed: int = 42, limit: int | None = None,
                     progress: Callable[[int], None] | None = None) -> tuple[list[OutputRow], Any]:
    """Greedy answers of ``model`` to every prompt (``limit``: the first N) in ``output``; returns the rows
    and the generation summary (its ``errors`` count prompts that failed; a rerun retries them)."""
    from cutalign.data.templates import render_chat
    from cutalign.generation import SamplingParams, make_generator
    from cutalign.generation.jsonl import generate_jsonl
    from cutalign.generation.prompts import read_prompts

    records = read_prompts(prompts)[:limit]
    generator = make_generator("transformers", model=model, dtype=dtype, batch_size=batch_size)
    params = SamplingParams(max_new_tokens=max_new_tokens, seed=seed)
    summary = generate_jsonl(records, output, generator, params, render=lambda p: render_chat(generator.template, p),
                             batch_size=batch_size, on_batch=progress)
    return read_outputs(output), summary
