"""`cutalign data convert|check` through Typer's runner, including every bad-input path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cutalign.cli.data  # noqa: F401  (registers the `data` group on the root app, as _register() does)
from cutalign.cli import app
from cutalign.data.converters import SHEPHERD_FOR_MODEL, SHEPHERD_RAW

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["data", *map(str, args)])


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_convert_writes_canonical_jsonl_and_reports_drops(tmp_path, cut_online_dir):
    out = tmp_path / "out" / "iter1.jsonl"
    result = invoke(
        "convert", "--format", "cut-alpaca", cut_online_dir / "train-alpaca-sample-iter1.json", "-o", out
    )
    assert result.exit_code == 0, result.output
    assert (
        "wrote 953 examples" in result.stdout and "(713 positive, 240 negative); dropped 47" in result.stdout
    )
    assert "dropped judge_error: 47" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 953 and set(rows[0]) == {
        "id",
        "prompt",
        "completion",
        "judgment",
        "label",
        "score",
        "refinement",
    }
    check = invoke("check", out, "--json")
    assert json.loads(check.stdout) == {"total": 953, "positive": 713, "negative": 240, "dropped": {}}


def test_convert_score_threshold_and_positive_pattern(tmp_path):
    out = tmp_path / "uf.jsonl"
    result = invoke(
        "convert", "-f", "ultrafeedback", FIXTURES / "ultrafeedback.jsonl", "-o", out, "--score-threshold", 8
    )
    assert result.exit_code == 0 and "(1 positive, 3 negative)" in result.stdout
    result = invoke(
        "convert",
        "-f",
        "ultrafeedback",
        FIXTURES / "ultrafeedback.jsonl",
        "-o",
        out,
        "--positive-pattern",
        "^Correct",
    )
    assert result.exit_code == 0 and "(2 positive, 2 negative)" in result.stdout


def test_check_table_and_tokens(llama2_tokenizer, shared_dir):
    tokenizer = shared_dir / "tokenizers" / "llama2"
    result = invoke(
        "check", "-f", "openai-critiques", FIXTURES / "openai_critiques.jsonl", "--tokenizer", tokenizer
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"total\s+│\s+4\s+│", result.stdout) and re.search(r"skipped\s+│\s+1\s+│", result.stdout)
    for text in ("empty_refinement", "judgment tokens", "dropped skipped: 1 (e.g. "):
        assert text in result.stdout
    as_json = json.loads(
        invoke(
            "check", "-f", "openai-critiques", FIXTURES / "openai_critiques.jsonl", "--json", "-t", tokenizer
        ).stdout
    )
    assert (as_json["total"], as_json["positive"], as_json["negative"]) == (4, 2, 2)
    completions = ["Mia planted a tree.", "Tom.", "From nectar.", "Below zero."]
    lengths = [len(ids) for ids in llama2_tokenizer(completions, add_special_tokens=False)["input_ids"]]
    assert as_json["tokens"]["completion"]["max"] == max(lengths)


def test_check_shepherd_folder(shepherd_dir):
    result = invoke("check", "--format", "shepherd", shepherd_dir, "--json")
    assert json.loads(result.stdout) == {"total": 1317, "positive": 0, "negative": 1317, "dropped": {}}


def shepherd_out_of_order(tmp_path: Path) -> Path:
    judged = [{"id": i, "question": f"Q{i}", "answer": f"A{i}", "feedback": "F"} for i in range(2)]
    raw = [{"id": i, "metadata": {"context": f"Q{i}", "output_candidate": f"A{i}"}} for i in (1, 0)]
    write_jsonl(tmp_path / SHEPHERD_FOR_MODEL, judged)
    write_jsonl(tmp_path / SHEPHERD_RAW, raw)
    return tmp_path


CHAT = [{"role": "user", "content": "Hi"}]
BAD_CANONICAL = {
    "invalid_json": ('{"prompt": "Q", "completion": "A"}\n{"prompt": "Q",\n', "bad.jsonl:2: invalid JSON"),
    "missing_field": ('{"completion": "A"}\n', "bad.jsonl:1: field 'prompt': required field is missing"),
    "wrong_type": (
        '{"prompt": "Q", "completion": "A", "score": "high"}\n',
        "bad.jsonl:1: field 'score': expected a number",
    ),
    "bad_role": (
        json.dumps({"prompt": [{"role": "human", "content": "Hi"}], "completion": "A"}) + "\n",
        "bad.jsonl:1: field 'prompt[0].role': expected one of system, user, assistant, got 'human'",
    ),
    "mixed_prompts": (
        json.dumps({"prompt": "Q", "completion": "A"})
        + "\n"
        + json.dumps({"prompt": CHAT, "completion": "B"})
        + "\n",
        "bad.jsonl:2: field 'prompt': is a message list but",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CANONICAL))
def test_check_malformed_canonical_exits_2_with_location(tmp_path, case):
    text, message = BAD_CANONICAL[case]
    (tmp_path / "bad.jsonl").write_text(text, encoding="utf-8")
    result = invoke("check", tmp_path / "bad.jsonl")
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_shepherd_files_out_of_order_exit_2(tmp_path):
    result = invoke(
        "convert", "-f", "shepherd", shepherd_out_of_order(tmp_path), "-o", tmp_path / "out.jsonl"
    )
    assert result.exit_code == 2
    assert (
        f"{tmp_path / SHEPHERD_FOR_MODEL}:1: field 'id': does not match id of {tmp_path / SHEPHERD_RAW}:1"
        in result.stderr
    )
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("convert", "-f", "bogus", "{good}", "-o", "{tmp}/o.jsonl"),
            "unknown format 'bogus'; known formats: canonical",
        ),
        (("check", "-f", "bogus", "{good}"), "unknown format 'bogus'"),
        (("check", "{tmp}/missing.jsonl"), "missing.jsonl: no such file or folder"),
        (
            ("convert", "-f", "cut-alpaca", "{tmp}/missing.json", "-o", "{tmp}/o.jsonl"),
            "missing.json: no such file",
        ),
        (("check", "{good}", "--positive-pattern", "("), "positive_pattern '(' is not a regex"),
        (("check", "{good}", "--tokenizer", "{tmp}/no-tokenizer"), "cannot load tokenizer"),
    ],
)
def test_bad_arguments_exit_2_with_message(tmp_path, args, message):
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "Q", "completion": "A"}])
    result = invoke(*(arg.format(tmp=tmp_path, good=good) for arg in args))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
