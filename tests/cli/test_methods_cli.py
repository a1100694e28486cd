"""Every method through `cutalign train`, the example YAML configs, and `cutalign refine`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cutalign.cli import _register, app
from cutalign.cli.train import RunArguments
from cutalign.trainer import METHODS

runner = CliRunner()
_register()
REPO = Path(__file__).resolve().parents[2]
# `cutalign train` configs; examples/online.yaml configures `cutalign online` instead.
def _is_train_config(path: Path) -> bool:
    keys = yaml.safe_load(path.read_text()) or {}
    return "method" in keys and "train" not in keys  # `cutalign online` nests its training settings under `train`


EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if _is_train_config(p))
# The method comparison shares one recipe; the recommended recipe departs from it on purpose (see its header).
RECIPE_EXAMPLES = [p for p in EXAMPLES if p.name != "cut_recommended.yaml"]
FIXTURES = REPO / "tests" / "fixtures"
# Settings every example config must share so that methods are compared under one recipe.
SHARED = ("dtype", "load_in_8bit", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
          "learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs", "per_device_train_batch_size",
          "gradient_accumulation_steps", "bf16", "seed", "train_sampling_strategy", "template", "max_length")


def parse_example(path: Path):
    from trl import ModelConfig, TrlParser

    config_cls, _ = METHODS[yaml.safe_load(path.read_text())["method"]].load()
    parser = TrlParser((RunArguments, config_cls, ModelConfig))
    return parser.parse_args_and_config(["--config", str(path), "--use_cpu", "true"])  # bf16 needs a GPU otherwise


def test_the_recommended_recipe_parses_with_the_cli_parser():
    run, config, _ = parse_example(REPO / "examples" / "cut_recommended.yaml")
    assert run.method == "cut" and config.mode == "paper" and config.misalign_mode == "fake_positive"


def test_there_is_an_example_config_for_every_method():
    methods = {yaml.safe_load(p.read_text())["method"] for p in EXAMPLES}
    assert methods == set(METHODS)
    assert {"cut_offline_shepherd.yaml", "cut_online.yaml"} <= {p.name for p in EXAMPLES}


@pytest.fixture(scope="module")
def recipe() -> dict:
    """The shared settings of the official online CUT recipe."""
    _, config, model = parse_example(REPO / "examples" / "cut_online.yaml")
    values = {**vars(config), **vars(model)}
    return {key: values[key] for key in SHARED}


@pytest.mark.parametrize("path", RECIPE_EXAMPLES, ids=lambda p: p.name)
def test_example_configs_parse_with_the_cli_parser_and_share_the_recipe(path, recipe):
    run, config, model = parse_example(path)
    assert type(config).__name__ == METHODS[run.method].config.rpartition(".")[2]
    values = {**vars(config), **vars(model)}
    assert {key: values[key] for key in SHARED} == recipe
    assert model.lora_target_modules == ["gate_proj", "up_proj", "down_proj"] and model.lora_r == 16


def test_official_cut_recipes_have_the_paper_hyperparameters():
    offline_run, offline, _ = parse_example(REPO / "examples" / "cut_offline_shepherd.yaml")
    online_run, online, model = parse_example(REPO / "examples" / "cut_online.yaml")
    assert (offline_run.data_format, offline.threshold, offline.alpha) == ("shepherd", 1.2, 0.5)
    assert (online_run.data_format, online.threshold, online.alpha) == ("cut-alpaca", 1.1, 1.0)
    global_batch = online.per_device_train_batch_size * online.gradient_accumulation_steps
    assert (online.learning_rate, online.warmup_steps, online.num_train_epochs, global_batch) == (4e-4, 100, 1, 8)
    assert (model.lora_alpha, model.lora_dropout, model.load_in_8bit, online.bf16) == (16, 0.05, True, True)


@pytest.mark.parametrize(("method", "flags"), [("sft", ["--sft_include_negatives"]),
                                               ("dpo", ["--beta", "--template", "--score_threshold"]),
                                               ("unlikelihood", ["--alpha", "--mode"]),
                                               ("forward_prediction", ["--positive_ratio", "--max_length"])])
def test_train_help_shows_the_method_config(method, flags, cli_ok):
    output = cli_ok("train", "--method", method, "--help").output
    assert all(flag in output for flag in flags), output


def test_train_sft_writes_the_standard_outputs(tmp_path, tiny_model_dir, cut_online_dir, cli_ok):
    from cutalign.data.converters import convert
    from cutalign.data.io import write_jsonl

    data = tmp_path / "online.jsonl"
    write_jsonl(convert("cut-alpaca", [cut_online_dir / "train-alpaca-sample-iter1.json"])[0][:16], data)
    out = tmp_path / "sft"
    cli_ok("train", "--method", "sft", "--model", tiny_model_dir, "--data", data, "--output_dir", out, "--max_steps",
           "1", "--per_device_train_batch_size", "2", "--max_length", "256", "--report_to", "none",
           "--save_strategy", "no", "--use_cpu", "true")
    results = json.loads((out / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"])
    assert results["dropped_examples"] > 0  # the negatives, excluded from SFT
    assert "Supervised fine-tuning on satisfactory responses" in (out / "README.md").read_text()
    assert (out / "model.safetensors").is_file()


def test_train_dpo_with_lora_writes_the_standard_outputs(tmp_path, tiny_model_dir, cli_ok):
    out = tmp_path / "dpo"
    cli_ok("train", "--method", "dpo", "--model", tiny_model_dir, "--data", FIXTURES / "ultrafeedback.jsonl",
           "--data_format", "ultrafeedback", "--output_dir", out, "--max_steps", "1",
           "--per_device_train_batch_size", "2", "--max_length", "128", "--report_to", "none", "--save_strategy",
           "no", "--use_cpu", "true", "--use_peft", "--lora_r", "4", "--lora_target_modules", "gate_proj", "up_proj")
    results = json.loads((out / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"]) and results["train_examples"] == 3
    card = (out / "README.md").read_text()
    assert "DPO from scores" in card and "library_name: peft" in card
    assert (out / "adapter_model.safetensors").is_file()


def test_refine_writes_canonical_data_and_resumes(tmp_path, tiny_model_dir, shepherd_dir, cli_ok):
    from cutalign.data.converters import convert
    from cutalign.data.io import load_judged_dataset, write_jsonl

    examples = convert("shepherd", [shepherd_dir])[0][:3]
    for e in examples:
        e["refinement"] = None
    examples[2]["label"], examples[2]["judgment"] = True, None
    data, out = tmp_path / "judged.jsonl", tmp_path / "refined.jsonl"
    write_jsonl(examples, data)
    args = ("refine", "--model", tiny_model_dir, "--data", data, "--output", out, "--max-new-tokens", "3",
            "--prompt_template", "Fix {response} given {judgment}")
    assert "2 refined" in " ".join(cli_ok(*args).output.split())
    refined, dropped = load_judged_dataset(out)
    assert len(refined) == 3 and not dropped and refined["refinement"][2] is None
    assert "3 already there" in " ".join(cli_ok(*args).output.split())
    assert len(out.read_text().splitlines()) == 3


def test_refine_rejects_a_bad_prompt_template_and_overwriting_its_input(tmp_path, tiny_model_dir):
    data = tmp_path / "judged.jsonl"
    data.write_text(json.dumps({"prompt": "Q", "completion": "A", "judgment": "Wrong."}) + "\n")
    result = runner.invoke(app, ["refine", "--model", str(tiny_model_dir), "--data", str(data), "--output",
                                 str(tmp_path / "o.jsonl"), "--prompt-template", "{answer}"])
    assert result.exit_code == 2 and "answer" in result.output
    result = runner.invoke(app, ["refine", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(data)])
    assert result.exit_code == 2 and "new file" in result.output
