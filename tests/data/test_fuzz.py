"""Fuzz: arbitrary JSON values in every field of every format load correctly or raise DataError.

Nothing else may escape (no KeyError, TypeError, RecursionError, OverflowError, UnicodeError...):
the CLI turns DataError into exit 2 with the location, anything else would be a traceback.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutalign.data.converters import SHEPHERD_FOR_MODEL, SHEPHERD_RAW, convert, load_judged
from cutalign.data.schema import FIELDS, DataError, validate_record

# JSON values, including what Python's json reads but trips code: NaN/inf, huge ints, lone surrogates,
# strings that look like other types; drawn often on their own so that every field meets them.
NASTY = [10**400, -(10**30), float("nan"), float("inf"), "\ud800", "a\udfffb", "", " ", "$ERROR$", "true",
         "7", "user", "assistant", True, 0, [], {}, [[[[1]]]], [{"role": "user"}], {"text": None}]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
# Copied on every draw: a shared mutable value ({} or []) mutated by one example would leak into others.
json_values = st.sampled_from(NASTY).map(copy.deepcopy) | st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)

MESSAGES = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
CRITIQUE = {"text": "Too vague.", "refinement": "Better."}
ANSWER = {"answer": "A.", "feedback": {"rating": 2, "critiques": [CRITIQUE], "skip": False}}
BASES: dict[str, list[Any]] = {
    "canonical": [{"id": "1", "prompt": MESSAGES, "completion": "A", "judgment": "Bad.", "label": False,
                   "score": 3.0, "refinement": "B"}],
    "cut-alpaca": [{"id": 1, "instruction": "Q", "input": "I", "output": "A", "judgment": "Bad.", "score": 2,
                    "i_ans": "B"}],
    "ultrafeedback": [{"id": "u", "instruction": "Q", "completions": [
        {"response": "A", "critique": "C", "overall_score": 3}, {"response": "B", "overall_score": 9}]}],
    "openai-critiques": [{"id": "d", "data": {"passage": {"text": "P."}, "questions": [
        {"question": "Q?", "rankings": [1, 2], "answers": [ANSWER, {"answer": "B.", "feedback": {"rating": 7}}]}]}}],
    "shepherd": [{"id": 0, "question": "Q", "answer": "A", "feedback": "F"},
                 {"id": 0, "metadata": {"context": "Q", "output_candidate": "A", "output_correct": "B"}}],
}


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every position in ``value``: dict keys and list indices, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += paths(item, (*prefix, i))
    return out


def mutate(base: Any, path: tuple, value: Any, delete: bool) -> Any:
    value = copy.deepcopy(value)
    if not path:
        return value
    root = copy.deepcopy(base)
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return root


@st.composite
def mutated_rows(draw: st.DrawFn, fmt: str) -> list[Any]:
    """The format's valid rows with one to three positions replaced by arbitrary JSON (or removed),
    sometimes with an unknown key added."""
    rows = copy.deepcopy(BASES[fmt])
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(rows) - 1))
        path = draw(st.sampled_from(paths(rows[index])))
        rows[index] = mutate(rows[index], path, draw(json_values), draw(st.integers(0, 3)) == 0)
    if draw(st.booleans()) and isinstance(rows[0], dict):
        rows[0][draw(st.sampled_from(["judgement", "extra", "Prompt"]))] = draw(json_values)
    return rows


def write(folder: Path, fmt: str, rows: list[Any]) -> list[Path]:
    def jsonl(path: Path, items: list[Any]) -> Path:
        path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
        return path

    if fmt == "shepherd":
        return [jsonl(folder / SHEPHERD_FOR_MODEL, rows[:1]), jsonl(folder / SHEPHERD_RAW, rows[1:])]
    return [jsonl(folder / "data.jsonl", rows)]


def check_loads_or_data_error(
    fmt: str, rows: list[Any], folder: Path | None = None, through_load_judged: bool = False
) -> None:
    """Convert ``rows``; with no ``folder`` also through load_judged (Arrow types included)."""
    if folder is None:
        with tempfile.TemporaryDirectory() as scratch:
            return check_loads_or_data_error(fmt, rows, Path(scratch), through_load_judged=True)
    inputs = write(folder, fmt, rows)
    try:
        examples, report = convert(fmt, inputs)
        judged = load_judged(inputs if len(inputs) > 1 else inputs[0], fmt) if through_load_judged else None
    except DataError:
        return
    # What loads is canonical: it validates back unchanged, and the two entry points agree.
    for example in examples:
        assert tuple(example) == FIELDS
        assert validate_record(example, source="out", line=None) == example
        assert example["label"] or example["judgment"], "a negative without a judgment cannot train CUT"
    if judged is not None:
        assert len(judged) == len(examples) and judged.report.as_dict() == report.as_dict()


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(rows=mutated_rows("canonical"))
def test_canonical_loader(rows):
    check_loads_or_data_error("canonical", rows)


@FUZZ
@given(rows=mutated_rows("cut-alpaca"))
def test_cut_alpaca(rows):
    check_loads_or_data_error("cut-alpaca", rows)


@FUZZ
@given(rows=mutated_rows("ultrafeedback"))
def test_ultrafeedback(rows):
    check_loads_or_data_error("ultrafeedback", rows)


@FUZZ
@given(rows=mutated_rows("openai-critiques"))
def test_openai_critiques(rows):
    check_loads_or_data_error("openai-critiques", rows)


@FUZZ
@given(rows=mutated_rows("shepherd"))
def test_shepherd(rows):
    check_loads_or_data_error("shepherd", rows)


def test_the_bases_are_valid():
    """The fuzzed rows start from valid ones, so the fuzz reaches the deep fields."""
    for fmt in BASES:
        with tempfile.TemporaryDirectory() as folder:
            examples, _ = convert(fmt, write(Path(folder), fmt, BASES[fmt]))
        assert examples, fmt


def test_every_position_with_every_nasty_value(tmp_path):
    """Exhaustive beside the random search: each position of each format's rows, set to each NASTY
    value or removed (about 1,400 files; the random search alone meets one pair in hundreds)."""
    cases = 0
    for fmt, base in BASES.items():
        for index, row in enumerate(base):
            for path in paths(row):
                for value, delete in [*((v, False) for v in NASTY), (None, True)]:
                    rows = [*base[:index], mutate(row, path, value, delete), *base[index + 1 :]]
                    check_loads_or_data_error(fmt, rows, tmp_path)
                    cases += 1
    assert cases > 1400
