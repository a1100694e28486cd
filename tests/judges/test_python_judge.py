"""Programmatic judges, the demo world's judge, pairwise combination and the failure guard."""

from __future__ import annotations

import json

import pytest

from cutalign.judges.base import Judgment, Preference
from cutalign.judges.guard import FailureGuard, JudgeFailureError
from cutalign.judges.pairwise import combine_orders, judge_both_orders, judge_pair
from cutalign.judges.python_judge import PythonJudge, demo_judge_function, to_judgment

JUDGE_FILE = '''
def judge(prompt, completion):
    return None if "right" in completion else "It is wrong."

def judge_with_row(prompt, completion, row):
    return {"text": None, "satisfactory": True, "score": float(row["id"])}

def scored(prompt, completion):
    return ("Too short.", False, 2)

def broken(prompt, completion):
    raise RuntimeError("boom")

def bad_shape(prompt, completion):
    return 42
'''


@pytest.fixture
def judge_file_path(tmp_path):
    path = tmp_path / "my_judge.py"
    path.write_text(JUDGE_FILE)
    return path


def test_file_judges_and_return_shapes(judge_file_path):
    judge = PythonJudge.from_spec(f"python:{judge_file_path}:judge")
    assert judge.name == f"python:{judge_file_path}:judge"
    right, wrong = judge.judge(["q", "q"], ["right", "nope"])
    assert (right.satisfactory, right.text) == (True, None)
    assert (wrong.satisfactory, wrong.text) == (False, "It is wrong.")
    [with_row] = PythonJudge.from_spec(f"python:{judge_file_path}:judge_with_row").judge(["q"], ["c"], rows=[{"id": "7"}])
    assert with_row.score == 7.0 and with_row.satisfactory
    [scored] = PythonJudge.from_spec(f"{judge_file_path}:scored").judge(["q"], ["c"])
    assert (scored.text, scored.satisfactory, scored.score) == ("Too short.", False, 2.0)


def test_exceptions_and_bad_return_values_are_counted_errors(judge_file_path):
    [broken] = PythonJudge.from_spec(f"python:{judge_file_path}:broken").judge(["q"], ["c"])
    assert broken.error == "judge_exception" and "boom" in broken.raw
    [bad] = PythonJudge.from_spec(f"python:{judge_file_path}:bad_shape").judge(["q"], ["c"])
    assert bad.error == "unparseable" and bad.raw == "42"
    assert to_judgment({"text": None, "satisfactory": False}).error == "unparseable"  # a negative must say why
    assert to_judgment({"nonsense": 1}).error == "unparseable"


def test_module_spec_and_bad_specs(judge_file_path):
    judge = PythonJudge.from_spec("python:cutalign.judges.prompts:parse_annotation")
    [judgment] = judge.judge(["perfect"], ["ignored"])  # parse_annotation(prompt, completion) -> TypeError
    assert judgment.error == "judge_exception"
    for spec, message in (("python:nomodule_xyz:f", "cannot import"), (f"python:{judge_file_path}:missing", "no function"),
                          ("python:justone", "expected"), ("python:/nope.py:f", "no such file")):
        with pytest.raises(ValueError, match=message):
            PythonJudge.from_spec(spec)


def test_demo_judge_uses_the_fact_world():
    from cutalign.demo.sample import load_sample

    rows = load_sample()[:40]
    judge = demo_judge_function()
    assert [judge(r["prompt"], r["completion"]).satisfactory for r in rows] == [r["label"] for r in rows]
    judgments = PythonJudge.from_spec("demo").judge([r["prompt"] for r in rows], [r["completion"] for r in rows])
    assert [j.satisfactory for j in judgments] == [r["label"] for r in rows]
    assert any(j.error_spans for j in judgments if not j.satisfactory)  # gold spans of wrong values
    [outside] = PythonJudge.from_spec("demo").judge(["What is love?"], ["Baby don't hurt me."])
    assert outside.error == "unparseable" and outside.satisfactory is None


class ScriptedPairJudge:
    """A real PairwiseJudge: prefers the longer response, or always the first position when `biased`."""

    name = "longer"

    def __init__(self, biased: bool = False) -> None:
        self.biased = biased

    def judge_pairs(self, prompts, a, b):
        if self.biased:
            return [Preference("a") for _ in prompts]
        return [Preference("a" if len(x) > len(y) else "b" if len(y) > len(x) else "tie") for x, y in zip(a, b, strict=True)]


def test_both_orders_cancel_position_bias():
    prompts, a, b = ["p1", "p2", "p3"], ["long answer", "x", "same"], ["short", "longer one", "same"]
    assert [p.winner for p in judge_both_orders(ScriptedPairJudge(), prompts, a, b)] == ["a", "b", "tie"]
    assert [p.winner for p in judge_both_orders(ScriptedPairJudge(biased=True), prompts, a, b)] == ["tie"] * 3
    assert judge_pair(ScriptedPairJudge(), "p", "a", "bb").winner == "b"
    failed = combine_orders(Preference("a"), Preference(None, raw="?", error="unparseable"))
    assert failed.winner is None and failed.error == "unparseable"
    with pytest.raises(ValueError, match="differ in length"):
        judge_both_orders(ScriptedPairJudge(), ["p"], ["a", "b"], ["c"])


def test_guard_consecutive_and_rate():
    ok, bad = Judgment(None, True), Judgment(None, None, error="timeout")
    guard = FailureGuard(max_consecutive=3, max_error_rate=1.0)
    guard.observe([bad, bad, ok, bad, bad])
    with pytest.raises(JudgeFailureError, match="3 times in a row"):
        guard.observe([bad])
    rate = FailureGuard(max_consecutive=0, max_error_rate=0.3, warmup=10)
    rate.observe([ok, bad] * 4)  # 50% but still warming up
    with pytest.raises(JudgeFailureError, match="timeout: 5"):
        rate.observe([ok, bad])
    FailureGuard(max_consecutive=0, max_error_rate=1.0).observe([bad] * 100)  # disabled: never trips


def test_judge_file_with_a_python_judge_and_input_errors(tmp_path, judge_file_path):
    from cutalign.data.schema import DataError
    from cutalign.judges.annotate import judge_file

    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"id": i, "prompt": "q", "completion": c, "judgment": "old"})
                                for i, c in enumerate(["right", "wrong", "right"])) + "\n")
    out = tmp_path / "out.jsonl"
    summary = judge_file(source, out, PythonJudge.from_spec(f"python:{judge_file_path}:judge"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == [True, False, True] and [r["judgment"] for r in rows] == [None, "It is wrong.", None]
    assert (summary.judged, summary.satisfactory, summary.unsatisfactory) == (3, 2, 1)
    with pytest.raises(ValueError, match="judged by python"):
        judge_file(source, out, PythonJudge.from_spec("demo"))
    for text, where in (('{"id": 1, "prompt": "q", "completion": 5}', "in.jsonl:2: field 'completion'"),
                        ('{"id": 0, "prompt": "q", "completion": "c"}', "in.jsonl:2: field 'id': duplicate id '0'"),
                        ("[1, 2]", "in.jsonl:2")):
        source.write_text('{"id": 0, "prompt": "q", "completion": "c"}\n' + text + "\n")
        with pytest.raises(DataError, match=where):
            judge_file(source, tmp_path / "o2.jsonl", PythonJudge.from_spec("demo"))


def test_judged_rows_load_as_canonical_data_and_failures_are_dropped_as_judge_errors(tmp_path, judge_file_path):
    from cutalign.data.converters import load_judged
    from cutalign.judges.annotate import judge_file

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"x{i}", "prompt": "q", "completion": f"c{i}"}) + "\n" for i in range(3)))
    judge_file(source, tmp_path / "bad.jsonl", PythonJudge.from_spec(f"python:{judge_file_path}:broken"))
    judge_file(source, tmp_path / "good.jsonl", PythonJudge.from_spec(f"python:{judge_file_path}:judge"))
    good = load_judged(tmp_path / "good.jsonl").dataset
    assert len(good) == 3 and good["label"] == [False] * 3
    failed = load_judged(tmp_path / "bad.jsonl")
    assert len(failed) == 0 and failed.report.as_dict() == {"judge_error": 3}
