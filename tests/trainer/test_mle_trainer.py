"""MLE baselines (sft, hindsight, forward prediction, ILF-MLE) on a tiny Llama with real judged data."""

from __future__ import annotations

import pytest
import torch

from cutalign.data.templates import ALPACA_JUDGED, ALPACA_PLAIN, DEFAULT_FAKE_POSITIVE, JUDGE_PROMPT
from cutalign.demo.assets import tiny_causal_lm
from cutalign.trainer.config import MLEConfig, SFTConfig
from cutalign.trainer.mle_trainer import (
    ForwardPredictionTrainer,
    HindsightTrainer,
    ILFMLETrainer,
    SFTTrainer,
    mean_nll_per_example,
)

TRAINERS = {"sft": SFTTrainer, "hindsight": HindsightTrainer, "forward_prediction": ForwardPredictionTrainer,
            "ilf_mle": ILFMLETrainer}


def make_config(tmp_path, config_cls=MLEConfig, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=1, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to=[], max_length=256, disable_tqdm=True, use_cpu=True,
        lr_scheduler_type="constant", disable_dropout=True,
    )
    base.update(overrides)
    return config_cls(**base)


@pytest.fixture(scope="module")
def shepherd_examples(shepherd_dir):
    """The first 12 Shepherd examples: all negatives, each with a corrected answer (`refinement`)."""
    from cutalign.data.converters import convert

    return convert("shepherd", [shepherd_dir])[0][:12]


@pytest.mark.parametrize("method", ["sft", "hindsight", "ilf_mle"])  # forward_prediction: see the GA test
def test_a_step_changes_parameters_and_logs_each_context(tmp_path, tokenizer, online_examples, shepherd_examples,
                                                          method):
    trainer_cls = TRAINERS[method]
    data = shepherd_examples if method == "ilf_mle" else online_examples[:16]
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    config = make_config(tmp_path, SFTConfig if method == "sft" else MLEConfig)
    trainer = trainer_cls(model, config, train_dataset=data, processing_class=tokenizer)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(v.detach(), before[k]) for k, v in model.named_parameters())
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {f"nll_{context}" for context in trainer.grad_contexts} <= logged
    assert trainer.method_name == method


def test_sft_trains_on_positives_and_counts_excluded_negatives(tmp_path, tokenizer, online_examples):
    data = online_examples[:24]
    negatives = sum(not e["label"] for e in data)
    assert 0 < negatives < len(data)
    trainer = SFTTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path, SFTConfig, max_length=4096),
                         train_dataset=data, processing_class=tokenizer)
    assert not any(trainer.train_dataset["is_negative"])
    assert len(trainer.train_dataset) == len(data) - negatives
    assert trainer.drop_report.counts["negative_excluded"] == negatives
    everything = SFTTrainer(tiny_causal_lm(tokenizer, hidden_size=32),
                            make_config(tmp_path, SFTConfig, max_length=4096, sft_include_negatives=True),
                            train_dataset=data, processing_class=tokenizer)
    assert len(everything.train_dataset) == len(data) and not everything.drop_report


def test_positive_ratio_downsamples_like_cut(tmp_path, tokenizer, online_examples):
    negatives = sum(not e["label"] for e in online_examples)
    trainer = HindsightTrainer(tiny_causal_lm(tokenizer, hidden_size=32),
                               make_config(tmp_path, positive_ratio=0.25, max_length=4096),
                               train_dataset=online_examples, processing_class=tokenizer)
    assert sum(not x for x in trainer.train_dataset["is_negative"]) == int(0.25 * negatives)


def _expected_row(tokenizer, prompt_text: str, target_text: str) -> list[int]:
    """BOS + the prompt + the target as the tokenizer continues the prompt (joint ids) + EOS."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    joint = tokenizer(prompt_text + target_text, add_special_tokens=False)["input_ids"]
    assert joint[:len(prompt_ids)] == prompt_ids  # the templates end with a newline: no merge across it
    return [tokenizer.bos_token_id, *joint, tokenizer.eos_token_id]


def _rows(block) -> list[list[int]]:
    """The unpadded token rows of a collated block."""
    return [[t for t, m in zip(row, mask, strict=True) if m] for row, mask in
            zip(block["input_ids"].tolist(), block["attention_mask"].tolist(), strict=True)]


def test_hindsight_rows_are_judged_template_then_response(tmp_path, tokenizer, online_examples):
    negative = next(e for e in online_examples if not e["label"])
    positive = next(e for e in online_examples if e["label"])
    trainer = HindsightTrainer(tiny_causal_lm(tokenizer, hidden_size=32),
                               make_config(tmp_path, max_length=4096, padding_free=False),
                               train_dataset=[negative, positive], processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    rows = _rows(batch["grad"])
    expected_neg = _expected_row(tokenizer, ALPACA_JUDGED.format(instruction=negative["prompt"],
                                                                 judgment=negative["judgment"]), negative["completion"])
    expected_pos = _expected_row(tokenizer, ALPACA_JUDGED.format(instruction=positive["prompt"],
                                                                 judgment=DEFAULT_FAKE_POSITIVE), positive["completion"])
    assert rows == [expected_neg, expected_pos]
    text = tokenizer.decode(rows[0], skip_special_tokens=True)
    assert f"### Judgment:\n{negative['judgment']}" in text and text.endswith(negative["completion"].strip())
    # The targets are exactly the response + EOS, read at the positions that predict them.
    block = batch["grad"]
    predicted = block["input_ids"].flatten()[block["logit_index"] + 1]
    assert torch.equal(predicted, block["target_ids"])
    prompt_len = len(tokenizer(ALPACA_JUDGED.format(instruction=negative["prompt"], judgment=negative["judgment"]),
                               add_special_tokens=False)["input_ids"])
    response_ids = expected_neg[1 + prompt_len:]  # the response as it continues the prompt, then EOS
    assert block["target_ids"][block["example_index"] == 0].tolist() == response_ids


def test_forward_prediction_rows_are_response_then_judgment(tmp_path, tokenizer, online_examples):
    negative = next(e for e in online_examples if not e["label"])
    trainer = ForwardPredictionTrainer(tiny_causal_lm(tokenizer, hidden_size=32),
                                       make_config(tmp_path, max_length=4096, padding_free=False), train_dataset=[negative],
                                       processing_class=tokenizer)
    block = trainer.data_collator([trainer.train_dataset[0]])["grad"]
    plain, critique = _rows(block)
    assert plain == _expected_row(tokenizer, ALPACA_PLAIN.format(instruction=negative["prompt"]), negative["completion"])
    judge_prompt = JUDGE_PROMPT.format(instruction=negative["prompt"], response=negative["completion"])
    expected_critique = _expected_row(tokenizer, judge_prompt, negative["judgment"])
    assert critique == expected_critique
    judgment_ids = expected_critique[1 + len(tokenizer(judge_prompt, add_special_tokens=False)["input_ids"]):]
    assert block["target_ids"][block["context_index"] == 1].tolist() == judgment_ids


def test_loss_is_sum_of_per_context_means_averaged_over_examples():
    """Forward prediction: each part normalised by its own length, then the mean over examples."""
    logp_y = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, 0.0, 0.0]])
    mask_y = torch.tensor([[True, True, False], [True, False, False]])
    logp_j = torch.tensor([[-4.0, -4.0, -1.0], [0.0, 0.0, 0.0]])
    mask_j = torch.tensor([[True, True, True], [False, False, False]])
    nll_y, has_y = mean_nll_per_example(logp_y, mask_y)
    nll_j, has_j = mean_nll_per_example(logp_j, mask_j)
    assert nll_y.tolist() == [2.0, 2.0] and has_y.tolist() == [True, True]
    assert nll_j.tolist() == [3.0, 0.0] and has_j.tolist() == [True, False]


def test_gradient_accumulation_is_exact_with_unequal_micro_batches(tmp_path, tokenizer, online_examples):
    """Per-example means: micro-batches of 2 and 1 give the same update as one batch of 3 (forward prediction)."""
    short = [e for e in online_examples if len(e["completion"]) + len(e["judgment"] or "") < 400][:3]

    initial = {k: v.detach().clone() for k, v in tiny_causal_lm(tokenizer, hidden_size=32).named_parameters()}

    def run(batch: int, accumulation: int) -> dict[str, torch.Tensor]:
        model = tiny_causal_lm(tokenizer, hidden_size=32)
        config = make_config(tmp_path / f"b{batch}", per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, train_sampling_strategy="sequential",
                             optim="sgd", learning_rate=1.0)
        trainer = ForwardPredictionTrainer(model, config, train_dataset=short, processing_class=tokenizer)
        assert len(trainer.train_dataset) == 3
        trainer.train()
        logged = trainer.state.log_history[0]
        assert torch.isfinite(torch.tensor(logged["loss"])) and {"nll_plain", "nll_critique"} <= set(logged)
        return {k: v.detach() for k, v in model.named_parameters()}

    big, accumulated = run(3, 1), run(2, 2)
    assert any(not torch.equal(big[name], initial[name]) for name in big)
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], atol=2e-6, rtol=1e-5, msg=name)


def test_ilf_mle_needs_refinements_and_uses_positives_own_response(tmp_path, tokenizer, online_examples):
    with pytest.raises(ValueError, match="cutalign refine"):
        ILFMLETrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path),
                      train_dataset=online_examples[:8], processing_class=tokenizer)
    negative = {**next(e for e in online_examples if not e["label"]), "refinement": "A better answer."}
    unrefined = next(e for e in online_examples if not e["label"] and e is not negative)
    positive = next(e for e in online_examples if e["label"])
    trainer = ILFMLETrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path, max_length=4096),
                            train_dataset=[negative, unrefined, positive], processing_class=tokenizer)
    assert trainer.drop_report.counts == {"missing_refinement": 1}
    targets = [tokenizer.decode(row["refined_target_ids"], skip_special_tokens=True)
               for row in trainer.train_dataset]
    assert targets == ["A better answer.", positive["completion"].strip()]


def test_trainer_rejects_a_config_of_another_method(tmp_path, tokenizer, online_examples):
    with pytest.raises(TypeError, match="SFTConfig"):
        SFTTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path),
                   train_dataset=online_examples[:4], processing_class=tokenizer)
