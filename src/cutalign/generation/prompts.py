"""Prompt files for `generate` (and the online loop): every line checked, every record given an id.

A record holds `prompt` (a string or chat messages ending with a user turn), or `messages` (chat
format), or Alpaca's `instruction` (+ `input`). Anything else is a `DataError` naming the file,
line and field, never an AttributeError later. Ids must be unique: the output is keyed by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cutalign.data.io import read_records
from cutalign.data.schema import DataError, _prompt, _Where, type_name

PROMPT_FIELDS = ("prompt", "messages", "instruction")


def read_prompts(path: str | Path, *, with_location: bool = False) -> list[dict[str, Any]]:
    """`{"id", "prompt"}` per record, in file order; a record without an id gets `FILE:LINE`.
    `with_location` adds `"where": (file, line)` so later errors (e.g. rendering) can name the line."""
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for record in read_records(path):
        raw, source, line = record.raw, record.source, record.line
        if not isinstance(raw, Mapping):
            raise DataError(source, line, None, f"expected a JSON object with a `prompt`, got {type_name(raw)}")
        prompt = _record_prompt(raw, _Where(source, line, None))
        record_id = raw.get("id")
        if record_id is None:
            record_id = f"{Path(source).name}:{line}"
        elif isinstance(record_id, bool) or not isinstance(record_id, str | int):
            raise DataError(source, line, "id", f"expected a string or an integer, got {type_name(record_id)}")
        if str(record_id) in seen:
            raise DataError(source, line, "id", f"duplicate id {record_id!r} (first at {seen[str(record_id)]}); "
                                                "outputs are keyed by id, so ids must be unique")
        seen[str(record_id)] = f"{source}:{line}"
        records.append({"id": record_id, "prompt": prompt, **({"where": (source, line)} if with_location else {})})
    if not records:
        raise DataError(str(path), None, None, "holds no prompts")
    return records


def _record_prompt(raw: Mapping[str, Any], where: _Where) -> str | list[dict[str, str]]:
    if "prompt" in raw or "messages" in raw:
        key = "prompt" if "prompt" in raw else "messages"
        value = raw[key]
        try:
            prompt = _prompt(value, where)
        except DataError as err:
            raise DataError(err.source, err.line, (err.field or "").replace("prompt", key, 1) or key,
                            err.message) from None
        if isinstance(prompt, str) and not prompt.strip():
            where.error(key, "must not be empty")
        if isinstance(prompt, list) and not prompt:
            where.error(key, "expected at least one message")
        return prompt
    instruction = raw.get("instruction")
    if isinstance(instruction, str) and instruction.strip():
        extra = raw.get("input")
        if extra is not None and not isinstance(extra, str):
            where.error("input", f"expected a string or null, got {type_name(extra)}")
        return instruction + (f"\n{extra}" if extra and extra.strip() else "")
    if "instruction" in raw:
        where.error("instruction", f"expected a non-empty string, got {type_name(instruction)}")
    where.error(None, f"expected a `prompt` (or `messages`, or `instruction`) field, got keys {sorted(raw)}")
    raise AssertionError("unreachable")  # pragma: no cover
