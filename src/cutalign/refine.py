"""Refined responses for the ILF baselines: y_hat = model(x, y, j), written resumably to canonical JSONL.

Generating refinements is the expensive step of ILF-MLE / ILF-DPO (one long generation per
negative), so it must never be repeated: every batch is appended to the output and synced before
the next one starts, and a restart skips the examples the output already holds (a last line cut
by a crash is discarded). Positives (satisfactory already) and examples that carry a refinement
are copied unchanged; the output holds one canonical example per input example, in input order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutalign.data.schema import FIELDS, DataError

logger = logging.getLogger(__name__)

DEFAULT_REFINEMENT_PROMPT = (
    "Rewrite the response to the instruction below so that it fixes every problem pointed out in the judgment "
    "and keeps what the judgment does not criticise. Reply with the improved response only.\n\n"
    "Instruction:\n{instruction}\n\nResponse:\n{response}\n\nJudgment:\n{judgment}"
)
PROMPT_FIELDS = ("instruction", "response", "judgment")
REQUIRED_FIELDS = ("response", "judgment")

Prompt = str | list[dict[str, str]]
Generate = Callable[[list[Prompt]], list[str]]


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


def model_generator(model: Any, tokenizer: Any, template: Any, *, max_new_tokens: int = 512,
                    max_prompt_length: int | None = None) -> Generate:
    """A `Generate` that answers requests greedily with `model`, each rendered by `template.plain`."""
    from cutalign.generation import generate_responses

    def generate(requests: list[Prompt]) -> list[str]:
        return generate_responses(model, tokenizer, requests, template, max_new_tokens=max_new_tokens,
                                  batch_size=len(requests), max_prompt_length=max_prompt_length, progress=False)

    return generate


@dataclass
class RefineResult:
    """Counts of one `refine_examples` run (`resumed`: rows the output already held)."""

    resumed: int = 0
    refined: int = 0
    copied: int = 0
    empty: int = 0

    @property
    def written(self) -> int:
        return self.refined + self.copied


def refine_examples(
    examples: Sequence[Mapping[str, Any]],
    output: str | Path,
    generate: Generate,
    *,
    prompt_template: str = DEFAULT_REFINEMENT_PROMPT,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> RefineResult:
    """Append every example not yet in `output` to it, with a generated refinement where one is needed.

    `generate` maps a list of requests (see :func:`refinement_request`) to responses; an empty one
    is written as a null refinement and counted in `empty` (ILF then drops that example).
    `on_batch(n)` reports progress: first the examples already in `output`, then each batch written.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    check_prompt_template(prompt_template)
    output = Path(output)
    keys = [example_key(e) for e in examples]
    done = read_done_keys(output, set(keys))
    pending = [e for e, key in zip(examples, keys, strict=True) if key not in done]
    result = RefineResult(resumed=len(examples) - len(pending))
    if on_batch is not None and result.resumed:
        on_batch(result.resumed)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as out:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            _write_batch(out, batch, generate, prompt_template, result)
            if on_batch is not None:
                on_batch(len(batch))
    return result


def _write_batch(out: Any, batch: Sequence[Mapping[str, Any]], generate: Generate, prompt_template: str,
                 result: RefineResult) -> None:
    """Generate the batch's missing refinements, then append and sync its rows (in input order)."""
    needed = [needs_refinement(e) for e in batch]
    requests = [refinement_request(e, prompt_template) for e, need in zip(batch, needed, strict=True) if need]
    responses = generate(requests) if requests else []
    if len(responses) != len(requests):
        raise RuntimeError(f"the generator returned {len(responses)} responses for {len(requests)} requests")
    answers = iter(responses)
    for example, need in zip(batch, needed, strict=True):
        row = {key: example.get(key) for key in FIELDS}
        if need:
            row["refinement"] = next(answers).strip() or None
            result.refined += 1
            result.empty += row["refinement"] is None
        else:
            result.copied += 1
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    os.fsync(out.fileno())


def read_done_keys(output: Path, known: Iterable[str]) -> set[str]:
    """Keys of the examples `output` already holds; a partial last line (a crash mid-write) is cut off.

    Rows that are not examples of this input mean the output belongs to other data: an error, so
    that nothing is mixed or overwritten.
    """
    if not output.is_file():
        return set()
    _drop_partial_last_line(output)
    known = set(known)
    done: set[str] = set()
    with output.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = example_key(row)
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(str(output), number, None, f"not a canonical example written by refine: {err}") from err
            if key not in known:
                raise DataError(str(output), number, None, "this example is not in the input data; the output "
                                "file belongs to other data (choose a new --output)")
            done.add(key)
    return done


def _drop_partial_last_line(path: Path) -> None:
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    try:
        json.loads(data[keep:])
    except ValueError:
        logger.warning("%s: discarding an incomplete last line (an interrupted run)", path)
        with path.open("r+b") as f:
            f.truncate(keep)
        return
    with path.open("ab") as f:  # a complete record that only lacks its newline
        f.write(b"\n")
