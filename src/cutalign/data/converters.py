"""Converters from published judgment data formats to canonical examples.

Each converter turns its inputs into :class:`~cutalign.data.schema.SourceRecord` s holding
canonical-shaped dicts (plus the source field names, for error messages) and records the drops
only it can see; validation, defects and duplicates are then handled by the one shared path,
:func:`~cutalign.data.schema.canonical_examples`. Every source field a converter reads is
type-checked as the canonical loader checks its own (a string ``"true"`` is no boolean, a NaN no
ranking), and every record that yields no example is counted with a reason. Inputs may be files,
folders, saved datasets or `datasets` ids (see :func:`~cutalign.data.io.source_records`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

from cutalign.data.io import JudgedData, load_judged_dataset, source_records, to_dataset
from cutalign.data.report import DropReport
from cutalign.data.schema import (
    DataError,
    ExtraFields,
    Located,
    PolarityRule,
    SourceRecord,
    _Where,
    canonical_examples,
    check_keys,
    location,
    short_repr,
    type_name,
)


@dataclass(frozen=True)
class Options:
    """What a converter may need besides its inputs: the polarity rule, the `datasets` split, and
    whether unknown fields are an error (formats with a fixed key set only)."""

    rule: PolarityRule
    split: str = "train"
    extra_fields: ExtraFields = "error"


Converter = Callable[[Sequence[Path], DropReport, Options], Iterator[SourceRecord]]
CONVERTERS: dict[str, Converter] = {}

SHEPHERD_FOR_MODEL = "human_data_for_model.jsonl"
SHEPHERD_RAW = "human_data_raw.jsonl"
# The official conversion (wwxu21/CUT scripts/convert2alpaca.py) joins critiques with spaces.
CRITIQUE_SEPARATOR = " "
POSITIVE_RATING = 7  # the critiques data's "no critiques" rating, asserted by the official conversion


def register(name: str) -> Callable[[Converter], Converter]:
    def add(converter: Converter) -> Converter:
        CONVERTERS[name] = converter
        return converter

    return add


def _convert_located(
    fmt: str,
    inputs: Sequence[str | Path],
    rule: PolarityRule | None,
    split: str = "train",
    extra_fields: ExtraFields = "error",
) -> tuple[list[Located], DropReport]:
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(sorted(CONVERTERS))}")
    check_keys({}, (), _Where("", None, None), extra_fields)  # a bad extra_fields value fails here
    report = DropReport()
    for path in inputs:
        report.add_source(str(path))
    options = Options(rule or PolarityRule(), split, extra_fields)
    records = CONVERTERS[fmt]([Path(p) for p in inputs], report, options)
    return list(canonical_examples(records, options.rule, report, extra_fields)), report


def convert(
    fmt: str,
    inputs: Sequence[str | Path],
    rule: PolarityRule | None = None,
    *,
    split: str = "train",
    extra_fields: ExtraFields = "error",
) -> tuple[list[dict[str, Any]], DropReport]:
    """Canonical examples from ``inputs`` in format ``fmt`` (a key of :data:`CONVERTERS`), and the drops."""
    located, report = _convert_located(fmt, inputs, rule, split, extra_fields)
    return [item.example for item in located], report


def load_judged(
    source: str | Path | Sequence[str | Path],
    fmt: str = "canonical",
    *,
    rule: PolarityRule | None = None,
    split: str = "train",
    extra_fields: ExtraFields = "error",
) -> JudgedData:
    """One entry point for training code: judged data in any format from files, folders, saved
    datasets or `datasets` ids, with its :class:`~cutalign.data.report.DropReport` attached.

    Canonical sources go to :func:`~cutalign.data.io.load_judged_dataset`, any other format
    through its converter. Unknown fields in canonical (and cut-alpaca) rows are an error unless
    ``extra_fields="ignore"``. Raises :class:`DataError` for malformed input, nothing else.
    """
    if fmt == "canonical":
        dataset, report = load_judged_dataset(source, rule=rule, split=split, extra_fields=extra_fields)
        return JudgedData(dataset, report)
    inputs = [source] if isinstance(source, str | Path) else source
    located, report = _convert_located(fmt, inputs, rule, split, extra_fields)
    return JudgedData(to_dataset(located), report)


_TYPE_NAMES = {
    str: "a string",
    int: "a number",
    float: "a number",
    list: "a list",
    Mapping: "an object",
    type(None): "null",
}


def _get(obj: Any, dotted: str, record: SourceRecord, expected: tuple[type, ...], *, prefix: str = "") -> Any:
    """``obj[a][b]...`` for ``dotted = "a.b"``, type-checked; errors name the field ``prefix + dotted``."""
    value = obj
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, expected):  # JSON true/false is never wanted here
        wanted = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in expected))
        raise DataError(
            record.source, record.line, prefix + dotted, f"expected {wanted}, got {type_name(value)}"
        )
    return value


def _objects(inputs: Sequence[Path], split: str) -> Iterator[SourceRecord]:
    for record in chain.from_iterable(source_records(p, split) for p in inputs):
        if not isinstance(record.raw, Mapping):
            raise DataError(
                record.source, record.line, None, f"expected a JSON object, got {type_name(record.raw)}"
            )
        yield record


def _record_id(record: SourceRecord) -> str:
    raw_id = record.raw.get("id")
    return str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else str(record.line)


@register("canonical")
def _canonical(inputs: Sequence[Path], report: DropReport, options: Options) -> Iterator[SourceRecord]:
    """Already canonical files: converting them only validates and cleans."""
    return chain.from_iterable(source_records(p, options.split) for p in inputs)


CUT_ALPACA_FIELDS = ("id", "instruction", "input", "output", "judgment", "score", "i_ans")


@register("cut-alpaca")
def _cut_alpaca(inputs: Sequence[Path], report: DropReport, options: Options) -> Iterator[SourceRecord]:
    """The official CUT repo's files: {id, instruction, input, output, judgment, score?, i_ans?}.

    The prompt folds a non-empty ``input`` in as ``instruction + "\\n" + input``; ``i_ans`` (the
    official name of a refined answer) becomes ``refinement``; the label comes from the rule.
    Other keys are an error (a misspelled ``judgement`` would read as "satisfactory") unless
    ``extra_fields="ignore"``.
    """
    origin = {"prompt": "instruction", "completion": "output", "refinement": "i_ans"}
    for record in _objects(inputs, options.split):
        row = record.raw
        check_keys(row, CUT_ALPACA_FIELDS, _Where(record.source, record.line, None), options.extra_fields)
        instruction = _get(row, "instruction", record, (str,))
        extra = _get(row, "input", record, (str, type(None)))
        prompt = f"{instruction}\n{extra}" if extra else instruction
        canonical = {"id": row.get("id"), "prompt": prompt, "completion": row.get("output")}
        canonical.update(judgment=row.get("judgment"), score=row.get("score"), refinement=row.get("i_ans"))
        yield SourceRecord(canonical, record.source, record.line, origin)


def _shepherd_files(inputs: Sequence[Path]) -> tuple[Path, Path]:
    """The judged and the raw file: a folder holding both, or the two given (files, saved datasets
    or `datasets` ids, judged first unless their names say otherwise)."""
    if len(inputs) == 1 and inputs[0].is_dir():
        files = (inputs[0] / SHEPHERD_FOR_MODEL, inputs[0] / SHEPHERD_RAW)
    elif len(inputs) == 2:
        by_name = {p.name: p for p in inputs}
        return by_name.get(SHEPHERD_FOR_MODEL, inputs[0]), by_name.get(SHEPHERD_RAW, inputs[1])
    else:
        shown = ", ".join(map(str, inputs)) or "nothing"
        raise DataError(
            shown, None, None, f"shepherd needs a folder or the files {SHEPHERD_FOR_MODEL} and {SHEPHERD_RAW}"
        )
    for path in files:
        if not path.is_file():
            raise DataError(str(path), None, None, "no such file")
    return files


def _shepherd_pair(judged: SourceRecord, raw: SourceRecord, raw_file: Path) -> None:
    """Check that a row of the two files describes the same example (they are joined by order)."""
    checks = (
        ("id", "id", (str, int)),
        ("question", "metadata.context", (str,)),
        ("answer", "metadata.output_candidate", (str,)),
    )
    for key, raw_key, expected in checks:
        if judged.raw.get(key) != _get(raw.raw, raw_key, raw, expected):
            raise DataError(
                judged.source,
                judged.line,
                key,
                f"does not match {raw_key} of {location(str(raw_file), raw.line)}; the two Shepherd "
                "files must list the same rows in the same order",
            )


@register("shepherd")
def _shepherd(inputs: Sequence[Path], report: DropReport, options: Options) -> Iterator[SourceRecord]:
    """Shepherd human critiques: judged rows joined in order with the raw file's corrected answers.

    Every Shepherd row critiques a flawed answer, so all are negatives.
    """
    for_model, raw_file = _shepherd_files(inputs)
    origin = {"prompt": "question", "completion": "answer", "judgment": "feedback"}
    for judged, raw in zip_longest(_objects([for_model], options.split), _objects([raw_file], options.split)):
        if judged is None or raw is None:
            longer, shorter = (raw_file, for_model) if judged is None else (for_model, raw_file)
            line = (raw or judged).line
            raise DataError(
                str(longer), line, None, f"has more rows than {shorter}; the two files must correspond"
            )
        _shepherd_pair(judged, raw, raw_file)
        canonical = {"id": judged.raw.get("id"), "prompt": judged.raw.get("question"), "label": False}
        canonical.update(completion=judged.raw.get("answer"), judgment=judged.raw.get("feedback"))
        canonical["refinement"] = _get(raw.raw, "metadata.output_correct", raw, (str, type(None)))
        yield SourceRecord(canonical, judged.source, judged.line, origin)


def _top_ranked(question: Mapping[str, Any], record: SourceRecord, prefix: str) -> tuple[int, Any]:
    """The best answer: ``rankings[i]`` scores ``answers[i]``, higher is better, first on ties.

    This is how the official conversion reads it (``rankings.index(max(rankings))``).
    """
    answers = _get(question, "answers", record, (list,), prefix=prefix)
    rankings = _get(question, "rankings", record, (list,), prefix=prefix)
    if not answers or len(rankings) != len(answers):
        raise DataError(
            record.source,
            record.line,
            f"{prefix}rankings",
            f"expected one ranking per answer, got {len(rankings)} rankings for {len(answers)} answers",
        )
    if any(isinstance(r, bool) or not isinstance(r, int | float) or not _finite(r) for r in rankings):
        raise DataError(
            record.source, record.line, f"{prefix}rankings", f"expected finite numbers, got {short_repr(rankings)}"
        )
    best = rankings.index(max(rankings))
    return best, answers[best]


def _finite(value: int | float) -> bool:
    return isinstance(value, int) or math.isfinite(value)  # ints of any size compare fine


def _flag(obj: Mapping[str, Any], key: str, record: SourceRecord, prefix: str) -> bool:
    """A JSON boolean that may be missing or null (= false); a string "true" is an error, not a flag."""
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise DataError(record.source, record.line, prefix + key, f"expected true, false or null, got {type_name(value)}")
    return bool(value)


def _critiques_judgment(
    feedback: Mapping[str, Any], record: SourceRecord, prefix: str
) -> tuple[str, str | None]:
    """The joined critique texts and the last critique's refinement."""
    critiques = _get(feedback, "critiques", record, (list, type(None)), prefix=prefix) or []
    texts, refinement = [], None
    for i, critique in enumerate(critiques):
        at = f"{prefix}critiques[{i}]."
        texts.append(_get(critique, "text", record, (str,), prefix=at))
        refinement = _get(critique, "refinement", record, (str, type(None)), prefix=at)
    return CRITIQUE_SEPARATOR.join(texts).strip(), refinement


@register("openai-critiques")
def _openai_critiques(inputs: Sequence[Path], report: DropReport, options: Options) -> Iterator[SourceRecord]:
    """Saunders et al. (2022) summarisation critiques, converted like the official CUT script.

    Per question: the top-ranked answer (see :func:`_top_ranked`); skipped answers are dropped
    (``skipped``); instruction = passage + "\\n" + question. No critiques means positive (null
    judgment; the rating must then be 7). Otherwise the critique texts joined by a space are the
    judgment and the last critique's refinement the refinement; like the official script, an
    example whose last refinement is empty is dropped (``empty_refinement``). Labels are explicit
    (the rule is not used) and ``score`` is the human rating. ``critiques`` must be a list or null
    and ``skip`` a boolean or null; a record with no questions is dropped (``no_questions``).
    """
    for record in _objects(inputs, options.split):
        passage = _get(record.raw, "data.passage.text", record, (str,))
        questions = _get(record.raw, "data.questions", record, (list,))
        if not questions:
            report.drop("no_questions", location(record.source, record.line))
        for q, question in enumerate(questions):
            prefix = f"data.questions[{q}]."
            text = _get(question, "question", record, (str,), prefix=prefix)
            best, answer = _top_ranked(question, record, prefix)
            at = f"{prefix}answers[{best}]."
            where = f"{location(record.source, record.line)} question {q}"
            feedback = _get(answer, "feedback", record, (Mapping,), prefix=at)
            if _flag(feedback, "skip", record, f"{at}feedback."):
                report.drop("skipped", where)
                continue
            rating = _get(feedback, "rating", record, (int, float, type(None)), prefix=f"{at}feedback.")
            canonical = {"id": f"{_record_id(record)}-{q}", "prompt": f"{passage}\n{text}", "score": rating}
            canonical["completion"] = _get(answer, "answer", record, (str,), prefix=at)
            if not _get(feedback, "critiques", record, (list, type(None)), prefix=f"{at}feedback."):
                if rating != POSITIVE_RATING:
                    raise DataError(
                        record.source,
                        record.line,
                        f"{at}feedback.rating",
                        f"an answer without critiques must be rated {POSITIVE_RATING}, got {short_repr(rating)}",
                    )
                canonical.update(judgment=None, label=True)
            else:
                judgment, refinement = _critiques_judgment(feedback, record, f"{at}feedback.")
                if not refinement:
                    report.drop("empty_refinement", where)
                    continue
                canonical.update(judgment=judgment, label=False, refinement=refinement)
            yield SourceRecord(canonical, record.source, record.line, {"judgment": f"{at}feedback.critiques"})


@register("ultrafeedback")
def _ultrafeedback(inputs: Sequence[Path], report: DropReport, options: Options) -> Iterator[SourceRecord]:
    """UltraFeedback: one example per completion, judged by its critique and ``overall_score``.

    ``overall_score`` is on a 1-10 scale, so the rule's default threshold of 7 applies as is.
    Ids are ``"{record id or line}-{k}"`` for the k-th completion. A completion without a critique
    (missing or null) is positive only when its score reaches the rule's threshold; otherwise it is
    a negative with no judgment, which CUT cannot train on, and is dropped (``missing_judgment``)
    -- the canonical rule's "no judgment = satisfactory" must not make a score of 1 a positive. A
    record with no completions is dropped (``no_completions``).
    """
    positive_rule = dataclasses.replace(options.rule, null_judgment_positive=False)
    for record in _objects(inputs, options.split):
        instruction = _get(record.raw, "instruction", record, (str,))
        completions = _get(record.raw, "completions", record, (list,))
        if not completions:
            report.drop("no_completions", location(record.source, record.line))
        for k, completion in enumerate(completions):
            at = f"completions[{k}]."
            if not isinstance(completion, Mapping):
                raise DataError(
                    record.source, record.line, at[:-1], f"expected an object, got {type_name(completion)}"
                )
            origin = {"prompt": "instruction", "completion": f"{at}response"}
            origin.update(judgment=f"{at}critique", score=f"{at}overall_score")
            canonical = {"id": f"{_record_id(record)}-{k}", "prompt": instruction}
            canonical.update(
                completion=completion.get("response"),
                judgment=completion.get("critique"),
                score=completion.get("overall_score"),
            )
            if canonical["judgment"] is None:
                score = _get(completion, "overall_score", record, (int, float, type(None)), prefix=at)
                if score is None or (_finite(score) and not positive_rule.is_positive(None, score)):
                    report.drop("missing_judgment", f"{location(record.source, record.line)} completion {k}")
                    continue
                canonical["label"] = True  # (a non-finite score fails validation next)
            yield SourceRecord(canonical, record.source, record.line, origin)
