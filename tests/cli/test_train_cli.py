"""`cutalign train / merge / generate` end to end on a tiny saved model and real data."""

from __future__ import annotations

import json
import math

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
