"""ContextCollator and block_to_matrices against per-row references, and on a tiny Llama."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from cutalign.data.collator import ContextCollator, block_to_matrices
from cutalign.data.templates import AlpacaTemplate
from cutalign.data.views import ViewBuilder

GRAD = ("plain", "judged", "critique")
NOGRAD = ("misaligned",)
PAD = 0

token_lists = st.lists(st.integers(1, 99), min_size=1, max_size=6)


@st.composite
def feature_dicts(draw) -> dict:
    """A random feature dict: any context may be absent (empty prompt); critique has its own target."""
    feature = {"completion_ids": draw(token_lists), "is_negative": draw(st.booleans())}
    for ctx in (*GRAD, *NOGRAD):
        feature[f"{ctx}_prompt_ids"] = draw(st.one_of(st.just([]), token_lists))
    feature["critique_target_ids"] = draw(token_lists) if feature["critique_prompt_ids"] else []
    return feature


def reference_rows(
    features: list[dict], contexts: tuple[str, ...]
) -> list[tuple[int, str, list[int], list[int]]]:
    """The per-row loop, context by context: (example, context, prompt, target) where a context applies."""
    return [
        (b, ctx, f[f"{ctx}_prompt_ids"], f.get(f"{ctx}_target_ids", f["completion_ids"]))
        for ctx in contexts
        for b, f in enumerate(features)
        if f[f"{ctx}_prompt_ids"]
    ]


def check_block(block: dict, features: list[dict], contexts: tuple[str, ...], padding_free: bool) -> None:
    rows = reference_rows(features, contexts)
    flat_ids, flat_pos = block["input_ids"].flatten(), block["position_ids"].flatten()
    assert block["input_ids"].shape[0] == (1 if padding_free else len(rows))
    assert ("attention_mask" in block) != padding_free
    if not padding_free:
        assert block["attention_mask"].sum(1).tolist() == [len(p) + len(t) for _, _, p, t in rows]
    # Each logit position holds the token before the target, at its in-sequence position, and the
    # row it belongs to starts (position 0) with the prompt's first token.
    logit_index = block["logit_index"]
    next_ids = flat_ids[logit_index + 1]
    assert next_ids.equal(block["target_ids"])
    row_start = logit_index - flat_pos[logit_index]
    by_context = {ctx: {} for ctx in contexts}
    for n in range(len(logit_index)):
        ctx = contexts[block["context_index"][n]]
        by_context[ctx][(int(block["example_index"][n]), int(block["token_index"][n]))] = n
    for b, ctx, prompt, target in rows:
        entries = [by_context[ctx].pop((b, k)) for k in range(len(target))]
        assert flat_pos[logit_index[entries]].tolist() == list(
            range(len(prompt) - 1, len(prompt) - 1 + len(target))
        )
        assert flat_ids[row_start[entries[0]] : row_start[entries[0]] + len(prompt)].tolist() == prompt
        assert flat_ids[logit_index[entries]].tolist() == [*prompt[-1:], *target[:-1]]
    assert all(not left for left in by_context.values()), "tokens without a reference row"

    matrices = block_to_matrices(block["target_ids"], block, contexts, len(features))
    for ctx in contexts:
        matrix, mask = matrices[ctx]
        targets = [(b, t) for b, c, _, t in rows if c == ctx]
        width = max((len(t) for _, t in targets), default=0)
        expected = torch.zeros(len(features), width, dtype=torch.long)
        for b, t in targets:
            expected[b, : len(t)] = torch.tensor(t)
        assert matrix.equal(expected) and mask.equal(expected != 0)


@settings(max_examples=60, deadline=None)
@given(
    features=st.lists(feature_dicts(), min_size=1, max_size=4),
    padding_free=st.booleans(),
    multiple=st.sampled_from([None, 1, 8]),
)
def test_collator_matches_the_per_row_reference(features, padding_free, multiple):
    features[0]["plain_prompt_ids"] = features[0]["plain_prompt_ids"] or [5]
    collator = ContextCollator(PAD, GRAD, NOGRAD, pad_to_multiple_of=multiple, padding_free=padding_free)
    batch = collator(features)
    assert batch["is_negative"].tolist() == [f["is_negative"] for f in features]
    check_block(batch["grad"], features, GRAD, padding_free)
    if any(f["misaligned_prompt_ids"] for f in features):
        check_block(batch["nograd"], features, NOGRAD, padding_free)
    else:
        assert "nograd" not in batch
    if multiple:
        assert batch["grad"]["input_ids"].shape[1] % multiple == 0


def test_block_to_matrices_lets_gradients_through():
    features = [
        {"completion_ids": [3, 4, 2], "plain_prompt_ids": [1, 9], "is_negative": True},
        {"completion_ids": [5, 2], "plain_prompt_ids": [1, 8, 8], "is_negative": False},
    ]
    block = ContextCollator(PAD, ("plain",), ())(features)["grad"]
    values = torch.arange(5, dtype=torch.float32, requires_grad=True)
    matrix, mask = block_to_matrices(values, block, ("plain",), 2)["plain"]
    assert matrix.tolist() == [[0, 1, 2], [3, 4, 0]] and mask.tolist() == [[True] * 3, [True, True, False]]
    (matrix * torch.tensor([[1.0, 2, 3], [4, 5, 6]])).sum().backward()
    assert values.grad.tolist() == [1, 2, 3, 4, 5]


def test_collator_errors_name_the_problem():
    feature = {"completion_ids": [2], "plain_prompt_ids": [1], "judged_prompt_ids": [], "is_negative": False}
    with pytest.raises(KeyError, match="build the views with the 'misaligned' context"):
        ContextCollator(PAD)([feature])
    with pytest.raises(ValueError, match="no example of this batch has a prompt"):
        ContextCollator(PAD, grad_contexts=("judged",), nograd_contexts=())([feature])


@pytest.fixture(scope="module")
def llama_features(llama2_tokenizer):
    """Views of hand-made examples, tokenised with the real Llama-2 tokenizer."""
    examples = [
        {
            "prompt": "Add 2 and 3.",
            "completion": "2 + 3 = 6.",
            "judgment": "The sum is wrong: it is 5.",
            "label": False,
        },
        {"prompt": "Name a primary color.", "completion": "Red.", "judgment": None, "label": True},
        {
            "prompt": "Translate 'chat' to English.",
            "completion": "Dog.",
            "judgment": "Wrong: cat.",
            "label": False,
        },
    ]
    builder = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=64)
    return [
        builder.build({"id": None, "score": None, "refinement": None, **e}, GRAD[:2] + NOGRAD)
        for e in examples
    ]


def tiny_llama(vocab_size: int, attn_implementation: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation=attn_implementation,
    )
    return LlamaForCausalLM(config).eval()


def target_log_probs(model, block: dict) -> torch.Tensor:
    inputs = {k: block[k] for k in ("input_ids", "attention_mask", "position_ids") if k in block}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits
    log_probs = torch.log_softmax(logits.flatten(0, 1)[block["logit_index"]], dim=-1)
    return log_probs.gather(-1, block["target_ids"][:, None]).squeeze(-1)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_tiny_llama_padded_and_padding_free_agree(llama_features, llama2_tokenizer, attn_implementation):
    model = tiny_llama(len(llama2_tokenizer), attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    contexts = GRAD[:2]
    padded = ContextCollator(PAD, contexts, (), pad_to_multiple_of=8)(llama_features)["grad"]
    packed = ContextCollator(PAD, contexts, (), pad_to_multiple_of=8, padding_free=True)(llama_features)[
        "grad"
    ]
    padded_lp, packed_lp = target_log_probs(model, padded), target_log_probs(model, packed)
    assert padded["target_ids"].equal(packed["target_ids"])
    torch.testing.assert_close(padded_lp, packed_lp, rtol=0, atol=1e-5)
    # Reference: each row alone, no padding.
    for n, (b, ctx, prompt, target) in enumerate(reference_rows(llama_features, contexts)):
        alone = ContextCollator(PAD, (ctx,), ())([llama_features[b]])["grad"]
        assert alone["input_ids"][0].tolist() == prompt + target
        rows = (padded["example_index"] == b) & (padded["context_index"] == contexts.index(ctx))
        torch.testing.assert_close(
            padded_lp[rows], target_log_probs(model, alone), rtol=0, atol=1e-5, msg=str(n)
        )


def test_padding_free_needs_use_cache_false(llama_features, llama2_tokenizer):
    """transformers 5.24 ignores packing when a KV cache is created (the default): documented pitfall."""
    model = tiny_llama(len(llama2_tokenizer), "sdpa")
    packed = ContextCollator(PAD, GRAD[:2], (), padding_free=True)(llama_features)["grad"]
    with torch.no_grad():
        cached = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits
    uncached = model(
        input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
    ).logits
    assert not torch.allclose(cached, uncached, atol=1e-3)
