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


def check_block(block: dict, features: list[dict], contexts: tuple[str, ...], padding_free: bool,
                row_length: int | str | None = None) -> None:
    rows = reference_rows(features, contexts)
    flat_ids, flat_pos = block["input_ids"].flatten(), block["position_ids"].flatten()
    lengths = [len(p) + len(t) for _, _, p, t in rows]
    if not padding_free:
        assert block["input_ids"].shape[0] == len(rows)
    elif row_length is None:
        assert block["input_ids"].shape[0] == 1
    else:
        assert block["input_ids"].shape[0] <= len(rows)
    if not padding_free:
        assert block["attention_mask"].sum(1).tolist() == [len(p) + len(t) for _, _, p, t in rows]
    assert int(block["real_tokens"]) == sum(lengths) <= block["input_ids"].numel()
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
    width, load = block["input_ids"].shape[1], torch.zeros(block["input_ids"].shape[0], dtype=torch.long)
    for b, ctx, prompt, target in rows:
        entries = [by_context[ctx].pop((b, k)) for k in range(len(target))]
        load[row_start[entries[0]] // width] += len(prompt) + len(target)
        assert flat_pos[logit_index[entries]].tolist() == list(
            range(len(prompt) - 1, len(prompt) - 1 + len(target))
        )
        assert flat_ids[row_start[entries[0]] : row_start[entries[0]] + len(prompt)].tolist() == prompt
        assert flat_ids[logit_index[entries]].tolist() == [*prompt[-1:], *target[:-1]]
    assert all(not left for left in by_context.values()), "tokens without a reference row"
    if padding_free and row_length is not None:  # whole sequences, at most max(bound, longest) tokens a row
        assert int(load.min()) > 0
        if row_length != "auto":
            assert int(load.max()) <= max(row_length, max(lengths))

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
    row_length=st.sampled_from([None, "auto", 1, 12, 40]),
    pair_cost=st.sampled_from([0.0, 1 / 1024, 1 / 16]),
)
def test_collator_matches_the_per_row_reference(features, padding_free, multiple, row_length, pair_cost):
    features[0]["plain_prompt_ids"] = features[0]["plain_prompt_ids"] or [5]
    collator = ContextCollator(PAD, GRAD, NOGRAD, pad_to_multiple_of=multiple, padding_free=padding_free,
                               packed_row_length=row_length, attention_pair_cost=pair_cost)
    batch = collator(features)
    assert batch["is_negative"].tolist() == [f["is_negative"] for f in features]
    check_block(batch["grad"], features, GRAD, padding_free, row_length)
    if any(f["misaligned_prompt_ids"] for f in features):
        check_block(batch["nograd"], features, NOGRAD, padding_free, row_length)
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
    rows = ContextCollator(PAD, contexts, (), padding_free=True, packed_row_length=96)(llama_features)["grad"]
    assert 1 < rows["input_ids"].shape[0] < padded["input_ids"].shape[0]  # several sequences share a row
    padded_lp, packed_lp = target_log_probs(model, padded), target_log_probs(model, packed)
    assert padded["target_ids"].equal(packed["target_ids"])
    torch.testing.assert_close(padded_lp, packed_lp, rtol=0, atol=1e-5)
    # Bounded rows list the same tokens in another order.
    order = lambda block: (block["context_index"] * 10_000 + block["example_index"] * 1000  # noqa: E731
                           + block["token_index"]).argsort()
    torch.testing.assert_close(target_log_probs(model, rows)[order(rows)], padded_lp[order(padded)], rtol=0, atol=1e-5)
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


def test_packing_check_accepts_llama_and_refuses_a_model_that_ignores_position_ids():
    """The one-off check: Llama (sdpa, eager) keeps packed sequences apart; OPT's masks ignore position_ids."""
    from transformers import OPTConfig, OPTForCausalLM

    from cutalign.logprobs import packing_unsupported_reason

    for attn in ("sdpa", "eager"):
        model = tiny_llama(100, attn).train()
        assert packing_unsupported_reason(model) is None
        assert model.training  # the check restores the mode
    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   ffn_dim=64, word_embed_proj_dim=32))
    assert "attend to each other" in packing_unsupported_reason(opt)


def _cut_trainer(tmp_path, model, tokenizer, examples, **overrides):
    from cutalign.trainer.config import CUTConfig
    from cutalign.trainer.cut_trainer import CUTTrainer

    config = CUTConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, report_to=[],
                       max_length=256, use_cpu=True, disable_dropout=True, positive_ratio=-1, **overrides)
    return CUTTrainer(model, config, train_dataset=examples, processing_class=tokenizer)


@pytest.mark.parametrize("misalign_mode", ["fake_positive", "instruction_only"])
def test_packed_by_default_with_the_padded_loss_and_gradients(tmp_path, tokenizer, online_examples, misalign_mode):
    """Default batches are packed for Llama, the tiny model's dear attention splitting each pass into rows; the
    CUT loss and every gradient equal those of one packed row and of the padded batch."""
    from cutalign.demo.assets import tiny_causal_lm

    examples = [e for e in online_examples if len(e["completion"]) < 500][:6]
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    results = []
    for overrides, rows in (({}, "auto"), ({"packed_row_length": 0}, None), ({"padding_free": False}, "auto")):
        trainer = _cut_trainer(tmp_path, model, tokenizer, examples, misalign_mode=misalign_mode, **overrides)
        assert trainer.data_collator.padding_free is ("padding_free" not in overrides)
        assert trainer.data_collator.packed_row_length == rows
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        assert ("attention_mask" in batch["grad"]) is ("padding_free" in overrides)
        if overrides == {}:  # several rows, some holding several sequences
            grad = batch["grad"]
            sequences = len((grad["context_index"] * len(examples) + grad["example_index"]).unique())
            assert 1 < grad["input_ids"].shape[0] < sequences
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (bounded_loss, bounded_grads), *others = results
    for loss, grads in others:
        torch.testing.assert_close(bounded_loss, loss, rtol=1e-5, atol=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(bounded_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_model_without_packing_support_pads_and_says_why(tmp_path, tokenizer, online_examples, caplog):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32))
    examples = online_examples[:8]
    with caplog.at_level("WARNING", logger="cutalign.trainer.base"):
        trainer = _cut_trainer(tmp_path, opt, tokenizer, examples)
    assert trainer.data_collator.padding_free is False
    assert "padded, length-grouped batches instead of packed ones: OPTForCausalLM" in caplog.text
    with pytest.raises(ValueError, match="padding_free=true, but OPTForCausalLM"):
        _cut_trainer(tmp_path, opt, tokenizer, examples, padding_free=True)
