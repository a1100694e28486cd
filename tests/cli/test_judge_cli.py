"""`cutalign judge` and `cutalign train-judge` from the command line (subprocesses where a crash is the point)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

SLOW_JUDGE = '''
import time

def judge(prompt, completion):
    time.sleep(0.04)
    return None if "right" in completion else f"Wrong answer to {prompt}."
'''


def _write_rows(path, n):
    path.write_text("".join(json.dumps({"id": f"r{i:03d}", "prompt": f"q{i}", "completion": "right" if i % 3 else "bad"})
                            + "\n" for i in range(n)))


def _judge_command(source, out, judge_file):
    return [sys.executable, "-m", "cutalign", "judge", str(source), "-o", str(out), "--judge",
            f"python:{judge_file}:judge", "--batch_size", "3"]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow  # two `cutalign` processes: ~20 s on a busy 2-core machine (CLI start-up imports torch)
def test_sigkill_mid_file_then_rerun_equals_an_uninterrupted_run(tmp_path, runner):
    judge_file = tmp_path / "slow_judge.py"
    judge_file.write_text(SLOW_JUDGE)
    source, killed, clean = tmp_path / "in.jsonl", tmp_path / "killed.jsonl", tmp_path / "clean.jsonl"
    _write_rows(source, 90)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(_judge_command(source, killed, judge_file), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_lines(killed)) < 9 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert 9 <= len(_lines(killed)) < 90, "the run must be killed part-way"
    with killed.open("a") as f:  # a torn last write, as a crash inside write() leaves
        f.write('{"id": "r0')
    subprocess.run(_judge_command(source, killed, judge_file), env=env, check=True, capture_output=True, timeout=120)
    reference = _invoke(runner, *_judge_command(source, clean, judge_file)[3:])  # the same command, in-process
    assert reference.exit_code == 0, reference.output
    resumed_rows = [json.loads(line) for line in _lines(killed)]
    assert [r["id"] for r in resumed_rows] == [f"r{i:03d}" for i in range(90)]  # each id once, in input order
    assert _lines(killed) == _lines(clean)


@pytest.fixture(scope="module")
def runner():
    from cutalign.cli import _register

    _register()
    return CliRunner()


def _invoke(runner, *args):
    from cutalign.cli import app

    return runner.invoke(app, [str(a) for a in args])


def test_bad_input_and_options_exit_2_with_a_located_message(runner, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "prompt": "q", "completion": "c"}\n{"id": "b", "prompt": ["x"], "completion": "c"}\n')
    result = _invoke(runner, "judge", source, "-o", tmp_path / "out.jsonl", "--judge", "demo")
    assert result.exit_code == 2 and f"{source}:2: field 'prompt[0]'" in result.output
    _write_rows(source, 2)
    for args, message in ((("--judge", "nope"), "unknown judge"), (("--judge", "openai"), "needs --judge_model"),
                          (("--judge", "hf"), "needs --model"), (("--judge", "python:missing_mod_q:f"), "cannot import"),
                          (("--judge", "openai", "--judge_model", "m", "--api_key_env", "CUTALIGN_NO_SUCH_KEY"),
                           "CUTALIGN_NO_SUCH_KEY is not set")):
        result = _invoke(runner, "judge", source, "-o", tmp_path / "out.jsonl", *args)
        assert result.exit_code == 2 and message in result.output, result.output
    result = _invoke(runner, "judge", source, "-o", source, "--judge", "demo")
    assert result.exit_code == 2 and "is the input file" in result.output
    result = _invoke(runner, "train-judge", "--model", "m", "--data", source)
    assert result.exit_code == 2 and "--output_dir is required" in result.output
    result = _invoke(runner, "train-judge", "--model", "m", "--data", source, "--output_dir", tmp_path / "j",
                     "--eval_fractoin", "0.2")
    assert result.exit_code == 2 and "eval_fraction" in result.output, result.output


def test_a_failing_judge_stops_with_exit_1_and_the_summary(runner, tmp_path):
    judge_file = tmp_path / "j.py"
    judge_file.write_text("def judge(prompt, completion):\n    raise OSError('judge offline')\n")
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_rows(source, 40)
    result = _invoke(runner, "judge", source, "-o", out, "--judge", f"python:{judge_file}:judge", "--batch_size", "2",
                     "--max_consecutive_failures", "4")
    assert result.exit_code == 1, result.output
    assert "4 times in a row" in result.output and "judge_exception 4" in result.output
    assert len(_lines(out)) == 4  # the failures are written (counted), the rest untouched


@pytest.mark.slow  # trains and generates: ~25 s on a busy 2-core machine
@pytest.mark.shared
def test_train_judge_then_judge_with_it(runner, tmp_path, tiny_model_dir, cut_online_dir):
    from cutalign.data.converters import convert
    from cutalign.data.schema import PolarityRule

    examples, _ = convert("cut-alpaca", [cut_online_dir / "train-alpaca-sample-iter1.json"], PolarityRule())
    data = tmp_path / "judged.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples[:30]))
    out = tmp_path / "judge"
    result = _invoke(runner, "train-judge", "--model", tiny_model_dir, "--data", data, "--output_dir", out,
                     "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "384",
                     "--eval_fraction", "0.2", "--judge_max_new_tokens", "6", "--report_to", "none",
                     "--save_strategy", "no", "--use_cpu", "true")
    assert result.exit_code == 0, result.output + repr(result.exception)
    evaluation = json.loads((out / "judge_eval.json").read_text())
    assert evaluation["examples"] == 6 and 0 <= evaluation["agreement"] <= 1
    assert evaluation["agreeing"] == evaluation["confusion_gold_predicted"]["yes/yes"] + \
        evaluation["confusion_gold_predicted"]["no/no"]
    assert evaluation["parsed"] + sum(evaluation["failed"].values()) == 6
    assert evaluation["agreement"] == evaluation["agreeing"] / 6
    gold_yes = evaluation["gold_satisfactory"]
    assert evaluation["majority_baseline"] == max(gold_yes, 6 - gold_yes) / 6
    assert "held-out agreement" in result.output
    source = tmp_path / "to_judge.jsonl"
    source.write_text("".join(json.dumps({"id": e["id"], "prompt": e["prompt"], "completion": e["completion"]}) + "\n"
                              for e in examples[30:33]))
    judged = tmp_path / "judged_by_hf.jsonl"
    result = _invoke(runner, "judge", source, "-o", judged, "--judge", "hf", "--model", out, "--max_new_tokens", "6",
                     "--max_error_rate", "1", "--max_consecutive_failures", "0")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in _lines(judged)]
    assert [r["id"] for r in rows] == [e["id"] for e in examples[30:33]]
    assert all(r["judge"]["kind"] == "hf" and r["judge"]["model"] == str(out) for r in rows)
