"""`cutalign train / merge / generate` end to end on a tiny saved model and real data."""

from __future__ import annotations

import json
import math
import time

import pytest
import yaml
from typer.testing import CliRunner

from cutalign.cli import _register, app

runner = CliRunner()
_register()


def test_train_with_yaml_and_flags_writes_a_standard_output_dir(tmp_path, tiny_model_dir, cut_online_dir, cli_ok):
    config = tmp_path / "cut.yaml"
    config.write_text(yaml.safe_dump({"method": "cut", "threshold": 1.2, "alpha": 0.5, "max_steps": 1,
                                      "per_device_train_batch_size": 4, "report_to": [], "max_length": 256,
                                      "save_strategy": "no"}))
    out = tmp_path / "out"
    cli_ok("train", "--config", config, "--model", tiny_model_dir, "--data",
           cut_online_dir / "train-alpaca-sample-iter2.json", "--data_format", "cut-alpaca",
           "--output_dir", out, "--max_steps", "2", "--use_peft", "--lora_r", "4",
           "--lora_target_modules", "gate_proj", "up_proj", "down_proj")
    results = json.loads((out / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"])
    assert results["dropped_examples"] > 0  # iter2 has 3 judge errors and downsampled positives
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    card = (out / "README.md").read_text()
    assert "Contrastive Unlikelihood Training" in card
    saved = yaml.safe_load((out / "cutalign_config.yaml").read_text())
    assert saved["threshold"] == 1.2 and saved["max_steps"] == 2  # YAML value and CLI override

    merged = tmp_path / "merged"
    cli_ok("merge", out, "--output", merged)
    assert (merged / "model.safetensors").is_file()

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": i, "prompt": p}) for i, p in enumerate(["Name a color.", "Add 2 and 3."])))
    generations = tmp_path / "gen.jsonl"
    cli_ok("generate", "--model", merged, "--data", prompts, "--output", generations, "--max-new-tokens", "4")
    rows = [json.loads(line) for line in generations.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1] and all(isinstance(r["completion"], str) for r in rows)


def test_train_help_lists_cut_fields(cli_ok):
    result = cli_ok("train", "--method", "cut", "--help")
    for flag in ("--threshold", "--misalign_mode", "--positive_ratio", "--use_peft", "--data"):
        assert flag in result.output


def test_train_rejects_unknown_method_and_bad_values(tmp_path):
    result = runner.invoke(app, ["train", "--method", "ppo"])
    assert result.exit_code != 0 and "ppo" in result.output
    result = runner.invoke(app, ["train", "--model", "x", "--data", "y", "--output_dir", str(tmp_path),
                                 "--misalign_mode", "bare"])
    assert result.exit_code == 2 and "misalign_mode" in result.output


# ---------------------------------------------------------------------------------------- bad input
NEGATIVE = {"prompt": "Say hi.", "completion": "Hi!", "judgment": "Too short.", "label": False}


def _train(*args):
    return runner.invoke(app, ["train", *[str(a) for a in args]])


def _bad(result, *needles):
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.fixture()
def good_data(tmp_path):
    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps(NEGATIVE) + "\n")
    return path


def test_flag_and_yaml_typos_suggest_the_right_name(tmp_path, tiny_model_dir, good_data):
    out = tmp_path / "out"
    result = _train("--model", tiny_model_dir, "--data", good_data, "--output_dir", out, "--thresold", "1.2")
    _bad(result, "unknown option --thresold", "did you mean `--threshold`?")
    config = tmp_path / "cut.yaml"
    config.write_text(yaml.safe_dump({"thresold": 1.2, "output_dir": str(out)}))
    result = _train("--config", config, "--model", tiny_model_dir, "--data", good_data)
    _bad(result, f"{config}: unknown key 'thresold'", "did you mean `threshold`?")
    assert "fail_with_unknown_args" not in result.output and not out.exists()


def test_help_is_plain_and_train_help_lists_config(cli_ok):
    assert "<bool>" not in cli_ok("--help").output
    assert "--config" in cli_ok("train", "--help").output


def test_output_dir_is_required_and_a_missing_model_fails_fast(tmp_path, good_data):
    _bad(_train("--model", tmp_path, "--data", good_data), "--output_dir is required")
    assert not (tmp_path / "trainer_output").exists()
    for model in ("./runs/nope", tmp_path / "nope"):
        start = time.perf_counter()
        result = _train("--model", model, "--data", good_data, "--output_dir", tmp_path / "out")
        _bad(result, "does not exist")
        assert time.perf_counter() - start < 5


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("int_prompt.jsonl", json.dumps({**NEGATIVE, "prompt": 5}), "int_prompt.jsonl:1: field 'prompt'"),
    ("not_json.jsonl", "{not json", "not_json.jsonl:1: invalid JSON"),
    ("empty.jsonl", "", "no usable examples in"),
    ("errors.jsonl", "\n".join(json.dumps({**NEGATIVE, "id": str(i), "judgment": "$ERROR$"}) for i in range(2)),
     "(dropped: judge_error 2)"),
])
def test_bad_data_exits_2_with_one_line(tmp_path, tiny_model_dir, name, text, needle):
    data = tmp_path / name
    data.write_text(text)
    _bad(_train("--model", tiny_model_dir, "--data", data, "--output_dir", tmp_path / "out"), needle)


def test_an_unknown_data_format_gives_the_data_convert_message(tmp_path, tiny_model_dir, good_data):
    result = _train("--model", tiny_model_dir, "--data", good_data, "--output_dir", tmp_path / "out",
                    "--data_format", "cutalpaca")
    _bad(result, "unknown format 'cutalpaca'; known formats:", "cut-alpaca")
    converted = runner.invoke(app, ["data", "convert", str(good_data), "-f", "cutalpaca", "-o", str(tmp_path / "c")])
    assert "unknown format 'cutalpaca'; known formats:" in converted.output


def test_cli_model_init_kwargs_json_hyphen_aliases_and_output_dir_refusal(tmp_path, tiny_model_dir, good_data):
    out = tmp_path / "out"
    args = ("--model", tiny_model_dir, "--data", good_data, "--output_dir", out, "--max-steps", "1",
            "--report_to", "none", "--save_strategy", "no", "--model_init_kwargs", '{"token": "hf_CLISECRET42"}')
    result = _train(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1
    for path in out.rglob("*"):
        assert not path.is_file() or b"hf_CLISECRET42" not in path.read_bytes(), path
    _bad(_train(*args), "already holds another run", "--overwrite_output_dir")
    assert _train(*args, "--overwrite_output_dir", "true").exit_code == 0
