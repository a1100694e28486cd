"""`cutalign generate`: the model's saved template, line-level validation, and SIGKILL-then-resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from cutalign.cli import _register, app
from cutalign.data.templates import RUN_CONFIG_NAME
from cutalign.generation import SamplingParams, TransformersGenerator

_register()
PROMPTS = [{"id": "a", "prompt": "Name a color."}, {"id": "b", "prompt": [{"role": "user", "content": "Hi"}]},
           {"instruction": "Add the numbers.", "input": "1 + 1"}]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_writes_one_row_per_id_with_the_saved_chat_template(tmp_path, tiny_model_dir, cli_ok):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (model / RUN_CONFIG_NAME).write_text(yaml.safe_dump({"template": "chat", "chat_template": "llama2",
                                                         "system_prompt": "Be brief.", "learning_rate": 0.1}))
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "out.jsonl"
    result = cli_ok("generate", "--model", model, "--data", data, "-o", out, "--max_new_tokens", "5")
    assert f"template: chat (llama2), from {model / RUN_CONFIG_NAME}" in " ".join(result.output.split())
    assert "tokens/s" in result.output
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "prompts.jsonl:3"]
    assert rows[2]["prompt"] == "Add the numbers.\n1 + 1"
    local = TransformersGenerator.from_pretrained(str(model), device="cpu")
    rendered = [local.template.plain(r["prompt"]) for r in rows]
    assert rendered[0].startswith("<s>[INST] <<SYS>>\nBe brief.")
    expected = local.generate(rendered, SamplingParams(max_new_tokens=5))
    assert [r["completion"] for r in rows] == [e.text for e in expected]
    # an explicit flag wins over the saved template
    alpaca = tmp_path / "alpaca.jsonl"
    cli_ok("generate", "--model", model, "--data", data, "-o", alpaca, "--max-new-tokens", "5", "--template", "alpaca",
           "--limit", "1")
    plain = local.generate(["Below is an instruction that describes a task. Write a response that appropriately "
                            "completes the request.\n\n### Instruction:\nName a color.\n\n### Response:\n"],
                           SamplingParams(max_new_tokens=5))
    assert read_jsonl(alpaca) == [{"id": "a", "prompt": "Name a color.", "completion": plain[0].text}]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "prompts.jsonl:2: expected a JSON object with a `prompt`, got"),
        ('{"prompt": [{"role": "user"}]}', "prompts.jsonl:2: field 'prompt[0].content': expected a string"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "prompts.jsonl:2: field 'messages[0].role'"),
        ('{"prompt": "  "}', "prompts.jsonl:2: field 'prompt': must not be empty"),
        ('{"id": "a", "prompt": "again"}', "prompts.jsonl:2: field 'id': duplicate id 'a'"),
        ('{"text": "x"}', "prompts.jsonl:2: expected a `prompt`"),
        ('{"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}',
         "prompts.jsonl:2: field 'prompt': this model uses the Alpaca template"),
    ],
)
def test_bad_lines_are_named_and_exit_2(tmp_path, tiny_model_dir, line, message):
    data = write_jsonl(tmp_path / "prompts.jsonl", [PROMPTS[0], line])
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model_dir), "--data", str(data), "-o",
                                      str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "o.jsonl").exists()


def test_bad_flags_exit_2(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:1])
    for extra, message in ((["--chat_template", "vicuna"], "neither a built-in name"),
                           (["--backend", "tgi"], "unknown generation backend 'tgi'"),
                           (["--do_sample", "--temperature", "0"], "temperature must be > 0"),
                           (["--base_url", "http://127.0.0.1:9/v1"], "only apply to --backend openai")):
        result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model_dir), "--data", str(data), "-o",
                                          str(tmp_path / "o.jsonl"), *extra])
        assert result.exit_code == 2 and message in result.output, result.output


def sampled_run(tmp_path, tiny_model_dir, cli_ok, n):
    prompts = [{"id": f"q{i}", "prompt": f"Question number {i}: what comes next?"} for i in range(n)]
    data = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    args = ["generate", "--model", str(tiny_model_dir), "--data", str(data), "--max_new_tokens", "8",
            "--batch_size", "1", "--do_sample", "--seed", "5"]
    clean = tmp_path / "clean.jsonl"
    cli_ok(*args, "-o", clean)
    return prompts, args, clean


def test_a_run_cut_mid_line_resumes_to_the_uninterrupted_output(tmp_path, tiny_model_dir, cli_ok):
    _, args, clean = sampled_run(tmp_path, tiny_model_dir, cli_ok, 6)
    lines = clean.read_text().splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_text("".join(lines[:2]) + lines[2][:20])  # what a crash while writing row 3 leaves
    result = cli_ok(*args, "-o", out)
    assert "4 generated, 2 already in the output" in result.output
    assert out.read_text() == clean.read_text()  # sampled with per-id seeds: the same samples
    assert "0 generated, 6 already in the output" in cli_ok(*args, "-o", out).output


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_output(tmp_path, tiny_model_dir, cli_ok):
    prompts, args, clean = sampled_run(tmp_path, tiny_model_dir, cli_ok, 16)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "cutalign", *args, "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_file() and out.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(out.read_text().splitlines())
    assert process.returncode == -signal.SIGKILL and 1 <= written < len(prompts), "killed too late to test resume"
    result = cli_ok(*args, "-o", out)
    assert f"{len(prompts) - written} generated, {written} already in the output" in result.output
    assert out.read_text() == clean.read_text()
