"""`cutalign data convert|check` through Typer's runner, including every bad-input path."""

from __future__ import annotations

import json
import os
import re
import subprocess
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


# --- bad bytes: every one exits 2 with a location, never a traceback; a BOM is fine -------------


def _exit_2(result, message: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert message in result.stderr and "Traceback" not in result.output


GOOD_ROW = {"prompt": "Q", "completion": "A", "judgment": "Wrong.", "label": False}
BAD_BYTES = {
    "deep_nesting.json": ("[" * 100_000, "deep_nesting.json: invalid JSON: nested too deeply"),
    "deep_nesting.jsonl": ("[" * 100_000 + "\n", "deep_nesting.jsonl:1: invalid JSON: nested too deeply"),
    "huge_score.jsonl": ('{"prompt": "Q", "completion": "A", "score": 1' + "0" * 400 + "}\n",
                         "huge_score.jsonl:1: field 'score': expected a finite number"),
    "huge_int.jsonl": ('{"prompt": "Q", "completion": "A", "score": 1' + "0" * 5000 + "}\n",
                       "huge_int.jsonl:1: invalid JSON: Exceeds the limit"),
    "surrogate.jsonl": ('{"prompt": "\\ud800", "completion": "A"}\n',
                        "surrogate.jsonl:1: field 'prompt': invalid Unicode at character 0: a lone surrogate"),
    "not_utf8.jsonl": (b'{"prompt": "\xff", "completion": "A"}\n', "not_utf8.jsonl: not UTF-8 text"),
    "misspelled.jsonl": (json.dumps({"prompt": "Q", "completion": "A", "judgement": "Wrong."}) + "\n",
                         "misspelled.jsonl:1: field 'judgement': unknown field; did you mean 'judgment'?"),
}


@pytest.mark.parametrize("name", sorted(BAD_BYTES))
def test_bad_bytes_exit_2_for_check_and_convert_and_keep_the_earlier_output(tmp_path, name):
    content, message = BAD_BYTES[name]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    _exit_2(invoke("check", path), message)
    out = write_jsonl(tmp_path / "earlier.jsonl", [GOOD_ROW])
    before = out.read_bytes()
    _exit_2(invoke("convert", "-f", "canonical", path, "-o", out), message)
    assert out.read_bytes() == before  # a failed convert never wipes an earlier good file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["earlier.jsonl", name])  # no temp left


def test_byte_order_mark_is_accepted(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD_ROW) + "\n").encode())
    array = tmp_path / "bom.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD_ROW, {**GOOD_ROW, "completion": "B"}], indent=1).encode())
    for path, total in ((jsonl, 1), (array, 2)):
        result = invoke("check", path, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["total"] == total


def test_unknown_fields_can_be_allowed_explicitly(tmp_path):
    path = write_jsonl(tmp_path / "extra.jsonl", [{**GOOD_ROW, "source": "forum"}])
    _exit_2(invoke("check", path), "field 'source': unknown field")
    assert invoke("check", path, "--extra_fields", "ignore").exit_code == 0
    assert invoke("convert", "-f", "canonical", path, "-o", tmp_path / "o.jsonl", "--extra-fields", "ignore").exit_code == 0
    _exit_2(invoke("check", path, "--extra_fields", "warn"), "--extra_fields must be one of error, ignore")


def test_unreadable_file_exits_2(tmp_path):
    (tmp_path / "mem.jsonl").symlink_to("/proc/self/mem")  # reading fails with EIO, even for root
    _exit_2(invoke("check", tmp_path / "mem.jsonl"), "mem.jsonl: cannot read: Input/output error")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_and_folder_exit_2(tmp_path):
    path = write_jsonl(tmp_path / "locked.jsonl", [GOOD_ROW])
    path.chmod(0)
    _exit_2(invoke("check", path), "locked.jsonl: cannot read: Permission denied")
    folder = tmp_path / "locked"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [GOOD_ROW])
    folder.chmod(0)
    try:
        _exit_2(invoke("check", folder), "locked: cannot read")
    finally:
        folder.chmod(0o755)


def test_unwritable_output_exits_2_and_keeps_the_earlier_file(tmp_path):
    good = write_jsonl(tmp_path / "in.jsonl", [GOOD_ROW])
    _exit_2(invoke("convert", "-f", "canonical", good, "-o", good / "out.jsonl"), "cannot write")  # under a file
    folder = tmp_path / "ro"
    folder.mkdir()
    earlier = write_jsonl(folder / "out.jsonl", [GOOD_ROW, GOOD_ROW])
    before = earlier.read_bytes()
    unlock = _read_only(folder)
    try:
        _exit_2(invoke("convert", "-f", "canonical", good, "-o", earlier), f"{earlier}: cannot write")
        assert earlier.read_bytes() == before and [p.name for p in folder.iterdir()] == ["out.jsonl"]
    finally:
        unlock()


def _read_only(folder: Path):
    """Make ``folder`` unwritable: ``chattr +i`` as root (which ignores modes), else chmod 555."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


# --- data from where users keep it: `datasets` ids and saved datasets for every format ---------


def test_hub_id_for_a_converter_format_is_tried_and_fails_cleanly_offline(monkeypatch):
    import time

    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    result = invoke("check", "openbmb/UltraFeedback", "-f", "ultrafeedback")
    _exit_2(result, "openbmb/UltraFeedback: not a file or folder, and `datasets` cannot load it")
    assert "no such file" not in result.stderr and time.perf_counter() - start < 5


def test_saved_dataset_in_a_converter_format(tmp_path):
    import datasets

    rows = [json.loads(line) for line in (FIXTURES / "ultrafeedback.jsonl").read_text().splitlines()]
    datasets.Dataset.from_list(rows[:2]).save_to_disk(tmp_path / "uf")
    result = invoke("check", tmp_path / "uf", "-f", "ultrafeedback", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"total": 4, "positive": 2, "negative": 2,
                                         "dropped": {"empty_completion": 1, "empty_judgment": 1}}


def test_report_says_what_happened(tmp_path):
    rows = [GOOD_ROW, {**GOOD_ROW, "judgment": "$ERROR$"}, {"id": "x", **GOOD_ROW}, {"id": "x", **GOOD_ROW, "completion": "B"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result = invoke("check", path)
    assert result.exit_code == 0, result.output
    assert "kept 2 of 4 (1 judge error, 1 duplicate)" in result.stdout
    assert "notice duplicate_id: 1" not in result.stdout  # the duplicate of row 1 was dropped first
    rows.append({"id": "x", **GOOD_ROW, "completion": "C"})
    result = invoke("check", write_jsonl(path, rows), "--json")
    assert json.loads(result.stdout)["notices"] == {"duplicate_id": 1}
