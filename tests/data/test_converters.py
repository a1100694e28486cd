"""Converters: exact counts on the real data, exact output on hand-made fixtures, every bad input."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from cutalign.data.converters import CONVERTERS, SHEPHERD_FOR_MODEL, SHEPHERD_RAW, convert, load_judged
from cutalign.data.schema import DataError, PolarityRule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def counts(examples: list[dict]) -> tuple[int, int, int]:
    labels = Counter(example["label"] for example in examples)
    return len(examples), labels[True], labels[False]


def test_registry_and_unknown_format():
    assert set(CONVERTERS) == {"canonical", "cut-alpaca", "shepherd", "openai-critiques", "ultrafeedback"}
    with pytest.raises(ValueError, match="unknown format 'nope'; known formats: canonical, cut-alpaca"):
        convert("nope", [])


# --- cut-alpaca: the official CUT online data -------------------------------------------------

# (iteration, kept, positive, negative, drops); iter1 has 713 null judgments and 47 "$ERROR$".
CUT_ONLINE = [
    (1, 953, 713, 240, {"judge_error": 47}),
    (2, 997, 769, 228, {"judge_error": 3}),
    (3, 1000, 758, 242, {}),
    (4, 999, 755, 244, {"judge_error": 1}),
    (5, 1000, 754, 246, {}),
]


@pytest.mark.parametrize(("iteration", "kept", "positive", "negative", "drops"), CUT_ONLINE)
def test_cut_online_iterations_exact_counts(cut_online_dir, iteration, kept, positive, negative, drops):
    path = cut_online_dir / f"train-alpaca-sample-iter{iteration}.json"
    examples, report = convert("cut-alpaca", [path])
    assert counts(examples) == (kept, positive, negative)
    assert report.as_dict() == drops
    assert kept + report.total == 1000


def test_cut_online_fields_and_input_folding(cut_online_dir):
    examples, report = convert("cut-alpaca", [cut_online_dir / "train-alpaca-sample-iter1.json"])
    by_id = {example["id"]: example for example in examples}
    assert by_id["2"]["prompt"] == (
        "Convert the following binary code to ASCII characters.\n01110101 01100001 01110010 01101001 01110100"
    )
    assert by_id["0"]["prompt"] == "What would be the best type of exercise for a person who has arthritis?"
    assert by_id["0"]["judgment"] is None and by_id["0"]["label"] is True
    assert by_id["1"]["judgment"].startswith("T") and by_id["1"]["label"] is False
    assert "33" not in by_id  # "$ERROR$"
    assert report.samples["judge_error"][0] == f"{cut_online_dir}/train-alpaca-sample-iter1.json:233 (id 33)"


def test_cut_online_all_iterations_as_one_dataset(cut_online_dir):
    judged = load_judged(cut_online_dir, "cut-alpaca")
    dataset, report = judged.dataset, judged.report
    assert (len(dataset), sum(dataset["label"])) == (4949, 3749)
    assert report.as_dict() == {"judge_error": 51}
    assert judged.sources == [str(cut_online_dir)] and judged.describe() == "kept 4949 of 5000 (51 judge errors)"
    # Every iteration file numbers its rows 0..999: different examples share ids, which is worth a word.
    assert judged.notices["duplicate_id"] > 3000


def test_cut_alpaca_refinement_score_and_rule(tmp_path):
    rows = [
        {
            "id": 1,
            "instruction": "Q",
            "input": None,
            "output": "A",
            "judgment": "Meh.",
            "score": 8,
            "i_ans": "B",
        },
        {"id": 2, "instruction": "Q", "input": "", "output": "A2", "judgment": "Meh."},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    examples, _ = convert("cut-alpaca", [path])
    assert examples[0] == {
        "id": "1",
        "prompt": "Q",
        "completion": "A",
        "judgment": "Meh.",
        "label": True,
        "score": 8.0,
        "refinement": "B",
    }
    assert examples[1]["label"] is False
    assert [e["label"] for e in convert("cut-alpaca", [path], PolarityRule(score_threshold=9))[0]] == [
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"instruction": 3, "output": "A"}, "instruction", "expected a string, got int"),
        ({"instruction": "Q", "input": 2, "output": "A"}, "input", "expected a string or null, got int"),
        ({"instruction": "Q", "output": None}, "output", "required field is missing or null"),
        ({"instruction": "Q", "output": "A", "judgment": 1}, "judgment", "got int"),
        ({"instruction": "Q", "output": "A", "i_ans": 1}, "i_ans", "got int"),
        ("just text", None, "expected a JSON object, got string"),
    ],
)
def test_cut_alpaca_malformed(tmp_path, row, field, message):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": "ok", "output": "fine"}, row], indent=1), encoding="utf-8")
    with pytest.raises(DataError) as info:
        convert("cut-alpaca", [path])
    assert (info.value.line, info.value.field) == (6, field)
    assert message in info.value.message


# --- shepherd ---------------------------------------------------------------------------------


def test_shepherd_real_data(shepherd_dir):
    examples, report = convert("shepherd", [shepherd_dir])
    assert counts(examples) == (1317, 0, 1317)
    assert not report  # nothing dropped; ids 15 and 16 judge the same answer differently: both kept
    first = examples[0]
    assert first["id"] == "0" and first["prompt"].startswith("Jolene and Phil have four children")
    assert first["judgment"].startswith("Firstly, The math is off")
    assert first["refinement"].startswith("Their 1st child was born 15 years ago")
    assert all(e["refinement"] for e in examples)
    swapped, _ = convert("shepherd", [shepherd_dir / SHEPHERD_RAW, shepherd_dir / SHEPHERD_FOR_MODEL])
    assert swapped == examples  # the two files are recognised by name, in either order


def shepherd_rows(n: int) -> tuple[list[dict], list[dict]]:
    judged = [
        {"id": i, "dataset": "X", "question": f"Q{i}", "answer": f"A{i}", "feedback": f"F{i}"}
        for i in range(n)
    ]
    raw = [
        {"id": i, "metadata": {"context": f"Q{i}", "output_candidate": f"A{i}", "output_correct": f"C{i}"}}
        for i in range(n)
    ]
    return judged, raw


def shepherd_dir_with(tmp_path: Path, judged: list, raw: list) -> Path:
    write_jsonl(tmp_path / SHEPHERD_FOR_MODEL, judged)
    write_jsonl(tmp_path / SHEPHERD_RAW, raw)
    return tmp_path


def test_shepherd_small_example(tmp_path):
    judged, raw = shepherd_rows(2)
    examples, _ = convert("shepherd", [shepherd_dir_with(tmp_path, judged, raw)])
    assert examples[1] == {
        "id": "1",
        "prompt": "Q1",
        "completion": "A1",
        "judgment": "F1",
        "label": False,
        "score": None,
        "refinement": "C1",
    }


def test_shepherd_rows_out_of_order(tmp_path):
    judged, raw = shepherd_rows(3)
    raw[1], raw[2] = raw[2], raw[1]
    with pytest.raises(DataError) as info:
        convert("shepherd", [shepherd_dir_with(tmp_path, judged, raw)])
    assert (info.value.source, info.value.line, info.value.field) == (
        str(tmp_path / SHEPHERD_FOR_MODEL),
        2,
        "id",
    )
    assert f"does not match id of {tmp_path / SHEPHERD_RAW}:2" in info.value.message


@pytest.mark.parametrize(
    ("key", "value", "field"), [("context", "other", "question"), ("output_candidate", "other", "answer")]
)
def test_shepherd_text_mismatch(tmp_path, key, value, field):
    judged, raw = shepherd_rows(2)
    raw[1]["metadata"][key] = value
    with pytest.raises(DataError) as info:
        convert("shepherd", [shepherd_dir_with(tmp_path, judged, raw)])
    assert (info.value.line, info.value.field) == (2, field)
    assert f"metadata.{key} of {tmp_path / SHEPHERD_RAW}:2" in info.value.message


def test_shepherd_row_count_mismatch_and_bad_fields(tmp_path):
    judged, raw = shepherd_rows(3)
    with pytest.raises(DataError, match=re.escape(f"has more rows than {tmp_path / SHEPHERD_RAW}")) as info:
        convert("shepherd", [shepherd_dir_with(tmp_path, judged, raw[:2])])
    assert info.value.line == 3
    raw[0]["metadata"]["output_correct"] = 5
    with pytest.raises(
        DataError, match=r"field 'metadata\.output_correct': expected a string or null, got int"
    ):
        convert("shepherd", [shepherd_dir_with(tmp_path, judged, raw)])
    judged[0]["feedback"] = None
    raw[0]["metadata"]["output_correct"] = None
    with pytest.raises(DataError, match="field 'feedback': a negative example"):
        convert("shepherd", [shepherd_dir_with(tmp_path, judged, raw)])


def test_shepherd_missing_files(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / SHEPHERD_FOR_MODEL}: no such file")):
        convert("shepherd", [tmp_path])
    with pytest.raises(DataError, match="shepherd needs a folder or the files"):
        convert("shepherd", [tmp_path / "a", tmp_path / "b", tmp_path / "c"])


# --- openai-critiques (Saunders et al. 2022) ---------------------------------------------------


def test_openai_critiques_fixture_exact_output():
    examples, report = convert("openai-critiques", [FIXTURES / "openai_critiques.jsonl"])
    assert examples == [
        {
            "id": "1-0",
            "prompt": "Mia planted a tree in the yard.\nSummarize the passage.",
            "completion": "Mia planted a tree.",  # answers[1]: rankings [1, 3] score the answers
            "judgment": None,
            "label": True,
            "score": 7.0,
            "refinement": None,
        },
        {
            "id": "1-1",
            "prompt": "Mia planted a tree in the yard.\nWho planted the tree?",
            "completion": "Tom.",
            "judgment": "Wrong person: it was Mia. Too short.",
            "label": False,
            "score": 1.0,
            "refinement": "Mia planted the tree.",
        },
        {
            "id": "3-1",
            "prompt": "Bees make honey from nectar.\nFrom what?",
            "completion": "From nectar.",  # a tie goes to the first answer
            "judgment": None,
            "label": True,
            "score": 7.0,
            "refinement": None,
        },
        {
            "id": "doc-4-0",
            "prompt": "Ice melts above zero degrees Celsius.\nWhen does ice melt?",
            "completion": "Below zero.",
            "judgment": "It melts above zero.",
            "label": False,
            "score": 3.0,
            "refinement": "Above zero degrees Celsius.",
        },
    ]
    assert report.as_dict() == {"empty_completion": 1, "empty_refinement": 1, "skipped": 1}
    assert report.samples["skipped"] == [f"{FIXTURES / 'openai_critiques.jsonl'}:2 question 0"]


def critiques_line(answer: dict, rankings: list | None = None) -> dict:
    question = {"question": "Q?", "rankings": rankings or [1], "answers": [answer]}
    return {"data": {"passage": {"text": "P."}, "questions": [question]}}


GOOD_ANSWER = {"answer": "A.", "feedback": {"rating": 2, "critiques": [{"text": "Bad.", "refinement": "B."}]}}


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ({"data": {"questions": []}}, "data.passage.text", "expected a string, got null"),
        (critiques_line(GOOD_ANSWER, [1, 2]), "data.questions[0].rankings", "got 2 rankings for 1 answers"),
        (
            critiques_line(GOOD_ANSWER, ["first"]),
            "data.questions[0].rankings",
            "expected finite numbers, got ['first']",
        ),
        (
            critiques_line({"answer": "A.", "feedback": {"rating": 5, "critiques": []}}),
            "data.questions[0].answers[0].feedback.rating",
            "without critiques must be rated 7, got 5",
        ),
        (
            critiques_line({"answer": "A.", "feedback": {"rating": 2, "critiques": [{"text": None}]}}),
            "data.questions[0].answers[0].feedback.critiques[0].text",
            "expected a string, got null",
        ),
        (
            critiques_line({"answer": 3, "feedback": {"rating": 7}}),
            "data.questions[0].answers[0].answer",
            "got int",
        ),
        (
            critiques_line({"answer": "A."}),
            "data.questions[0].answers[0].feedback",
            "expected an object, got null",
        ),
    ],
)
def test_openai_critiques_malformed(tmp_path, line, field, message):
    path = write_jsonl(tmp_path / "c.jsonl", [critiques_line(GOOD_ANSWER), line])
    with pytest.raises(DataError) as info:
        convert("openai-critiques", [path])
    assert (info.value.line, info.value.field) == (2, field)
    assert message in info.value.message


# --- ultrafeedback ----------------------------------------------------------------------------


def test_ultrafeedback_fixture_exact_output():
    examples, report = convert("ultrafeedback", [FIXTURES / "ultrafeedback.jsonl"])
    assert [(e["id"], e["label"], e["score"]) for e in examples] == [
        ("1-0", True, 8.5),
        ("1-1", False, 3.0),
        ("1-2", True, 7.0),  # overall_score 7 reaches the default threshold
        ("uf-2-2", False, 6.9),
    ]
    assert examples[1] == {
        "id": "1-1",
        "prompt": "Name a primary color.",
        "completion": "Green is the only primary color.",
        "judgment": "Wrong: red, yellow and blue are the primary colors.",
        "label": False,
        "score": 3.0,
        "refinement": None,
    }
    assert report.as_dict() == {"empty_completion": 1, "empty_judgment": 1, "no_completions": 1}
    assert report.samples["no_completions"] == [f"{FIXTURES / 'ultrafeedback.jsonl'}:3"]
    strict, _ = convert(
        "ultrafeedback", [FIXTURES / "ultrafeedback.jsonl"], PolarityRule(score_threshold=8.0)
    )
    assert [e["label"] for e in strict] == [True, False, False, False]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ({"completions": []}, "instruction", "expected a string, got null"),
        ({"instruction": "Q", "completions": {"a": 1}}, "completions", "expected a list, got object"),
        ({"instruction": "Q", "completions": ["text"]}, "completions[0]", "expected an object, got string"),
        (
            {"instruction": "Q", "completions": [{"response": "A", "critique": "C", "overall_score": "8"}]},
            "completions[0].overall_score",
            "expected a number or null, got string",
        ),
        (
            {"instruction": "Q", "completions": [{"response": 1, "critique": "C", "overall_score": 8}]},
            "completions[0].response",
            "got int",
        ),
    ],
)
def test_ultrafeedback_malformed(tmp_path, line, field, message):
    path = write_jsonl(tmp_path / "u.jsonl", [{"instruction": "ok", "completions": []}, line])
    with pytest.raises(DataError) as info:
        convert("ultrafeedback", [path])
    assert (info.value.line, info.value.field) == (2, field)
    assert message in info.value.message


def test_canonical_format_only_validates(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Q", "completion": "A", "judgment": "$ERROR$"}])
    examples, report = convert("canonical", [path])
    assert examples == [] and report.as_dict() == {"judge_error": 1}


# --- silently wrong before: every converter type-checks, every vanished record is counted ------


def test_ultrafeedback_completion_without_critique(tmp_path):
    """No critique + a low score must not become a positive: CUT cannot train a negative without a
    judgment, so it is dropped (missing_judgment); a high score without a critique stays positive."""
    completions = [{"response": "Bad.", "overall_score": 1}, {"response": "Meh.", "critique": None},
                   {"response": "Good.", "overall_score": 9}]
    path = write_jsonl(tmp_path / "u.jsonl", [{"id": "r", "instruction": "Q", "completions": completions}])
    examples, report = convert("ultrafeedback", [path])
    assert [(e["id"], e["label"], e["judgment"]) for e in examples] == [("r-2", True, None)]
    assert report.as_dict() == {"missing_judgment": 2}
    bad = write_jsonl(tmp_path / "n.jsonl", [{"instruction": "Q", "completions": [
        {"response": "A", "overall_score": float("nan")}]}])
    with pytest.raises(DataError, match=re.escape("field 'completions[0].overall_score': expected a finite number")):
        convert("ultrafeedback", [bad])


@pytest.mark.parametrize(
    ("feedback", "field", "message"),
    [
        ({"rating": 7, "critiques": ""}, "feedback.critiques", "expected a list or null, got string"),
        ({"rating": 2, "critiques": [{"text": "No.", "refinement": "Yes."}], "skip": "true"},
         "feedback.skip", "expected true, false or null, got string"),
        ({"rating": 2, "critiques": [{"text": "No.", "refinement": "Yes."}], "skip": 1},
         "feedback.skip", "got int"),
    ],
)
def test_openai_critiques_type_checks_that_used_to_pass(tmp_path, feedback, field, message):
    path = write_jsonl(tmp_path / "c.jsonl", [critiques_line({"answer": "A.", "feedback": feedback})])
    with pytest.raises(DataError) as info:
        convert("openai-critiques", [path])
    assert info.value.field == f"data.questions[0].answers[0].{field}" and message in info.value.message


def test_openai_critiques_nan_ranking_and_empty_questions(tmp_path):
    question = {"question": "Q?", "rankings": [float("nan"), 5], "answers": [GOOD_ANSWER, GOOD_ANSWER]}
    nan = write_jsonl(tmp_path / "nan.jsonl", [{"data": {"passage": {"text": "P."}, "questions": [question]}}])
    with pytest.raises(DataError, match="rankings': expected finite numbers, got \\[nan, 5\\]"):
        convert("openai-critiques", [nan])
    empty = write_jsonl(tmp_path / "e.jsonl", [{"data": {"passage": {"text": "P."}, "questions": []}}])
    examples, report = convert("openai-critiques", [empty])
    assert examples == [] and report.as_dict() == {"no_questions": 1}


def test_cut_alpaca_unknown_key(tmp_path):
    row = {"id": 1, "instruction": "Q", "input": "", "output": "A", "judgement": "Wrong."}
    path = write_jsonl(tmp_path / "a.jsonl", [row])
    with pytest.raises(DataError, match="field 'judgement': unknown field; did you mean 'judgment'"):
        convert("cut-alpaca", [path])
    examples, _ = convert("cut-alpaca", [path], extra_fields="ignore")
    assert examples[0]["label"] is True  # what the user asked for, knowingly
    assert len(load_judged(path, "cut-alpaca", extra_fields="ignore")) == 1
