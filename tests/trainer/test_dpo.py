"""DPO baselines: pair building on hand-made data, tokenisation, and short TRL runs on a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cutalign.data.templates import ALPACA_PLAIN, AlpacaTemplate
from cutalign.demo.assets import tiny_causal_lm
from cutalign.trainer.dpo import (
    JudgmentDPOConfig,
    RefinementDPOTrainer,
    ScoreDPOTrainer,
    refinement_pairs,
    score_pairs,
    tokenize_pairs,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def example(id_, prompt, completion, score=None, label=False, refinement=None, judgment="Wrong."):
    return {"id": id_, "prompt": prompt, "completion": completion, "judgment": judgment, "label": label,
            "score": score, "refinement": refinement}


def summary(pairs):
    return [(p["chosen_id"], p["rejected_id"]) for p in pairs]


def test_score_pairs_every_differing_pair_higher_preferred():
    examples = [example("a", "Q1", "A", 3.0), example("b", "Q1", "B", 8.0), example("c", "Q1", "C", 5.0)]
    pairs, report = score_pairs(examples)
    assert summary(pairs) == [("b", "a"), ("c", "a"), ("b", "c")]
    assert pairs[0] == {"prompt": "Q1", "chosen": "B", "rejected": "A", "chosen_id": "b", "rejected_id": "a"}
    assert not report


def test_score_pairs_ties_singles_missing_scores_and_duplicates_are_counted():
    examples = [
        example("t1", "tie", "X", 5.0), example("t2", "tie", "Y", 5.0),  # only a tie: no pair
        example("s1", "single", "Z", 9.0),  # the only completion of its prompt
        example("m1", "Q", "M", None), example("q1", "Q", "P", 2.0), example("q2", "Q", "R", 4.0),
        example("q3", "Q", "R ", 1.0),  # same response text (up to whitespace) as q2
        example("q4", "Q", "S", 4.0),  # ties with q2 but beats q1: used
    ]
    pairs, report = score_pairs(examples)
    assert summary(pairs) == [("q2", "q1"), ("q4", "q1")]
    assert report.as_dict() == {"duplicate_completion": 1, "missing_score": 1, "single_completion": 1,
                                "tied_scores": 2}
    assert report.samples["tied_scores"] == ["t1", "t2"] and report.samples["duplicate_completion"] == ["q3"]


def test_score_pairs_group_conversational_prompts_by_their_messages():
    chat_a = [{"role": "user", "content": "Hi"}]
    chat_b = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    examples = [example(None, chat_a, "Hello!", 9.0), example(None, chat_b, "Hey.", 2.0),
                example(None, [dict(m) for m in chat_a], "Go away.", 1.0)]
    pairs, report = score_pairs(examples)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [(chat_a, "Hello!", "Go away.")]
    assert report.as_dict() == {"single_completion": 1} and report.samples["single_completion"] == ["#1"]


def test_refinement_pairs_prefer_the_refinement():
    examples = [
        example("n1", "Q", "bad", refinement="good"),
        example("n2", "Q", "bad"),  # negative without refinement
        example("p1", "Q", "fine", label=True, judgment=None),
        example("n3", "Q", "same", refinement="same\n"),
    ]
    pairs, report = refinement_pairs(examples)
    assert pairs == [{"prompt": "Q", "chosen": "good", "rejected": "bad", "chosen_id": "n1", "rejected_id": "n1"}]
    assert report.as_dict() == {"missing_refinement": 1, "positive_without_refinement": 1,
                                "refinement_equals_response": 1}


def test_tokenize_pairs_render_the_plain_template_and_cut_the_prompt_from_the_left(tokenizer):
    pairs = [{"prompt": "Name a color.", "chosen": "Red.", "rejected": "Seven.", "chosen_id": "1", "rejected_id": "2"}]
    dataset, report = tokenize_pairs(pairs, tokenizer, AlpacaTemplate(), max_length=512)
    row = dataset[0]
    prompt_ids = tokenizer(ALPACA_PLAIN.format(instruction="Name a color."), add_special_tokens=False)["input_ids"]
    assert row["prompt_ids"] == [tokenizer.bos_token_id, *prompt_ids]
    assert row["chosen_ids"] == [*tokenizer("Red.", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert tokenizer.decode(row["rejected_ids"], skip_special_tokens=True) == "Seven."
    assert not report

    rejected_len = len(row["rejected_ids"])
    short, _ = tokenize_pairs(pairs, tokenizer, AlpacaTemplate(), max_length=rejected_len + 5)
    assert short[0]["prompt_ids"] == [tokenizer.bos_token_id, *prompt_ids[-4:]]
    none, too_long = tokenize_pairs(pairs, tokenizer, AlpacaTemplate(), max_length=rejected_len)
    assert len(none) == 0 and too_long.as_dict() == {"response_too_long": 1}


def make_config(tmp_path, **overrides) -> JudgmentDPOConfig:
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=1, learning_rate=1e-2,
                logging_steps=1, save_strategy="no", report_to=[], max_length=256, disable_tqdm=True, use_cpu=True,
                lr_scheduler_type="constant")
    base.update(overrides)
    return JudgmentDPOConfig(**base)


@pytest.fixture(scope="module")
def scored_examples():
    """Canonical examples of the UltraFeedback fixture: 3 scored completions of one prompt, plus drops."""
    from cutalign.data.converters import convert

    return convert("ultrafeedback", [FIXTURES / "ultrafeedback.jsonl"])[0]


def test_dpo_trains_against_a_frozen_reference_and_writes_our_model_card(tmp_path, tokenizer, scored_examples):
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = ScoreDPOTrainer(model, make_config(tmp_path), train_dataset=scored_examples,
                              processing_class=tokenizer)
    assert len(trainer.train_dataset) == 3 and trainer.drop_report.as_dict() == {"single_completion": 1}
    assert trainer.ref_model is not None and trainer.ref_model is not model
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(v.detach(), before[k]) for k, v in model.named_parameters())
    for name, value in trainer.ref_model.named_parameters():
        torch.testing.assert_close(value, before[name], msg=name)
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "DPO from scores" in card and "2312.14591" in card
    assert json.loads(card.split("```json")[1].split("```")[0])["preference_pairs"] == 3


def test_ilf_dpo_with_lora_trains_only_the_adapter(tmp_path, tokenizer, shepherd_dir):
    from peft import LoraConfig

    from cutalign.data.converters import convert

    short = [e for e in convert("shepherd", [shepherd_dir])[0]
             if len(e["prompt"]) + len(e["completion"]) + len(e["refinement"]) < 500]
    examples = short[:4]
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    lora = LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, target_modules=["gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM")
    trainer = RefinementDPOTrainer(model, make_config(tmp_path), train_dataset=examples,
                                   processing_class=tokenizer, peft_config=lora)
    assert trainer.ref_model is None  # the reference is the model with the adapter disabled
    adapters = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss)) and trainer.method_name == "ilf_dpo"
    assert any(not torch.equal(v.detach(), adapters[k]) for k, v in trainer.model.named_parameters() if k in adapters)
    for name, value in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(value, base[name.replace("base_layer.", "")], msg=name)


def test_no_pairs_is_a_clear_error(tmp_path, tokenizer, online_examples):
    with pytest.raises(ValueError, match="different scores for the same prompt"):
        ScoreDPOTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path),
                        train_dataset=online_examples[:4], processing_class=tokenizer)
    with pytest.raises(ValueError, match="cutalign refine"):
        RefinementDPOTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path),
                             train_dataset=online_examples[:4], processing_class=tokenizer)


def test_config_has_dpo_and_shared_judgment_fields_with_cutalign_defaults(tmp_path):
    config = make_config(tmp_path)
    assert config.beta == 0.1 and config.loss_type == ["sigmoid"]  # TRL's
    assert (config.template, config.max_length, config.score_threshold) == ("alpaca", 256, 7.0)
    defaults = JudgmentDPOConfig(output_dir=str(tmp_path), use_cpu=True)
    assert (defaults.learning_rate, defaults.seed, defaults.max_length, defaults.bf16) == (4e-4, 42, 2048, False)
    with pytest.raises(ValueError, match="template"):
        make_config(tmp_path, template="vicuna")


def test_mle_and_dpo_methods_start_from_the_same_lora_adapter(tmp_path, tokenizer, scored_examples, online_examples):
    """Same seed, same LoRA settings: every method's adapter starts identical, whatever the RNG did before."""
    from peft import LoraConfig

    from cutalign.trainer.config import MLEConfig
    from cutalign.trainer.mle_trainer import HindsightTrainer

    def lora() -> LoraConfig:
        return LoraConfig(r=4, lora_alpha=4, target_modules=["gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM")

    torch.manual_seed(1)
    mle = HindsightTrainer(tiny_causal_lm(tokenizer, hidden_size=32),
                           MLEConfig(output_dir=str(tmp_path / "mle"), use_cpu=True, report_to=[], max_length=256),
                           train_dataset=online_examples[:4], processing_class=tokenizer, peft_config=lora())
    torch.manual_seed(2)
    dpo = ScoreDPOTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path), processing_class=tokenizer,
                          train_dataset=scored_examples, peft_config=lora())
    mle_adapter = {k: v for k, v in mle.model.named_parameters() if "lora_A" in k}
    dpo_adapter = {k: v for k, v in dpo.model.named_parameters() if "lora_A" in k}
    assert mle_adapter and mle_adapter.keys() == dpo_adapter.keys()
    for name, value in mle_adapter.items():
        torch.testing.assert_close(value, dpo_adapter[name], msg=name)
