"""The canonical schema: validation errors, polarity, defects, duplicates."""

from __future__ import annotations

import math

import pytest

from cutalign.data.report import DropReport
from cutalign.data.schema import (
    FIELDS,
    DataError,
    PolarityRule,
    SourceRecord,
    canonical_examples,
    defect,
    normalise_record,
    prompt_text,
    validate_record,
)

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


def validate(raw, rule=None, origin=None, **kwargs):
    return validate_record(raw, source="data.jsonl", line=12, rule=rule, origin=origin, **kwargs)


def test_data_error_reads_file_line_field():
    err = DataError("data.jsonl", 12, "judgment", "expected a string or null, got int")
    assert str(err) == "data.jsonl:12: field 'judgment': expected a string or null, got int"
    assert (err.source, err.line, err.field) == ("data.jsonl", 12, "judgment")
    assert str(DataError("data.jsonl", None, None, "no such file")) == "data.jsonl: no such file"
    assert isinstance(err, ValueError)


def test_minimal_record_becomes_full_canonical_dict():
    example = validate({"prompt": "Q", "completion": "A", "judgment": None, "id": 7, "extra": [1]},
                       extra_fields="ignore")
    assert example == {
        "id": "7",
        "prompt": "Q",
        "completion": "A",
        "judgment": None,
        "label": True,
        "score": None,
        "refinement": None,
    }
    assert tuple(example) == FIELDS


def test_conversational_prompt_and_assistant_message_completion():
    raw = {
        "prompt": [{**CHAT[0], "name": "sys"}, CHAT[1]],
        "completion": [{"role": "assistant", "content": "Hello."}],
        "judgment": "Too short.",
        "score": 3,
        "refinement": "Hello! How can I help?",
    }
    example = validate(raw)
    assert example["prompt"] == CHAT  # extra message keys are not kept: Arrow needs one struct type
    assert example["completion"] == "Hello."
    assert (example["label"], example["score"]) == (False, 3.0)
    assert prompt_text(example["prompt"]) == "Be brief.\nHi?"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ([1, 2], None, "expected a JSON object, got list"),
        ({"completion": "A"}, "prompt", "required field is missing or null"),
        ({"prompt": "Q", "completion": None}, "completion", "required field is missing or null"),
        ({"prompt": 5, "completion": "A"}, "prompt", "expected a string or a list of messages, got int"),
        ({"prompt": "Q", "completion": {"text": "A"}}, "completion", "got object"),
        ({"prompt": "Q", "completion": "A", "judgment": 3}, "judgment", "expected a string or null, got int"),
        (
            {"prompt": "Q", "completion": "A", "label": "yes"},
            "label",
            "expected true, false or null, got string",
        ),
        ({"prompt": "Q", "completion": "A", "label": 1}, "label", "got int"),
        ({"prompt": "Q", "completion": "A", "score": "7"}, "score", "expected a number or null, got string"),
        ({"prompt": "Q", "completion": "A", "score": True}, "score", "got bool"),
        ({"prompt": "Q", "completion": "A", "score": math.nan}, "score", "expected a finite number, got nan"),
        ({"prompt": "Q", "completion": "A", "refinement": ["x"]}, "refinement", "got list"),
        (
            {"prompt": "Q", "completion": "A", "id": 1.5},
            "id",
            "expected a string, an integer or null, got float",
        ),
        ({"prompt": "Q", "completion": "A", "label": False}, "judgment", "needs a judgment, got null"),
        ({"prompt": ["Hi"], "completion": "A"}, "prompt[0]", "expected a message object, got string"),
        ({"prompt": [{"role": "bot", "content": "Hi"}], "completion": "A"}, "prompt[0].role", "got 'bot'"),
        ({"prompt": [{"role": "user", "content": 1}], "completion": "A"}, "prompt[0].content", "got int"),
        (
            {"prompt": [*CHAT, {"role": "assistant", "content": "x"}], "completion": "A"},
            "prompt",
            "end with a user turn",
        ),
        ({"prompt": "Q", "completion": [{"role": "user", "content": "A"}]}, "completion", "roles ['user']"),
        ({"instruction": "Q", "output": "A"}, "prompt", "may be cut-alpaca data"),
    ],
)
def test_malformed_records_raise_naming_the_field(raw, field, message):
    with pytest.raises(DataError) as info:
        validate(raw)
    assert (info.value.source, info.value.line, info.value.field) == ("data.jsonl", 12, field)
    assert message in info.value.message


def test_origin_renames_fields_in_errors():
    with pytest.raises(DataError) as info:
        validate({"prompt": "Q", "completion": 3}, origin={"completion": "completions[2].response"})
    assert info.value.field == "completions[2].response"


def test_polarity_rule_defaults_follow_official_code():
    rule = PolarityRule()
    assert rule.is_positive(None, None)
    assert rule.is_positive("Some flaws.", 7.0)
    assert not rule.is_positive("Some flaws.", 6.99)
    assert not rule.is_positive("The response is perfect.", None)


def test_polarity_rule_options():
    assert not PolarityRule(null_judgment_positive=False).is_positive(None, None)
    assert PolarityRule(null_judgment_positive=False).is_positive(None, 9)
    assert not PolarityRule(score_threshold=None).is_positive("x", 10)
    perfect = PolarityRule(positive_pattern=r"^The response is perfect\.$")
    assert perfect.is_positive("The response is perfect.", None)
    assert not perfect.is_positive("The response is almost perfect, but", None)
    with pytest.raises(ValueError, match="not a regex"):
        PolarityRule(positive_pattern="(")


def test_explicit_label_beats_rule():
    assert validate({"prompt": "Q", "completion": "A", "judgment": None, "label": True})["label"] is True
    assert (
        validate({"prompt": "Q", "completion": "A", "judgment": "Bad.", "score": 9, "label": False})["label"]
        is False
    )
    assert validate({"prompt": "Q", "completion": "A", "judgment": "Good.", "label": True})["label"] is True


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"prompt": "  \n", "completion": "A"}, "empty_prompt"),
        ({"prompt": [], "completion": "A"}, "empty_prompt"),
        ({"prompt": [{"role": "user", "content": " "}], "completion": "A"}, "empty_prompt"),
        ({"prompt": "Q", "completion": " \t"}, "empty_completion"),
        ({"prompt": "Q", "completion": "A", "judgment": "$ERROR$"}, "judge_error"),
        ({"prompt": "Q", "completion": "A", "judgment": "$ERROR$", "label": True}, "judge_error"),
        ({"prompt": "Q", "completion": "A", "judgment": "  "}, "empty_judgment"),
        ({"prompt": "Q", "completion": "A", "judgment": "", "label": False}, "empty_judgment"),
    ],
)
def test_defects_are_drop_reasons(raw, reason):
    assert normalise_record(raw, source="f", line=1) == reason


def test_derived_negative_without_judgment_is_dropped_not_an_error():
    rule = PolarityRule(null_judgment_positive=False)
    assert (
        normalise_record({"prompt": "Q", "completion": "A"}, source="f", line=1, rule=rule) == "no_judgment"
    )
    assert defect(validate({"prompt": "Q", "completion": "A", "judgment": "Fine."})) is None


def test_canonical_examples_drops_defects_and_exact_duplicates_only():
    rows = [
        {"id": 1, "prompt": "Q", "completion": "A", "judgment": "Wrong."},
        {"id": 2, "prompt": "Q", "completion": "A", "judgment": "Wrong."},  # same but id: duplicate
        {"id": 3, "prompt": "Q", "completion": "A", "judgment": "Also wrong."},  # another judgment: kept
        {"id": 4, "prompt": "Q", "completion": ""},
        {"id": 5, "prompt": "Q", "completion": "A", "judgment": "$ERROR$"},
    ]
    report = DropReport()
    records = [SourceRecord(row, "f.jsonl", n) for n, row in enumerate(rows, start=1)]
    kept = list(canonical_examples(records, PolarityRule(), report))
    assert [item.example["id"] for item in kept] == ["1", "3"]
    assert [(item.source, item.line) for item in kept] == [("f.jsonl", 1), ("f.jsonl", 3)]
    assert report.as_dict() == {"duplicate": 1, "empty_completion": 1, "judge_error": 1}
    assert report.samples["duplicate"] == ["f.jsonl:2 (id 2) = f.jsonl:1 (id 1)"]


def test_canonical_examples_stops_at_first_malformed_record():
    records = [SourceRecord({"prompt": "Q", "completion": "A"}, "f", 1), SourceRecord("oops", "f", 2)]
    with pytest.raises(DataError, match=r"^f:2: expected a JSON object, got string$"):
        list(canonical_examples(records, PolarityRule(), DropReport()))


def test_unknown_key_is_an_error_with_the_close_match():
    """A misspelled "judgement" must not read as a null judgment (a negative turned positive)."""
    raw = {"prompt": "Q", "completion": "A", "judgement": "Wrong.", "label": None}
    with pytest.raises(DataError) as info:
        validate(raw)
    assert (info.value.line, info.value.field) == (12, "judgement")
    assert "did you mean 'judgment'?" in info.value.message
    with pytest.raises(DataError, match="field 'scor': unknown field; did you mean 'score'"):
        validate({"prompt": "Q", "completion": "A", "scor": 3})
    with pytest.raises(DataError, match="field 'weird': unknown field; known fields: id, prompt"):
        validate({"prompt": "Q", "completion": "A", "weird": 3})
    assert validate(raw, extra_fields="ignore")["label"] is True  # the explicit opt-out
    with pytest.raises(ValueError, match="extra_fields must be one of error, ignore"):
        validate(raw, extra_fields="warn")


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"prompt": "Q", "completion": "A", "score": 10**400}, "score", "integer too large"),
        ({"prompt": "Q\ud800", "completion": "A"}, "prompt", "lone surrogate"),
        ({"prompt": "Q", "completion": "\udfff"}, "completion", "lone surrogate"),
        ({"prompt": "Q", "completion": "A", "judgment": "\ud800x"}, "judgment", "lone surrogate"),
        ({"prompt": [{"role": "user", "content": "\ud800"}], "completion": "A"}, "prompt[0].content", "surrogate"),
        ({"prompt": [{"role": "x" * 500, "content": "c"}], "completion": "A"}, "prompt[0].role", "..."),
        ({"id": 10**5000, "prompt": "Q", "completion": "A"}, "id", "at most 4300 digits"),
    ],
)
def test_values_python_cannot_handle_are_data_errors(raw, field, message):
    with pytest.raises(DataError) as info:
        validate(raw)
    assert info.value.field == field and message in info.value.message
    assert len(str(info.value)) < 300


def test_duplicate_ids_with_different_content_are_a_notice():
    rows = [{"id": "a", "prompt": "Q", "completion": "A"}, {"id": "a", "prompt": "Q", "completion": "B"},
            {"id": "a", "prompt": "Q", "completion": "A"}, {"id": "b", "prompt": "Q", "completion": "C"}]
    records = [SourceRecord(row, "d.jsonl", i + 1) for i, row in enumerate(rows)]
    report = DropReport()
    kept = list(canonical_examples(records, PolarityRule(), report))
    assert [item.example["completion"] for item in kept] == ["A", "B", "C"]
    assert report.as_dict() == {"duplicate": 1} and report.notices == {"duplicate_id": 1}
    assert report.notice_samples["duplicate_id"] == ["d.jsonl:2 (id a) differs from d.jsonl:1 (id a)"]
