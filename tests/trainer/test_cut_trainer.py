"""CUTTrainer on a tiny Llama with the real Llama-2 tokenizer and the paper's online data."""

from __future__ import annotations

import json

import pytest
import torch

from cutalign.demo.assets import tiny_causal_lm
from cutalign.trainer.config import CUTConfig
from cutalign.trainer.cut_trainer import CUTTrainer


def make_config(tmp_path, **overrides) -> CUTConfig:
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to=[], max_length=256, disable_tqdm=True,
        use_cpu=True, lr_scheduler_type="constant", disable_dropout=True,
    )
    base.update(overrides)
    return CUTConfig(**base)


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("misalign_mode", ["fake_positive", "instruction_only"])
def test_two_steps_change_parameters_and_log_cut_metrics(tmp_path, tokenizer, online_examples, misalign_mode):
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    before = params(model)
    trainer = CUTTrainer(model, make_config(tmp_path, misalign_mode=misalign_mode),
                         train_dataset=online_examples, processing_class=tokenizer)
    assert trainer.nograd_contexts == (("misaligned",) if misalign_mode == "fake_positive" else ())
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    changed = [k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert changed, "no parameter changed after two CUT steps"
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"unlikely_fraction", "tokens_per_second", "useful_token_fraction"} <= logged
    # Packed rows bounded by the longest sequence pad their tails: real tokens are counted, not positions.
    useful = [entry["useful_token_fraction"] for entry in trainer.state.log_history if "useful_token_fraction" in entry]
    assert all(0.5 < fraction <= 1 for fraction in useful)


def test_positives_are_downsampled_and_counted(tmp_path, tokenizer, online_examples):
    negatives = sum(not e["label"] for e in online_examples)
    positives = len(online_examples) - negatives
    trainer = CUTTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path, max_length=4096),
                         train_dataset=online_examples, processing_class=tokenizer)
    assert "response_too_long" not in trainer.drop_report.counts
    kept_pos = sum(not x for x in trainer.train_dataset["is_negative"])
    assert kept_pos == min(positives, int(0.25 * negatives))
    assert trainer.drop_report.counts["positive_downsampled"] == positives - kept_pos


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, tokenizer, online_examples):
    """Paper mode: micro-batches of 2 and 1 give the same update as one batch of 3 (a plain mean of
    micro-batch means would weight the single example twice)."""
    negatives = [e for e in online_examples if not e["label"] and len(e["completion"]) < 600]
    positives = [e for e in online_examples if e["label"] and len(e["completion"]) < 600]
    data = [negatives[0], positives[0], negatives[1]]

    def run(batch: int, accumulation: int) -> dict[str, torch.Tensor]:
        model = tiny_causal_lm(tokenizer, hidden_size=32)
        config = make_config(tmp_path / f"b{batch}", per_device_train_batch_size=batch, max_steps=1,
                             gradient_accumulation_steps=accumulation, train_sampling_strategy="sequential",
                             positive_ratio=None, optim="sgd", learning_rate=1.0)
        CUTTrainer(model, config, train_dataset=data, processing_class=tokenizer).train()
        return params(model)

    big, accumulated = run(3, 1), run(2, 2)
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], atol=2e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize(("overrides", "grad", "nograd"), [
    ({}, ("plain", "judged"), ("misaligned",)),
    ({"misalign_mode": "instruction_only"}, ("plain", "judged"), ()),
    ({"no_align_n": True}, ("plain",), ("judged", "misaligned")),
    ({"no_align_n": True, "no_detection": True}, ("plain",), ()),
    ({"no_align_n": True, "no_detection": True, "gamma": 0.5}, ("plain",), ("judged",)),
    ({"no_l1": True}, ("plain", "judged"), ()),
])
def test_only_the_contexts_the_loss_reads_are_computed(tmp_path, tokenizer, online_examples, overrides, grad,
                                                       nograd):
    trainer = CUTTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path, **overrides),
                         train_dataset=online_examples[:8], processing_class=tokenizer)
    assert (trainer.grad_contexts, trainer.nograd_contexts) == (grad, nograd)


def test_resume_from_checkpoint_continues_identically(tmp_path, tokenizer, online_examples):
    def config(out, steps):
        return make_config(out, max_steps=steps, save_strategy="steps", save_steps=2, positive_ratio=None)

    straight = tiny_causal_lm(tokenizer, hidden_size=32)
    CUTTrainer(straight, config(tmp_path / "a", 4), train_dataset=online_examples, processing_class=tokenizer).train()

    first = tiny_causal_lm(tokenizer, hidden_size=32)
    CUTTrainer(first, config(tmp_path / "b", 2), train_dataset=online_examples, processing_class=tokenizer).train()
    resumed = tiny_causal_lm(tokenizer, hidden_size=32, seed=123)  # different init: everything must come from the checkpoint
    trainer = CUTTrainer(resumed, config(tmp_path / "b", 4), train_dataset=online_examples,
                         processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-2"))
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def test_lora_trains_only_the_adapter_and_saves_it(tmp_path, tokenizer, online_examples):
    from peft import LoraConfig

    model = tiny_causal_lm(tokenizer, hidden_size=32)
    base = params(model)
    lora = LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, target_modules=["gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM")
    trainer = CUTTrainer(model, make_config(tmp_path), train_dataset=online_examples, processing_class=tokenizer,
                         peft_config=lora)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    for name, value in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(value, base[name.replace("base_layer.", "")], msg=name)


def test_eval_dataset_reports_eval_loss(tmp_path, tokenizer, online_examples):
    trainer = CUTTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path), train_dataset=online_examples[:24],
                         eval_dataset=online_examples[24:], processing_class=tokenizer)
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))
    assert "eval_unlikely_fraction" in metrics


def test_model_card_names_method_and_paper(tmp_path, tokenizer, online_examples):
    trainer = CUTTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path), train_dataset=online_examples,
                         processing_class=tokenizer)
    trainer.train()
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Contrastive Unlikelihood Training" in card and "2312.14591" in card
    summary = json.loads(card.split("```json")[1].split("```")[0])
    assert summary["train_examples"] == len(trainer.train_dataset)
    assert summary["selected_out"]["positive_downsampled"] > 0 and "positive_downsampled" not in summary["dropped"]


def test_config_validation_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="misalign_mode"):
        make_config(tmp_path, misalign_mode="bare")
    with pytest.raises(ValueError, match="threshold"):
        make_config(tmp_path, threshold=0)
    with pytest.raises(ValueError, match="template"):
        make_config(tmp_path, template="vicuna")


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_padding_free_batches_give_the_same_loss(tmp_path, tokenizer, online_examples, mode):
    """Packing rows with restarting position_ids changes the layout, never the loss."""
    losses = []
    for padding_free in (False, True):
        trainer = CUTTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path, padding_free=padding_free,
                             mode=mode), train_dataset=online_examples[:16], eval_dataset=online_examples[16:32],
                             processing_class=tokenizer)
        losses.append(trainer.evaluate()["eval_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
