"""`generate_jsonl`: answer a list of prompt records into a resumable JSONL, one row per id.

Rows are appended and synced per batch through `ResumableJSONL`; a rerun after a crash or SIGKILL
skips the ids already written (nothing is generated twice), and per-id seeds (`prompt_seeds`) make a
resumed sampled run write what an uninterrupted one would. A prompt the backend refuses is not
written; it is counted with its reason, and the next run tries it again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutalign.files import ResumableJSONL
from cutalign.generation.base import Generator, Prompt, SamplingParams, prompt_seeds


@dataclass
class GenerateSummary:
    """What one `generate_jsonl` run did; tokens/s counts the completion tokens of this run only."""

    total: int = 0
    resumed: int = 0
    generated: int = 0
    errors: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        done = f"{self.generated} generated, {self.resumed} already in the output"
        if self.errors:
            done += f", {sum(self.errors.values())} failed (rerun to retry them): " + "; ".join(
                f"{count} × {reason}" for reason, count in self.errors.most_common())
        return [done, f"{self.completion_tokens} completion tokens in {self.seconds:.1f} s "
                      f"({self.tokens_per_second:.1f} tokens/s), {self.prompt_tokens} prompt tokens"]


def generate_jsonl(
    records: Sequence[Mapping[str, Any]],
    output: str | Path,
    generator: Generator,
    params: SamplingParams,
    *,
    render: Callable[[Prompt], Prompt] | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> GenerateSummary:
    """Write `{"id", "prompt", "completion"}` for every record not yet in `output`, in input order.

    `render` turns a record's prompt into what the generator receives (a local backend gets the
    prompt text under the model's template; an HTTP backend the messages). `on_batch(n)` reports
    progress: first the rows already there, then each batch written.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = [str(r["id"]) for r in records]
    seeds = prompt_seeds(params.seed, ids)
    summary = GenerateSummary(total=len(records))
    with ResumableJSONL(output, key=lambda row: str(row["id"]), allowed_keys=ids) as out:
        pending = [i for i, key in enumerate(ids) if key not in out]
        summary.resumed = len(records) - len(pending)
        if on_batch is not None and summary.resumed:
            on_batch(summary.resumed)
        start_time = time.perf_counter()
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            prompts = [records[i]["prompt"] for i in batch]
            sent = [render(p) for p in prompts] if render is not None else prompts
            results = generator.generate(sent, params, seeds=None if seeds is None else [seeds[i] for i in batch])
            rows = []
            for i, prompt, result in zip(batch, prompts, results, strict=True):
                summary.prompt_tokens += result.prompt_tokens or 0
                summary.completion_tokens += result.completion_tokens or 0
                if result.error is not None:
                    summary.errors[result.error] += 1
                    continue
                rows.append({"id": records[i]["id"], "prompt": prompt, "completion": result.text})
            summary.generated += out.append(rows)
            summary.seconds = time.perf_counter() - start_time
            if on_batch is not None:
                on_batch(len(batch))
    return summary
