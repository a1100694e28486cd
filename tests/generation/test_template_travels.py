"""Templates travel with the model: `train --template chat --chat_template llama2` on the shared Llama-2
tokenizer (which has no chat template), `merge`, then `generate` on the merged model prompts with it, unasked."""

from __future__ import annotations

import json

import pytest
import yaml

from cutalign.data.templates import ChatTemplate
from cutalign.generation import SamplingParams, TransformersGenerator


@pytest.mark.slow  # trains: ~15 s on 2 shared cores
def test_train_with_a_named_chat_template_then_merge_then_generate_uses_it(tmp_path, tiny_model_dir, cut_online_dir, cli_ok):
    out = tmp_path / "out"
    cli_ok("train", "--method", "cut", "--model", tiny_model_dir, "--data",
           cut_online_dir / "train-alpaca-sample-iter2.json", "--data_format", "cut-alpaca", "--output_dir", out,
           "--max_steps", "1", "--per_device_train_batch_size", "2", "--max_length", "128", "--report_to", "none",
           "--save_strategy", "no", "--template", "chat", "--chat_template", "llama2", "--system_prompt", "Be brief.",
           "--use_peft", "--lora_r", "2", "--lora_target_modules", "down_proj")
    saved = yaml.safe_load((out / "cutalign_config.yaml").read_text())
    assert (saved["template"], saved["chat_template"], saved["system_prompt"]) == ("chat", "llama2", "Be brief.")
    merged = tmp_path / "merged"
    cli_ok("merge", out, "--output", merged)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": 1, "prompt": "Name a color."}) + "\n")
    generations = tmp_path / "gen.jsonl"
    result = cli_ok("generate", "--model", merged, "--data", prompts, "-o", generations, "--max_new_tokens", "4")
    assert "template: chat (llama2)" in result.output
    local = TransformersGenerator.from_pretrained(str(merged), device="cpu")
    assert isinstance(local.template, ChatTemplate) and local.tokenizer.chat_template  # saved with the tokenizer
    text = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nName a color. [/INST]"
    assert local.template.plain("Name a color.") == text
    row = json.loads(generations.read_text())
    assert row["completion"] == local.generate([text], SamplingParams(max_new_tokens=4))[0].text
