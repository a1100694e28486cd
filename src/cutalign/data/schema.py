"""The canonical judged example, and the one code path that validates and cleans raw records.

A canonical example is a plain dict with exactly the keys of :data:`FIELDS`::

    id          str | None        source id (ints are stringified)
    prompt      str | list[dict]  instruction, or chat messages {"role", "content"} ending with a user turn
    completion  str               the judged response (a one-assistant-message list is accepted on input)
    judgment    str | None        natural-language judgment; null = satisfactory
    label       bool              True = positive (Align-P), False = negative (needs correction)
    score       float | None      optional scalar (reward baselines)
    refinement  str | None        optional corrected response (ILF baselines)

Two kinds of bad input are kept apart. *Malformed* records (wrong types, missing fields, bad
message lists, a negative label without a judgment) raise :class:`DataError`, because silently
skipping them hides a broken converter or file. *Defective* but well-formed records that CUT
cannot train on (empty texts, the judge's failure marker, exact duplicates) are dropped and
counted in a :class:`~cutalign.data.report.DropReport`. Loaders and converters all go through
:func:`canonical_examples`, so both kinds are treated the same everywhere. Texts are kept
verbatim (no stripping): the templates decide about whitespace.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, NoReturn

from cutalign.data.report import DropReport

FIELDS = ("id", "prompt", "completion", "judgment", "label", "score", "refinement")
METADATA_FIELDS = ("judge",)  # known but not canonical: who judged (`cutalign judge`); not loaded
ROLES = ("system", "user", "assistant")
JUDGE_ERROR_MARKER = "$ERROR$"  # what the official online pipeline writes when the GPT-4 judge failed
ExtraFields = Literal["error", "ignore"]
EXTRA_FIELDS = ("error", "ignore")
DUPLICATE_ID_NOTICE = "duplicate_id"  # different examples sharing one id: kept, but worth a word


class DataError(ValueError):
    """Malformed input, located by file, line and field.

    ``line`` is 1-based: the line of a JSONL record, the line where a JSON array element starts,
    or the row of a Parquet file or dataset; None for problems with a whole file.
    """

    def __init__(self, source: str, line: int | None, field: str | None, message: str) -> None:
        self.source, self.line, self.field, self.message = source, line, field, message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = location(self.source, self.line)
        what = f" field '{self.field}':" if self.field else ""
        return f"{where}:{what} {self.message}"


def location(source: str, line: int | None) -> str:
    """``source:line``, or just ``source`` when the whole file is meant."""
    return source if line is None else f"{source}:{line}"


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about arbitrary input."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # integers of more than 4300 digits, very deep nesting
        return f"a {type_name(value)} too large to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
    """JSON-flavoured type names for error messages (``null``, ``string``, ``object``...)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


@dataclass(frozen=True)
class PolarityRule:
    """Derives ``label`` when a record has none.

    Positive when the judgment is null (and ``null_judgment_positive``), or the score reaches
    ``score_threshold`` (None disables it), or ``positive_pattern`` (a regex, ``re.search``) matches
    the judgment. The defaults are the official CUT code's rule: ``judgment is None or score >= 7``.
    The real online data also has judgments like "The response is perfect." that this rule counts
    as negative; ``positive_pattern=r"^The response is perfect\\.$"`` would change that.
    """

    score_threshold: float | None = 7.0
    null_judgment_positive: bool = True
    positive_pattern: str | None = None

    def __post_init__(self) -> None:
        if self.positive_pattern is not None:
            try:
                re.compile(self.positive_pattern)
            except re.error as err:
                raise ValueError(f"positive_pattern {self.positive_pattern!r} is not a regex: {err}") from err

    def is_positive(self, judgment: str | None, score: float | None) -> bool:
        if judgment is None and self.null_judgment_positive:
            return True
        if self.score_threshold is not None and score is not None and score >= self.score_threshold:
            return True
        return (
            judgment is not None
            and self.positive_pattern is not None
            and re.search(self.positive_pattern, judgment) is not None
        )


class SourceRecord(NamedTuple):
    """A raw record and where it came from.

    ``origin`` maps canonical field names to the source format's names (e.g. ``completion`` ->
    ``output``) so that a converter's errors name the field the user can find in their file.
    """

    raw: Any
    source: str
    line: int | None
    origin: Mapping[str, str] | None = None


class Located(NamedTuple):
    """A canonical example and where it came from (for later errors, e.g. mixed prompt types)."""

    example: dict[str, Any]
    source: str
    line: int | None


@dataclass(frozen=True)
class _Where:
    source: str
    line: int | None
    origin: Mapping[str, str] | None

    def error(self, field: str | None, message: str) -> NoReturn:
        if field is not None and self.origin:
            head, dot, rest = field.partition(".")
            field = self.origin.get(field) or self.origin.get(head, head) + dot + rest
        raise DataError(self.source, self.line, field, message)


def check_text(value: str, field: str, where: _Where) -> str:
    """``value`` when it is valid Unicode; JSON allows lone surrogates (``"\\ud800"``), which no
    tokenizer or UTF-8 writer accepts, so they are an error here rather than a crash later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        where.error(field, f"invalid Unicode at character {err.start}: a lone surrogate {value[err.start]!r}")
    return value


def check_keys(
    raw: Mapping[str, Any], known: Iterable[str], where: _Where, extra_fields: ExtraFields = "error"
) -> None:
    """Unknown keys are an error (a misspelled ``judgement`` would otherwise read as a null judgment,
    turning a negative into a positive), naming the close match; ``extra_fields="ignore"`` allows them."""
    if extra_fields not in EXTRA_FIELDS:
        raise ValueError(f"extra_fields must be one of {', '.join(EXTRA_FIELDS)}, got {extra_fields!r}")
    if extra_fields == "ignore":
        return
    known = list(known)
    for key in raw:
        if key not in known:
            shown = key if isinstance(key, str) else repr(key)
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            where.error(
                shown,
                f"unknown field; {hint}known fields: {', '.join(known)} "
                "(extra_fields='ignore' / --extra_fields ignore allows extra fields)",
            )


def _optional_str(raw: Mapping[str, Any], key: str, where: _Where) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        where.error(key, f"expected a string or null, got {type_name(value)}")
    return value if value is None else check_text(value, key, where)


def _messages(value: list[Any], field: str, where: _Where) -> list[dict[str, str]]:
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            where.error(f"{field}[{i}]", f"expected a message object, got {type_name(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            where.error(f"{field}[{i}].role", f"expected one of {', '.join(ROLES)}, got {short_repr(role)}")
        if not isinstance(content, str):
            where.error(f"{field}[{i}].content", f"expected a string, got {type_name(content)}")
        check_text(content, f"{field}[{i}].content", where)
        messages.append({"role": role, "content": content})
    return messages


def _prompt(value: Any, where: _Where) -> str | list[dict[str, str]]:
    if isinstance(value, str):
        return check_text(value, "prompt", where)
    if not isinstance(value, list):
        where.error("prompt", f"expected a string or a list of messages, got {type_name(value)}")
    messages = _messages(value, "prompt", where)
    if messages and messages[-1]["role"] != "user":
        where.error(
            "prompt", f"a conversational prompt must end with a user turn, got {messages[-1]['role']!r}"
        )
    return messages


def _completion(value: Any, where: _Where) -> str:
    if isinstance(value, str):
        return check_text(value, "completion", where)
    got = type_name(value)
    if isinstance(value, list):
        messages = _messages(value, "completion", where)
        if len(messages) == 1 and messages[0]["role"] == "assistant":
            return messages[0]["content"]
        got = f"messages with roles {[m['role'] for m in messages]}"
    where.error("completion", f"expected a string or a list of one assistant message, got {got}")


def _score(value: Any, where: _Where) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        where.error("score", f"expected a number or null, got {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:  # JSON integers have no size limit; 10**400 is no score
        where.error("score", "expected a finite number, got an integer too large for a float")
    if not math.isfinite(number):
        where.error("score", f"expected a finite number, got {value}")
    return number


def _id(value: Any, where: _Where) -> str | None:
    if value is None or isinstance(value, str):
        return value if value is None else check_text(value, "id", where)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # Python refuses to print integers of more than 4300 digits
            where.error("id", "expected a string or an integer of at most 4300 digits")
    where.error("id", f"expected a string, an integer or null, got {type_name(value)}")


def validate_record(
    raw: Any,
    *,
    source: str,
    line: int | None,
    rule: PolarityRule | None = None,
    origin: Mapping[str, str] | None = None,
    extra_fields: ExtraFields = "error",
) -> dict[str, Any]:
    """The canonical example for ``raw``; raises :class:`DataError` when it is malformed.

    Unknown keys are an error (see :func:`check_keys`) unless ``extra_fields="ignore"``; records
    built by a converter (``origin`` given) hold canonical keys only, so are not checked. A missing or null ``label`` is derived with ``rule``; an explicit
    ``label: false`` with a null judgment is an error, since CUT cannot train on a negative
    without the judgment that says what is wrong.
    """
    where = _Where(source, line, origin)
    if not isinstance(raw, Mapping):
        where.error(None, f"expected a JSON object, got {type_name(raw)}")
    for key in ("prompt", "completion"):
        if raw.get(key) is None:
            close = difflib.get_close_matches(key, [k for k in raw if isinstance(k, str)], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close and close[0] != key else ""
            if "instruction" in raw:
                hint = "; the record has 'instruction', so it may be cut-alpaca data"
            where.error(key, f"required field is missing or null{hint}")
    if origin is None:
        check_keys(raw, (*FIELDS, *METADATA_FIELDS), where, extra_fields)
    judgment = _optional_str(raw, "judgment", where)
    score = _score(raw.get("score"), where)
    label = raw.get("label")
    if label is None:
        label = (rule or PolarityRule()).is_positive(judgment, score)
    elif not isinstance(label, bool):
        where.error("label", f"expected true, false or null, got {type_name(label)}")
    elif not label and judgment is None:
        where.error("judgment", "a negative example (label false) needs a judgment, got null")
    return {
        "id": _id(raw.get("id"), where),
        "prompt": _prompt(raw["prompt"], where),
        "completion": _completion(raw["completion"], where),
        "judgment": judgment,
        "label": label,
        "score": score,
        "refinement": _optional_str(raw, "refinement", where),
    }


def prompt_text(prompt: str | list[dict[str, str]]) -> str:
    """A prompt's text: the string itself, or the message contents joined by newlines."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def defect(example: Mapping[str, Any]) -> str | None:
    """Why a well-formed canonical example is unusable for training, or None when it is fine.

    ``no_judgment`` arises only when the rule derives a negative from a null judgment
    (``null_judgment_positive=False``); ``empty_judgment`` is a negative whose judgment is blank.
    """
    judgment = example["judgment"]
    if not prompt_text(example["prompt"]).strip():
        return "empty_prompt"
    if not example["completion"].strip():
        return "empty_completion"
    if judgment is not None and judgment.strip() == JUDGE_ERROR_MARKER:
        return "judge_error"
    if not example["label"] and judgment is None:
        return "no_judgment"
    if not example["label"] and not judgment.strip():
        return "empty_judgment"
    return None


def normalise_record(
    raw: Any,
    *,
    source: str,
    line: int | None,
    rule: PolarityRule | None = None,
    origin: Mapping[str, str] | None = None,
) -> dict[str, Any] | str:
    """The canonical example, or the drop reason when it is defective (see :func:`defect`)."""
    example = validate_record(raw, source=source, line=line, rule=rule, origin=origin)
    return defect(example) or example


def _fingerprint(example: Mapping[str, Any]) -> bytes:
    content = {key: example[key] for key in FIELDS if key != "id"}
    return hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=16).digest()


def canonical_examples(
    records: Iterable[SourceRecord],
    rule: PolarityRule,
    report: DropReport,
    extra_fields: ExtraFields = "error",
) -> Iterator[Located]:
    """Validate, drop defects, and drop exact duplicates, recording every drop in ``report``.

    A duplicate is an example equal to an earlier one in every field but ``id``; the first is
    kept. The same response with a *different* judgment is kept: two annotators' judgments are
    both signal (Shepherd has one such pair, ids 15 and 16). Different examples sharing an id are
    kept too, and counted as the notice ``duplicate_id`` (ids name examples in later reports).
    """
    first_seen: dict[bytes, str] = {}
    by_id: dict[str, tuple[bytes, str]] = {}
    for record in records:
        example = validate_record(
            record.raw,
            source=record.source,
            line=record.line,
            rule=rule,
            origin=record.origin,
            extra_fields=extra_fields,
        )
        where = location(record.source, record.line)
        if example["id"] is not None:
            where += f" (id {example['id']})"
        reason = defect(example)
        if reason is not None:
            report.drop(reason, where)
            continue
        key = _fingerprint(example)
        if key in first_seen:
            report.drop("duplicate", f"{where} = {first_seen[key]}")
            continue
        first_seen[key] = where
        if example["id"] is not None:
            earlier = by_id.setdefault(example["id"], (key, where))
            if earlier[0] != key:
                report.notice(DUPLICATE_ID_NOTICE, f"{where} differs from {earlier[1]}")
        yield Located(example, record.source, record.line)
