"""`judge_file`: annotate (id, prompt, completion) rows into canonical judged rows, resumably.

The output is append-only (`ResumableJSONL`): every batch is synced before the next is judged, so a
crash, Ctrl-C or a judge outage loses at most the batch in flight, and a rerun of the same command
skips every id already written. One row per input id, always:

- a judged row: `judgment` (null when satisfactory), `label`, `score`, and `judge` {kind, model};
- a failed row: `judgment` "$ERROR$" (the marker the data loaders drop and count as `judge_error`,
  so a failure is never trained on), `label` false, and `judge.error` / `judge.raw`.

On a rerun, rows that failed for a transient reason (rate limit, server error, timeout, connection,
malformed response: nothing was answered) are judged again; rows the judge answered but could not
be used (`unparseable`, a refused request, an exception in a Python judge) are judged again only
with `retry_errors`, since asking again costs as much as the first time. A successful judgment is
never redone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cutalign.data.io import read_records
from cutalign.data.schema import JUDGE_ERROR_MARKER, DataError, type_name, validate_record
from cutalign.files import ResumableJSONL, atomic_write_jsonl
from cutalign.judges.base import Judge, Judgment
from cutalign.judges.guard import TRANSIENT_ERRORS, FailureGuard, JudgeFailureError
from cutalign.judges.prompts import UNPARSEABLE

INPUT_FIELDS = ("id", "prompt", "completion", "refinement")


@dataclass
class JudgeSummary:
    """What one `judge_file` run did. `judged` counts usable judgments written by this run."""

    output: str
    total: int = 0
    resumed: int = 0  # rows already in the output (not judged again)
    redone: int = 0  # failed rows removed from the output to be judged again
    judged: int = 0
    satisfactory: int = 0
    unsatisfactory: int = 0
    unparseable: int = 0
    errors: Counter = field(default_factory=Counter)  # failure kind -> rows (unparseable apart)
    stopped: str | None = None  # why the run stopped early (the judge kept failing)

    @property
    def failed(self) -> int:
        return self.unparseable + sum(self.errors.values())

    def count(self, row: Mapping[str, Any]) -> None:
        error = row["judge"].get("error")
        if error == UNPARSEABLE:
            self.unparseable += 1
        elif error is not None:
            self.errors[error] += 1
        else:
            self.judged += 1
            self.satisfactory += int(row["label"])
            self.unsatisfactory += int(not row["label"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": dict(self.errors), "failed": self.failed}


def row_key(row: Mapping[str, Any]) -> str:
    """An input row's identity: its id, or (no id) a hash of what is judged."""
    if row.get("id") is not None:
        return str(row["id"])
    content = json.dumps([row["prompt"], row["completion"]], sort_keys=True, ensure_ascii=False)
    return "sha:" + hashlib.blake2b(content.encode(), digest_size=12).hexdigest()


def read_judge_inputs(path: str | Path) -> list[dict[str, Any]]:
    """The rows to judge (id, prompt, completion, refinement), validated; malformed input raises DataError."""
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int | None] = {}
    for record in read_records(path):
        if not isinstance(record.raw, Mapping):
            raise DataError(record.source, record.line, None, f"expected a JSON object, got {type_name(record.raw)}")
        subset = {key: record.raw.get(key) for key in INPUT_FIELDS}
        example = validate_record(subset, source=record.source, line=record.line)
        row = {key: example[key] for key in INPUT_FIELDS}
        key = row_key(row)
        if key in first_line:
            what = f"duplicate id {row['id']!r}" if row["id"] is not None else "duplicate prompt and completion"
            raise DataError(record.source, record.line, "id",
                            f"{what} (first at line {first_line[key]}); the output holds one row per id")
        first_line[key] = record.line
        rows.append(row)
    return rows


def judged_row(example: Mapping[str, Any], judgment: Judgment, judge_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical row for `example` and what the judge said (a failure becomes a "$ERROR$" row)."""
    meta = dict(judge_meta)
    error = judgment.error
    usable = error is None and judgment.satisfactory is not None and (
        judgment.satisfactory or bool((judgment.text or "").strip()))
    score = judgment.score
    if score is not None and not math.isfinite(score):
        usable, error = False, error or UNPARSEABLE
    if not usable:
        meta.update(error=error or UNPARSEABLE, raw=judgment.raw)
    if judgment.error_spans:
        meta["error_spans"] = [list(span) for span in judgment.error_spans]
    return {
        "id": example["id"],
        "prompt": example["prompt"],
        "completion": example["completion"],
        "judgment": judgment.text if usable else JUDGE_ERROR_MARKER,
        "label": bool(judgment.satisfactory) if usable else False,
        "score": score if usable else None,
        "refinement": example.get("refinement"),
        "judge": meta,
    }


def _to_redo(row: Mapping[str, Any], retry_errors: bool) -> bool:
    error = (row.get("judge") or {}).get("error")
    return error is not None and (retry_errors or error in TRANSIENT_ERRORS)


def _prepare_output(path: Path, keys: Sequence[str], judge_meta: Mapping[str, Any], retry_errors: bool) -> int:
    """Check an existing output belongs to this input and judge; atomically remove rows to judge again."""
    if not path.is_file():
        return 0
    rows = ResumableJSONL(path, key=row_key, allowed_keys=keys).rows()
    for number, row in enumerate(rows, start=1):
        meta = row.get("judge") if isinstance(row.get("judge"), Mapping) else {}
        if (meta.get("kind"), meta.get("model")) != (judge_meta["kind"], judge_meta["model"]):
            raise ValueError(
                f"{path}: row {number} was judged by {meta.get('kind')}:{meta.get('model')}, not "
                f"{judge_meta['kind']}:{judge_meta['model']}; write to a new output file to use another judge")
    keep = [row for row in rows if not _to_redo(row, retry_errors)]
    if len(keep) < len(rows):
        atomic_write_jsonl(path, keep)
    return len(rows) - len(keep)


def _judge_batch(judge: Judge, batch: Sequence[Mapping[str, Any]]) -> list[Judgment]:
    prompts, completions = [r["prompt"] for r in batch], [r["completion"] for r in batch]
    from cutalign.judges.python_judge import PythonJudge

    judgments = (judge.judge(prompts, completions, rows=batch) if isinstance(judge, PythonJudge)
                 else judge.judge(prompts, completions))
    if len(judgments) != len(batch):
        raise RuntimeError(f"judge {judge.name!r} returned {len(judgments)} judgments for {len(batch)} rows")
    return judgments


def _as_written(rows: Sequence[Mapping[str, Any]]) -> list[Judgment]:
    """The verdicts as the output holds them (a judgment `judged_row` refused counts as failed)."""
    return [Judgment(None, None if row["judge"].get("error") else row["label"], error=row["judge"].get("error"))
            for row in rows]


def judge_metadata(judge: Judge) -> dict[str, Any]:
    meta = getattr(judge, "metadata", None)
    return dict(meta) if isinstance(meta, Mapping) else {"kind": type(judge).__name__, "model": judge.name}


def judge_file(input_path: str | Path, output_path: str | Path, judge: Judge, *, batch_size: int = 16,
               retry_errors: bool = False, guard: FailureGuard | None = None,
               progress: Callable[[int], None] | None = None) -> JudgeSummary:
    """Judge every row of `input_path` not yet in `output_path`; returns the summary of this run.

    `progress(n)` is called as rows are done (first with the rows already there). Raises `DataError`
    for malformed input, `ValueError` for an output of other data or another
    judge, and `JudgeFailureError` (with `.summary`) when `guard` stops a failing judge; what was
    written stays, and a rerun resumes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    output_path = Path(output_path)
    if output_path.exists() and output_path.resolve() == Path(input_path).resolve():
        raise ValueError(f"--output {output_path} is the input file; write the judged rows to a new file")
    examples = read_judge_inputs(input_path)
    keys = [row_key(e) for e in examples]
    meta = judge_metadata(judge)
    summary = JudgeSummary(output=str(output_path), total=len(examples))
    summary.redone = _prepare_output(output_path, keys, meta, retry_errors)
    with ResumableJSONL(output_path, key=row_key, allowed_keys=keys) as out:
        todo = [e for e, k in zip(examples, keys, strict=True) if k not in out.done]
        summary.resumed = len(examples) - len(todo)
        if progress is not None and summary.resumed:
            progress(summary.resumed)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            judgments = _judge_batch(judge, batch)
            rows = [judged_row(e, j, meta) for e, j in zip(batch, judgments, strict=True)]
            out.append(rows)
            for row in rows:
                summary.count(row)
            if progress is not None:
                progress(len(batch))
            if guard is not None:
                try:
                    guard.observe(_as_written(rows))
                except JudgeFailureError as err:
                    summary.stopped = str(err)
                    failure = JudgeFailureError(
                        f"{err}. {summary.resumed + summary.judged + summary.failed} of {summary.total} rows are in "
                        f"{output_path}; rerun the same command to resume")
                    failure.summary = summary  # type: ignore[attr-defined]
                    raise failure from err
    return summary
