"""The offline tokenizer and tiny models; the slow test checks the demo model can learn the world."""

from __future__ import annotations

import random
import re
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cutalign.data.templates import ALPACA_PLAIN
from cutalign.demo.sample import load_sample, sample_world
from cutalign.lab.models import demo_model_and_tokenizer, tiny_causal_lm
from cutalign.lab.tokenizer import build_demo_tokenizer, default_tokenizer_texts
from cutalign.lab.world import evaluate_accuracy, evaluation_set


@pytest.fixture(scope="module")
def tokenizer():
    return build_demo_tokenizer()


def test_tokenizer_is_fast_deterministic_and_has_the_special_tokens(tokenizer) -> None:
    started = time.perf_counter()
    again = build_demo_tokenizer()
    assert time.perf_counter() - started < 2.0
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    specials = (tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token)
    assert specials == ("<unk>", "<s>", "</s>", "<pad>")
    assert (
        len({tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id})
        == 4
    )
    assert tokenizer("The capital").input_ids[0] == tokenizer.bos_token_id  # like Llama-2
    assert tokenizer("The capital", add_special_tokens=False).input_ids[0] != tokenizer.bos_token_id


def test_tokenizer_never_hits_unk_and_round_trips_text(tokenizer) -> None:
    texts = [*default_tokenizer_texts(), "Unseen wörds, emoji 🙂 and\ttabs."]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text


def test_world_words_are_single_tokens(tokenizer) -> None:
    # what makes the tiny model learn fast: a fact's value is one token to predict
    for example in load_sample():
        for word in re.findall(r"\w+", example["completion"]):
            assert len(tokenizer(" " + word, add_special_tokens=False).input_ids) == 1, word


def test_tokenizer_save_and_reload(tokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = ALPACA_PLAIN.format(instruction=load_sample()[0]["prompt"]) + load_sample()[0]["completion"]
    assert reloaded(text).input_ids == tokenizer(text).input_ids
    assert reloaded.chat_template == tokenizer.chat_template
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (1, 2, 3)


def test_chat_template_is_llama2_style(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who is X?"},
        {"role": "assistant", "content": "X is a poet."},
        {"role": "user", "content": "And Y?"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert (
        text
        == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWho is X? [/INST] X is a poet. </s><s>[INST] And Y? [/INST]"
    )
    ids = tokenizer.apply_chat_template(messages[1:2], tokenize=True, return_dict=False)
    assert ids[:2] != [tokenizer.bos_token_id] * 2 and ids[0] == tokenizer.bos_token_id
    with pytest.raises(Exception, match="unsupported chat role: tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


@pytest.mark.parametrize(("arch", "tied"), [("llama", False), ("qwen2", True), ("gpt2", True)])
def test_tiny_causal_lm_per_arch(tokenizer, arch: str, tied: bool) -> None:
    model = tiny_causal_lm(tokenizer, arch, hidden_size=32, num_heads=2)
    assert model.config.model_type == arch and model.config.tie_word_embeddings is tied
    assert (model.get_input_embeddings().weight is model.get_output_embeddings().weight) is tied
    ids = (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id)
    assert ids == (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(["The capital of", "Who"], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape == (2, batch.input_ids.shape[1], len(tokenizer)) and model.dtype == torch.float32


def test_tiny_causal_lm_seeding_and_overrides(tokenizer, tmp_path) -> None:
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    first = tiny_causal_lm(tokenizer, seed=5)
    assert torch.equal(torch.rand(1), expected_next)  # the global RNG is untouched
    weights = first.get_input_embeddings().weight
    assert torch.equal(tiny_causal_lm(tokenizer, seed=5).get_input_embeddings().weight, weights)
    assert not torch.equal(tiny_causal_lm(tokenizer, seed=6).get_input_embeddings().weight, weights)
    gqa = tiny_causal_lm(tokenizer, "qwen2", num_key_value_heads=2, rope_theta=500.0)
    assert gqa.config.num_key_value_heads == 2
    first.save_pretrained(tmp_path)
    assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path).get_input_embeddings().weight, weights)


def test_tiny_causal_lm_from_a_vocab_size_and_bad_arguments() -> None:
    model = tiny_causal_lm(100, "gpt2", hidden_size=16, num_layers=1, num_heads=2)
    assert model.config.vocab_size == 100
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (None,) * 3
    with pytest.raises(ValueError, match="unknown arch"):
        tiny_causal_lm(100, "mamba")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        tiny_causal_lm(100, hidden_size=30, num_heads=4)


def test_tiny_causal_lm_with_the_llama2_tokenizer(llama2_tokenizer) -> None:
    model = tiny_causal_lm(llama2_tokenizer, hidden_size=32)
    assert model.config.vocab_size == len(llama2_tokenizer)
    assert model.config.pad_token_id == llama2_tokenizer.eos_token_id  # Llama-2 has no pad token


def test_demo_pair_matches() -> None:
    model, tokenizer = demo_model_and_tokenizer()
    assert model.config.vocab_size == len(tokenizer) and model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 500_000


def positive_mle_batches(tokenizer, batch_size: int, seed: int):
    """Endless batches of the sample's positives: Alpaca prompt masked, response + EOS learned."""
    rows = []
    for example in (e for e in load_sample() if e["label"]):
        prompt = tokenizer(ALPACA_PLAIN.format(instruction=example["prompt"])).input_ids
        response = [
            *tokenizer(example["completion"], add_special_tokens=False).input_ids,
            tokenizer.eos_token_id,
        ]
        rows.append((prompt + response, [-100] * len(prompt) + response))
    rng = random.Random(seed)
    while True:
        batch = rng.sample(rows, batch_size)
        width = max(len(ids) for ids, _ in batch)
        yield {
            "input_ids": torch.tensor(
                [ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch]
            ),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch]),
            "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in batch]),
        }


@pytest.mark.slow
def test_demo_model_learns_the_world() -> None:
    """Plain MLE on the positives moves fact accuracy from ~0 to well above the blind-guess bar.

    300 steps take about 10 s on 2 idle CPU cores; accuracy after them was 0.76-0.85 over seeds 0-2.
    """
    model, tokenizer = demo_model_and_tokenizer(seed=0)
    questions = evaluation_set(sample_world())

    def accuracy() -> float:
        return evaluate_accuracy(model, tokenizer, questions, lambda q: ALPACA_PLAIN.format(instruction=q))

    before = accuracy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    batches = positive_mle_batches(tokenizer, batch_size=16, seed=0)
    model.train()
    started = time.perf_counter()
    for _ in range(300):
        model(**next(batches)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - started
    after = accuracy()
    print(f"accuracy {before:.3f} -> {after:.3f} after 300 steps in {seconds:.1f} s")
    assert before < 0.05
    assert after > 0.6
