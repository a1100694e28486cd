"""Model outputs to evaluate: ``cutalign generate`` JSONL or AlpacaEval JSON, read into one shape.

Accepted rows (JSON array or JSONL): ``{"id", "prompt", "completion"}`` (``cutalign generate``) or
``{"instruction", "output", "generator"}`` (AlpacaEval); an optional ``reference`` holds a reference
text (ROUGE) and ``input`` is appended to an AlpacaEval instruction as Alpaca does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutalign.data.io import read_records
from cutalign.data.schema import DataError, prompt_text


@dataclass
class OutputRow:
    """One output: its key for matching across files, the prompt (text or messages) and the text."""

    id: str | None
    prompt: Any
    output: str
    generator: str | None
    reference: str | None
    where: tuple[str, int | None]

    @property
    def instruction(self) -> str:
        return prompt_text(self.prompt)


def read_outputs(path: str | Path) -> list[OutputRow]:
    """Every row of ``path``; a row without a prompt or an output is a ``DataError`` naming its line."""
    rows = []
    for record in read_records(path):
        raw, where = record.raw, (record.source, record.line)
        if not isinstance(raw, dict):
            raise DataError(record.source, record.line, None, "expected a JSON object")
        prompt = raw.get("prompt", raw.get("instruction"))
        if isinstance(raw.get("input"), str) and raw["input"].strip() and "prompt" not in raw:
            prompt = f"{prompt}\n\n{raw['input']}"
        if not isinstance(prompt, str | list):
            raise DataError(record.source, record.line, "prompt", "missing: need `prompt` or `instruction`")
        output = raw.get("completion", raw.get("output"))
        if not isinstance(output, str):
            raise DataError(record.source, record.line, "completion",
                            "missing or not a string: need `completion` or `output`")
        reference = raw.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise DataError(record.source, record.line, "reference", "must be a string")
        rows.append(OutputRow(id=None if raw.get("id") is None else str(raw["id"]), prompt=prompt, output=output,
                              generator=raw.get("generator"), reference=reference, where=where))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def pair_outputs(model: Sequence[OutputRow], reference: Sequence[OutputRow]) -> list[tuple[OutputRow, OutputRow]]:
    """Match model rows to reference rows: by id when every row has one, else by instruction text."""
    by_id = all(r.id is not None for r in [*model, *reference])
    key = (lambda r: r.id) if by_id else (lambda r: r.instruction)
    table: dict[Any, OutputRow] = {}
    for row in reference:
        if key(row) in table:
            raise DataError(row.where[0], row.where[1], "id" if by_id else "instruction",
                            f"duplicate key {key(row)!r} in the reference outputs")
        table[key(row)] = row
    pairs = []
    for row in model:
        match = table.get(key(row))
        if match is None:
            raise DataError(row.where[0], row.where[1], "id" if by_id else "instruction",
                            f"no reference output for {str(key(row))[:60]!r}")
        pairs.append((row, match))
    return pairs


def alpaca_eval_rows(rows: Sequence[OutputRow], generator: str) -> list[dict[str, str]]:
    """AlpacaEval's format (``instruction``, ``output``, ``generator``), so ``alpaca_eval`` reads the same outputs."""
    return [{"instruction": r.instruction, "output": r.output, "generator": r.generator or generator} for r in rows]
