"""Examples to inspect: canonical judged rows plus an optional ``error_spans`` field.

``error_spans`` (gold wrong spans: ``[[start, end], ...]`` character offsets into ``completion``,
as the lab's programmatic judge writes them) is not a canonical field, so the loader would reject
it; it is read and checked here from the raw rows, and the rest of each row goes through the
canonical validation (same drops, same errors). Other formats go through their converter (no
gold spans there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cutalign.data.report import DropReport
from cutalign.data.schema import DataError, PolarityRule, SourceRecord, canonical_examples

GOLD_FIELD = "error_spans"


def load_inspect_examples(
    source: str | Path, *, data_format: str = "canonical", ids: Sequence[str] | None = None,
    limit: int | None = None, rule: PolarityRule | None = None,
) -> tuple[list[dict[str, Any]], DropReport]:
    """The examples of ``source`` (those named by ``ids``, in that order, else the first ``limit``)."""
    report = DropReport()
    report.add_source(str(source))
    rule = rule or PolarityRule()
    if data_format == "canonical":
        from cutalign.data.io import source_records

        records, spans = _split_spans(source_records(source))
        examples = []
        for located in canonical_examples(records, rule, report):
            example = dict(located.example)
            gold = spans.get((located.source, located.line))
            if gold is not None:
                example[GOLD_FIELD] = _checked_spans(gold, example["completion"], located.source, located.line)
            examples.append(example)
    else:
        from cutalign.data.converters import load_judged

        loaded = load_judged(source, data_format, rule=rule)
        report.merge(loaded.report)
        examples = loaded.examples
    if ids:
        by_id = {str(e["id"]): e for e in examples if e.get("id") is not None}
        missing = [i for i in ids if i not in by_id]
        if missing:
            known = ", ".join(list(by_id)[:5]) or "none (the rows have no ids)"
            raise ValueError(f"{source}: no example with id {', '.join(missing)} (first ids: {known})")
        examples = [by_id[i] for i in ids]
    elif limit is not None:
        examples = examples[:limit]
    return examples, report


def _split_spans(records: Iterable[SourceRecord]) -> tuple[list[SourceRecord], dict[tuple[str, int | None], Any]]:
    kept, spans = [], {}
    for record in records:
        raw = record.raw
        if isinstance(raw, dict) and GOLD_FIELD in raw:
            raw = dict(raw)
            value = raw.pop(GOLD_FIELD)
            if value is not None:
                spans[(record.source, record.line)] = value
            record = record._replace(raw=raw)
        kept.append(record)
    return kept, spans


def _checked_spans(value: Any, completion: str, source: str, line: int | None) -> list[tuple[int, int]]:
    """``[[start, end], ...]`` with ``0 <= start < end <= len(completion)``, else a DataError."""
    if not isinstance(value, list):
        raise DataError(source, line, GOLD_FIELD, f"expected a list of [start, end] pairs, got {type(value).__name__}")
    spans = []
    for i, pair in enumerate(value):
        ok = (isinstance(pair, list | tuple) and len(pair) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in pair))
        if not ok or not 0 <= pair[0] < pair[1] <= len(completion):
            raise DataError(source, line, GOLD_FIELD,
                            f"entry {i} is {pair!r}; expected [start, end] character offsets with "
                            f"0 <= start < end <= {len(completion)} (the completion's length)")
        spans.append((pair[0], pair[1]))
    return spans
