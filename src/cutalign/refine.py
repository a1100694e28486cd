"""Refined responses for the ILF baselines: y_hat = model(x, y, j), written resumably to canonical JSONL.

Generating refinements is the expensive step of ILF-MLE / ILF-DPO (one long generation per
negative), so it must never be repeated: every batch is appended to the output through
`ResumableJSONL` (synced before the next one starts), and a restart skips the examples the output
already holds (a last line cut by a crash is discarded). Any `Generator` backend writes them.
Positives (satisfactory already) and examples that carry a refinement are copied unchanged; the output holds one canonical example per input example, in input order
(one the backend refused is appended when a later run succeeds).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutalign.data.schema import FIELDS
from cutalign.files import ResumableJSONL
from cutalign.generation.base import Generator, Prompt, SamplingParams

DEFAULT_REFINEMENT_PROMPT = (
    "Rewrite the response to the instruction below so that it fixes every problem pointed out in the judgment "
    "and keeps what the judgment does not criticise. Reply with the improved response only.\n\n"
    "Instruction:\n{instruction}\n\nResponse:\n{response}\n\nJudgment:\n{judgment}"
)
PROMPT_FIELDS = ("instruction", "response", "judgment")
REQUIRED_FIELDS = ("response", "judgment")



def check_prompt_template(template: str) -> str:
    """The template itself, after checking it names only {instruction}, {response}, {judgment} (the last two
    required); literal braces must be doubled, as in `str.format`."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(f"refinement prompt template is not a valid format string: {err}") from err
    unknown = sorted(names - set(PROMPT_FIELDS))
    if unknown:
        raise ValueError(f"refinement prompt template has unknown field(s) {unknown}; it may use "
                         f"{', '.join('{' + f + '}' for f in PROMPT_FIELDS)} (double literal braces: {{{{ }}}})")
    missing = [f for f in REQUIRED_FIELDS if f not in names]
    if missing:
        raise ValueError(f"refinement prompt template must contain {', '.join('{' + f + '}' for f in missing)}")
    return template


def load_prompt_template(value: str | None) -> str:
    """The default prompt, the text of the file `value` names, or `value` itself as a template string."""
    if value is None:
        return DEFAULT_REFINEMENT_PROMPT
    path = Path(value)
    text = path.read_text(encoding="utf-8") if "{" not in value and path.is_file() else value
    return check_prompt_template(text)


def refinement_request(example: Mapping[str, Any], prompt_template: str) -> Prompt:
    """What the model is asked: the filled template; for chat messages, earlier turns are kept and the
    last user turn becomes the filled template (with that turn as the instruction)."""
    prompt = example["prompt"]
    instruction = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    request = prompt_template.format(instruction=instruction, response=example["completion"],
                                     judgment=example["judgment"])
    if isinstance(prompt, str):
        return request
    return [*[dict(m) for m in prompt[:-1]], {"role": "user", "content": request}]


def example_key(example: Mapping[str, Any]) -> str:
    """Identifies an example across runs: its id together with what refinement is generated from."""
    content = [example.get("id"), example["prompt"], example["completion"], example.get("judgment")]
    return hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=16).hexdigest()


def needs_refinement(example: Mapping[str, Any]) -> bool:
    refinement = example.get("refinement")
    return not example["label"] and not (isinstance(refinement, str) and refinement.strip())


@dataclass
class RefineResult:
    """Counts of one `refine_examples` run (`resumed`: rows the output already held; `failed`: requests
    the backend refused, by reason in `errors`, left for the next run)."""

    resumed: int = 0
    refined: int = 0
    copied: int = 0
    empty: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)

    @property
    def written(self) -> int:
        return self.refined + self.copied


def refine_examples(
    examples: Sequence[Mapping[str, Any]],
    output: str | Path,
    generator: Generator,
    params: SamplingParams | None = None,
    *,
    render: Callable[[Prompt], Prompt] | None = None,
    prompt_template: str = DEFAULT_REFINEMENT_PROMPT,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> RefineResult:
    """Append every example not yet in `output` to it, with a generated refinement where one is needed.

    `generator` answers the requests (see :func:`refinement_request`), each passed through `render`
    first (a local model: its template's `plain`); greedy with 512 new tokens unless `params` says
    otherwise. An empty answer is written as a null refinement and counted in `empty` (ILF then drops
    that example); a request the backend refuses is not written, counted in `failed`, and retried by
    the next run. `on_batch(n)` reports progress: first the examples already there, then each batch.
    Writing goes through `ResumableJSONL`: synced per batch, a line cut by a crash discarded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    check_prompt_template(prompt_template)
    params = params or SamplingParams(max_new_tokens=512)
    keys = [example_key(e) for e in examples]
    # Rows of other data in `output` raise ForeignOutputError (a ValueError): refuse rather than mix.
    with ResumableJSONL(output, key=example_key, allowed_keys=keys) as out:
        pending = [e for e, key in zip(examples, keys, strict=True) if key not in out]
        result = RefineResult(resumed=len(examples) - len(pending))
        if on_batch is not None and result.resumed:
            on_batch(result.resumed)
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            out.append(_refined_rows(batch, generator, params, render, prompt_template, result))
            if on_batch is not None:
                on_batch(len(batch))
    return result


def _refined_rows(batch: Sequence[Mapping[str, Any]], generator: Generator, params: SamplingParams,
                  render: Callable[[Prompt], Prompt] | None, prompt_template: str,
                  result: RefineResult) -> list[dict[str, Any]]:
    """The batch's canonical rows in input order, missing refinements generated in one call."""
    needed = [needs_refinement(e) for e in batch]
    requests = [refinement_request(e, prompt_template) for e, need in zip(batch, needed, strict=True) if need]
    sent = [render(r) for r in requests] if render is not None else requests
    answers = iter(generator.generate(sent, params) if sent else [])
    rows = []
    for example, need in zip(batch, needed, strict=True):
        row = {key: example.get(key) for key in FIELDS}
        if need:
            answer = next(answers)
            if answer.error is not None:
                result.failed += 1
                result.errors[answer.error] += 1
                continue
            row["refinement"] = answer.text.strip() or None
            result.refined += 1
            result.empty += row["refinement"] is None
        else:
            result.copied += 1
        rows.append(row)
    if next(answers, None) is not None:
        raise RuntimeError(f"the generator returned more results than the {len(requests)} requests")
    return rows
