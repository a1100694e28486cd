"""Chunked per-token log-probs against the full-softmax computation, and their memory bound."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import (
    AutoModelForCausalLM,
    CohereConfig,
    Gemma2Config,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    Qwen2Config,
)

from cutalign.logprobs import chunked_head_logprobs, naive_token_logprobs, output_head, token_logprobs

VOCAB = 300
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2}
CONFIGS: dict[str, Callable[[int], PretrainedConfig]] = {
    "llama": lambda vocab: LlamaConfig(vocab_size=vocab, **SMALL),
    "qwen2": lambda vocab: Qwen2Config(vocab_size=vocab, **SMALL),
    "gpt2": lambda vocab: GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0),
    "gemma2": lambda vocab: Gemma2Config(vocab_size=vocab, head_dim=8, final_logit_softcapping=3.0, **SMALL),
}


def tiny_model(kind: str, vocab: int = VOCAB, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(CONFIGS[kind](vocab))


def make_block(vocab: int, lengths: list[int], prompt: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A right-padded block: each row's tokens after ``prompt`` are targets (as the collator does)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(0, vocab, (len(lengths), width), generator=gen)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    logit_index = torch.cat([r * width + torch.arange(prompt - 1, n - 1) for r, n in enumerate(lengths)])
    return {
        "input_ids": input_ids.masked_fill(~mask, 0),
        "attention_mask": mask.long(),
        "position_ids": torch.arange(width).expand(len(lengths), width).clone(),
        "logit_index": logit_index,
        "target_ids": input_ids.reshape(-1)[logit_index + 1],
    }


def grads_of(model: nn.Module, logprobs: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    (logprobs * weights).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_values_and_grads(model: nn.Module, block: dict, chunk_size: int = 3) -> None:
    weights = torch.randn(block["target_ids"].shape[0], generator=torch.Generator().manual_seed(1))
    ours = token_logprobs(model, block, chunk_size=chunk_size)
    ours_grads = grads_of(model, ours, weights)
    reference = naive_token_logprobs(model, block)
    reference_grads = grads_of(model, reference, weights)
    assert ours.dtype == torch.float32 and ours.shape == block["target_ids"].shape
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert ours_grads.keys() == reference_grads.keys() and ours_grads
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def full_softmax_logprobs(hidden, weight, bias, targets, softcap=None):
    logits = F.linear(hidden, weight, bias).float()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return logits.log_softmax(dim=-1).gather(1, targets[:, None]).squeeze(1)


def assert_close_with_grads(ours: torch.Tensor, ref: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """Same values, and same gradients of a random weighting of them wrt every input."""
    weights = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1))
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * weights).sum(), inputs)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for got, expected in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def random_head_inputs(n: int, hidden: int, vocab: int, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=gen).to(dtype).requires_grad_()
    head = nn.Linear(hidden, vocab).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=gen) * 0.3)
        head.bias.copy_(torch.randn(vocab, generator=gen))
    return h, head, torch.randint(0, vocab, (n,), generator=gen)


# ---------------------------------------------------------------------------------------------
# chunked_head_logprobs on its own


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_head_matches_full_softmax(chunk_size: int, softcap: float | None, with_bias: bool) -> None:
    h, head, targets = random_head_inputs(n=10, hidden=16, vocab=50)
    if not with_bias:
        head.bias = None
    ours = chunked_head_logprobs(h, head, targets, chunk_size=chunk_size, softcap=softcap)
    ref = full_softmax_logprobs(h, head.weight, head.bias, targets, softcap)
    assert_close_with_grads(ours, ref, [h, *head.parameters()])


@pytest.mark.parametrize("softcap", [None, 1.5])
def test_linear_head_gradcheck_float64(softcap: float | None) -> None:
    h, head, targets = random_head_inputs(n=5, hidden=4, vocab=9, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda h, w, b: chunked_head_logprobs(h, _linear(w, b), targets, chunk_size=2, softcap=softcap),
        (h, head.weight, head.bias),
    )


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An nn.Linear whose parameters *are* the given tensors (so gradcheck sees them)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    del layer.weight, layer.bias
    layer.weight, layer.bias = weight, bias
    return layer


class ScaledHead(nn.Module):
    """A head that is not a plain nn.Linear: takes the checkpointed fallback path."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * 1.5


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_module_head_fallback_matches_full_softmax(softcap: float | None) -> None:
    h, linear, targets = random_head_inputs(n=11, hidden=8, vocab=40)
    head = ScaledHead(linear)
    ours = chunked_head_logprobs(h, head, targets, chunk_size=4, softcap=softcap)
    ref = full_softmax_logprobs(h, linear.weight * 1.5, linear.bias * 1.5, targets, softcap)
    assert_close_with_grads(ours, ref, [h, *head.parameters()])


def test_large_vocab_small_n() -> None:
    h, head, targets = random_head_inputs(n=6, hidden=32, vocab=32000)
    ours = chunked_head_logprobs(h, head, targets, chunk_size=4)
    ref = full_softmax_logprobs(h, head.weight, head.bias, targets)
    assert_close_with_grads(ours, ref, [h, head.weight])


def test_bf16_inputs_are_close_to_fp32() -> None:
    h, head, targets = random_head_inputs(n=9, hidden=16, vocab=64)
    h16, head16 = h.detach().bfloat16().requires_grad_(), nn.Linear(16, 64).bfloat16()
    head16.load_state_dict({k: v.bfloat16() for k, v in head.state_dict().items()})
    ours = chunked_head_logprobs(h16, head16, targets, chunk_size=4)
    ours.sum().backward()
    assert ours.dtype == torch.float32
    assert h16.grad.dtype == head16.weight.grad.dtype == head16.bias.grad.dtype == torch.bfloat16
    ref = full_softmax_logprobs(h.detach(), head.weight, head.bias, targets)
    torch.testing.assert_close(ours, ref, atol=0.05, rtol=0.02)
    # and identical to the full softmax over the same bf16 logits (upcast after the matmul)
    torch.testing.assert_close(ours, full_softmax_logprobs(h16, head16.weight, head16.bias, targets))


def test_autocast_uses_autocast_dtype_and_returns_fp32_weight_grads() -> None:
    h, head, targets = random_head_inputs(n=9, hidden=16, vocab=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = chunked_head_logprobs(h, head, targets, chunk_size=4)
        ref = full_softmax_logprobs(h, head.weight, head.bias, targets)
    torch.testing.assert_close(ours, ref)
    ours.sum().backward()
    assert head.weight.grad.dtype == torch.float32 and h.grad.dtype == torch.float32


def test_empty_input() -> None:
    h, head, _ = random_head_inputs(n=0, hidden=8, vocab=20)
    out = chunked_head_logprobs(h, head, torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,) and out.dtype == torch.float32
    out.sum().backward()  # still part of the graph
    assert h.grad.shape == (0, 8)


def test_no_grad_pass_saves_nothing() -> None:
    h, head, targets = random_head_inputs(n=10, hidden=8, vocab=20)
    saved = []
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = chunked_head_logprobs(h, head, targets, chunk_size=3)
        chunked_head_logprobs(h, ScaledHead(head), targets, chunk_size=3)
    assert not out.requires_grad and saved == []


def _largest_saved(fn: Callable[[], torch.Tensor]) -> int:
    sizes = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return max(sizes)


def test_no_saved_tensor_holds_all_logits() -> None:
    n, hidden, vocab = 64, 16, 500  # n > hidden, so the [V, H] weight is smaller than [N, V]
    h, head, targets = random_head_inputs(n=n, hidden=hidden, vocab=vocab)
    ours = _largest_saved(lambda: chunked_head_logprobs(h, head, targets, chunk_size=8))
    naive = _largest_saved(lambda: full_softmax_logprobs(h, head.weight, head.bias, targets))
    assert ours < n * vocab <= naive


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward run on this thread on CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def _largest_in_forward_and_backward(fn: Callable[[], torch.Tensor]) -> int:
    with LargestTensor() as mode:
        fn().sum().backward()
    return mode.largest


@pytest.mark.parametrize("lora_head", [False, True])
def test_token_logprobs_never_allocates_all_logits(lora_head: bool) -> None:
    vocab = 1000
    model = tiny_model("llama", vocab=vocab)  # hidden 32: the [V, H] weight has 32k elements
    if lora_head:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["lm_head"], init_lora_weights=False))
    block = make_block(vocab, lengths=[40, 36], prompt=4)
    n = block["target_ids"].shape[0]  # 36 + 32 = 68 targets -> 68k logits
    ours = _largest_in_forward_and_backward(lambda: token_logprobs(model, block, chunk_size=16))
    naive = _largest_in_forward_and_backward(lambda: naive_token_logprobs(model, block))
    assert ours < n * vocab <= naive


# ---------------------------------------------------------------------------------------------
# token_logprobs on real (tiny) architectures


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_token_logprobs_matches_naive(kind: str) -> None:
    model = tiny_model(kind)
    head, softcap = output_head(model)
    assert type(head) is nn.Linear
    assert softcap == (3.0 if kind == "gemma2" else None)
    tied = kind in ("gpt2", "gemma2")
    assert (head.weight is model.get_input_embeddings().weight) == tied
    assert_same_values_and_grads(model, make_block(VOCAB, lengths=[9, 6, 8], prompt=3))


@pytest.mark.parametrize("targets", [["lm_head", "q_proj"], ["gate_proj", "up_proj", "down_proj"]])
def test_peft_lora_model_matches_naive(targets: list[str]) -> None:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import Linear as LoraLinear

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(tiny_model("llama"), lora)
    assert isinstance(output_head(model)[0], LoraLinear) == ("lm_head" in targets)
    assert_same_values_and_grads(model, make_block(VOCAB, lengths=[9, 6], prompt=3))


class DataParallelLike(nn.Module):
    """Stands in for DDP / DeepSpeed: the model is ``.module`` and only the wrapper may be called."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_wrapped_model_is_called_at_the_top_and_unwrapped_for_the_head() -> None:
    model = tiny_model("gemma2")
    wrapped = DataParallelLike(model)
    assert output_head(wrapped) == (model.lm_head, 3.0)
    block = make_block(VOCAB, lengths=[7, 5], prompt=2)
    calls = []
    wrapped.register_forward_pre_hook(lambda module, args: calls.append(module))
    torch.testing.assert_close(token_logprobs(wrapped, block), naive_token_logprobs(model, block))
    assert calls == [wrapped]


def test_padding_free_block_matches_padded() -> None:
    model = tiny_model("llama")
    padded = make_block(VOCAB, lengths=[9, 6], prompt=3)
    rows = [padded["input_ids"][0, :9], padded["input_ids"][1, :6]]
    packed = {
        "input_ids": torch.cat(rows)[None],
        "position_ids": torch.cat([torch.arange(9), torch.arange(6)])[None],
        "logit_index": torch.cat([torch.arange(2, 8), 9 + torch.arange(2, 5)]),
        "target_ids": padded["target_ids"],
    }
    torch.testing.assert_close(token_logprobs(model, packed), token_logprobs(model, padded))
    assert_same_values_and_grads(model, packed)


def test_bf16_model_is_close_to_fp32() -> None:
    model = tiny_model("llama")
    model16 = tiny_model("llama").to(torch.bfloat16)
    model16.load_state_dict({k: v.bfloat16() for k, v in model.state_dict().items()})
    block = make_block(VOCAB, lengths=[9, 6], prompt=3)
    ours16 = token_logprobs(model16, block, chunk_size=4)
    torch.testing.assert_close(ours16, naive_token_logprobs(model16, block), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours16, token_logprobs(model, block), atol=0.05, rtol=0.02)


def test_no_grad_pass_keeps_no_graph() -> None:
    model = tiny_model("llama")
    with torch.no_grad():
        out = token_logprobs(model, make_block(VOCAB, lengths=[9, 6], prompt=3))
    assert out.grad_fn is None and not out.requires_grad


def test_empty_block() -> None:
    model = tiny_model("llama")
    block = make_block(VOCAB, lengths=[5], prompt=5)
    assert block["logit_index"].numel() == 0
    assert token_logprobs(model, block).shape == (0,)


def test_unknown_logit_transform_is_refused() -> None:
    """Cohere scales its logits: our head would silently disagree, so the first call refuses."""
    torch.manual_seed(0)
    config = CohereConfig(vocab_size=VOCAB, logit_scale=0.5, bos_token_id=0, eos_token_id=0, pad_token_id=0, **SMALL)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(RuntimeError, match="does not reproduce the model's logits"):
        token_logprobs(model, make_block(VOCAB, lengths=[6], prompt=2))


@pytest.mark.parametrize(
    ("hidden", "head", "targets", "kwargs", "message"),
    [
        (torch.zeros(4), torch.zeros(7, 4), torch.zeros(4, dtype=torch.long), {}, "hidden must be"),
        (torch.zeros(4, 3), torch.zeros(7, 3), torch.zeros(4, dtype=torch.int32), {}, "targets must be int64"),
        (torch.zeros(4, 3), torch.zeros(7, 3), torch.zeros(4, dtype=torch.long), {"chunk_size": 0}, "chunk_size"),
        (torch.zeros(4, 3), torch.zeros(7, 3), torch.zeros(4, dtype=torch.long), {"softcap": 0.0}, "softcap"),
        (torch.zeros(4, 3), torch.zeros(0), torch.zeros(4, dtype=torch.long), {}, "sharded by FSDP"),
        (torch.zeros(4, 3), torch.zeros(7, 5), torch.zeros(4, dtype=torch.long), {}, r"\[V, 3\]"),
        (torch.zeros(4, 3), torch.zeros(7, 3), torch.tensor([0, 1, 7, 2]), {}, r"in \[0, 7\)"),
    ],
)
def test_bad_head_inputs_raise(hidden, head, targets, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        chunked_head_logprobs(hidden, head, targets, **kwargs)


def test_bad_logit_index_raises() -> None:
    model = tiny_model("llama")
    block = make_block(VOCAB, lengths=[6], prompt=2)
    block["logit_index"] = block["logit_index"] + 10
    with pytest.raises(ValueError, match="points outside"):
        token_logprobs(model, block)


def test_float64_model_matches_naive() -> None:
    """A float64 model: the one-time head check compares in fp64 (it used to crash on .float())."""
    model = tiny_model("llama").double()
    block = make_block(VOCAB, lengths=[9, 6], prompt=3)
    ours = token_logprobs(model, block, chunk_size=4)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, naive_token_logprobs(model, block), rtol=1e-10, atol=1e-10)


class PeakLive(TorchDispatchMode):
    """Peak bytes of the tensor storages alive while active (freed ones subtracted)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage._cdata not in inputs and storage._cdata not in self._seen:
                    self._seen.add(storage._cdata)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, storage._cdata, storage.nbytes())
        return out

    def _freed(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size


def test_no_grad_pass_keeps_only_the_final_hidden_states() -> None:
    """Without gradient, every layer's hidden states must not stay alive until the head runs."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=VOCAB, **{**SMALL, "num_hidden_layers": 8}))
    block = make_block(VOCAB, lengths=[256, 256], prompt=250)
    layer_bytes = 2 * 256 * SMALL["hidden_size"] * 4
    peaks = []
    for keep_all in (False, True):
        tracker = PeakLive()
        with torch.no_grad(), tracker:
            if keep_all:  # the former way: hidden_states of all 9 layer outputs
                model(**{k: block[k] for k in ("input_ids", "attention_mask", "position_ids")},
                      output_hidden_states=True, logits_to_keep=1, use_cache=False)
            else:
                token_logprobs(model, block)
        peaks.append(tracker.peak)
    assert peaks[1] - peaks[0] >= 6 * layer_bytes, peaks


def test_in_place_logsumexp_is_bit_identical_to_torch() -> None:
    """`_logsumexp_` saves a [chunk, V] buffer only if it stays exactly torch.logsumexp."""
    from cutalign.logprobs import _logsumexp_

    gen = torch.Generator().manual_seed(0)
    for shape, dtype in (((64, 5000), torch.float32), ((7, 301), torch.float64), ((3, 32000), torch.bfloat16)):
        x = (torch.randn(shape, generator=gen) * 8).to(dtype)
        x[0, :] = float("-inf")
        x[1, 3] = float("inf")
        assert torch.equal(_logsumexp_(x.clone()), torch.logsumexp(x, dim=-1)), (shape, dtype)


def test_chunked_head_holds_one_chunk_of_logits_at_a_time() -> None:
    """Forward and backward: one [chunk, V] logits buffer alive, never the next beside the last."""
    n, hidden_size, vocab, chunk = 64, 8, 5000, 16
    hidden, head, targets = random_head_inputs(n, hidden_size, vocab)
    tracker = PeakLive()
    with tracker:
        chunked_head_logprobs(hidden, head, targets, chunk_size=chunk).sum().backward()
    one_chunk, weight_grad = chunk * vocab * 4, vocab * hidden_size * 4
    assert tracker.peak < 1.5 * one_chunk + weight_grad + 64 * 1024, (tracker.peak, one_chunk)


def test_packed_sdpa_block_shares_one_mask_with_identical_results(monkeypatch) -> None:
    """A packed sdpa block gets one float mask for all layers: same log-probs and gradients, bit
    for bit, as transformers' own mask (converted per layer), and (layers - 1) masks less memory."""
    import cutalign.logprobs as logprobs

    torch.manual_seed(0)
    layers, lengths = 4, [120, 90, 70]
    model = AutoModelForCausalLM.from_config(
        LlamaConfig(vocab_size=VOCAB, **{**SMALL, "num_hidden_layers": layers}), attn_implementation="sdpa")
    padded = make_block(VOCAB, lengths=lengths, prompt=5)
    width = max(lengths)
    rows = [padded["input_ids"][r, :n] for r, n in enumerate(lengths)]
    offsets = torch.tensor([0, *lengths]).cumsum(0)
    packed = {
        "input_ids": torch.cat(rows)[None],
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "logit_index": torch.cat([offsets[r] + padded["logit_index"][padded["logit_index"] // width == r] % width
                                  for r in range(len(lengths))]),
        "target_ids": padded["target_ids"],
    }
    weights = torch.randn(packed["target_ids"].shape[0], generator=torch.Generator().manual_seed(1))
    results = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(logprobs, "_packed_sdpa_mask", lambda model, block: None)
        tracker = PeakLive()
        with tracker:
            values = token_logprobs(model, packed, chunk_size=64)
            grads = grads_of(model, values, weights)
        results.append((values.detach(), grads, tracker.peak))
    (ours, our_grads, our_peak), (theirs, their_grads, their_peak) = results
    assert torch.equal(ours, theirs)
    assert our_grads.keys() == their_grads.keys() and all(torch.equal(g, their_grads[k]) for k, g in our_grads.items())
    length = sum(lengths)
    assert their_peak - our_peak >= (layers - 1.5) * length * length * 4, (our_peak, their_peak)
    torch.testing.assert_close(ours, token_logprobs(model, padded, chunk_size=64), atol=1e-5, rtol=1e-5)
