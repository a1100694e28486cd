"""Per-token log-probs of target tokens without ever materialising ``[batch, seq, vocab]`` logits.

Why: a causal LM's logits take ``B * S * V * 4`` bytes in fp32 -- 8 x 2048 x 128k x 4 B = 8.6 GB
per context, and CUT scores every response under two or three contexts. Only ``log p(target)`` at
the response positions is needed, so :func:`token_logprobs` asks the model for its final hidden
states (``logits_to_keep=1`` keeps the model's own logits to one position per row), picks the
positions that predict a target, and :func:`chunked_head_logprobs` projects them through the LM head
a chunk of rows at a time. The backward pass recomputes each chunk's logits, so the largest
vocabulary-sized tensor ever alive is one chunk's ``[chunk, V]``, forward and backward alike.

Precision: a chunk's logits are computed in the head's dtype (or the active autocast dtype), as
``lm_head(hidden)`` would be, then upcast to fp32 for the log-softmax; results are fp32 and
gradients come back in the inputs' dtypes. The weight gradient is accumulated chunk by chunk in
the compute dtype. Gemma-2 style ``final_logit_softcapping`` (``cap * tanh(logits / cap)``) is
applied in fp32.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_SIZE = 1024

# Heads whose logits were checked once against the model's own (see `_verify_head_once`).
_VERIFIED_HEADS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def chunked_head_logprobs(
    hidden: Tensor,
    head: nn.Module | Tensor,
    targets: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    softcap: float | None = None,
) -> Tensor:
    """``log_softmax(head(hidden))[i, targets[i]]`` for every row, as fp32 ``[N]``, chunk by chunk.

    ``head`` is the LM head: a weight ``[V, H]`` or a plain ``nn.Linear`` (fast path: a custom
    autograd function that recomputes each chunk in backward; a tied embedding weight just gets
    gradient from both uses), or any other ``[n, H] -> [n, V]`` module such as a PEFT LoRA-wrapped
    ``lm_head`` (each chunk then runs under ``torch.utils.checkpoint``). With gradients off nothing
    is saved for backward.
    """
    _check_head_inputs(hidden, targets, chunk_size, softcap)
    zero3 = _has_zero3_parameters(head)
    if hidden.shape[0] == 0 and not zero3:  # ZeRO-3: an empty pass must gather (in backward too) like the others
        return _upcast(hidden.sum(dim=-1))  # [0], still attached to the graph
    weight, bias = _linear_parameters(head)
    if weight is None:
        if zero3:
            # ZeRO-3 gathers such a head in each call of its modules and releases it after: the chunks'
            # recomputation under checkpointing fails its shape check, and without the check the LoRA
            # update came out wrong (0.04 off the one-process update).
            raise NotImplementedError(
                f"a DeepSpeed ZeRO-3 partitioned LM head that is not a plain nn.Linear ({type(head).__module__}."
                f"{type(head).__name__}, "
                "e.g. LoRA on lm_head) is not supported: leave lm_head out of lora_target_modules, or use DDP"
            )
        return _module_logprobs(hidden, head, targets, chunk_size, softcap)
    _check_weight(weight, bias, hidden)
    _check_targets(targets, weight.shape[0])
    compute_dtype = _compute_dtype(hidden, weight)
    needs_grad = any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if torch.is_grad_enabled() and needs_grad:
        return _ChunkedLinearLogprobs.apply(hidden, weight, bias, targets, chunk_size, softcap, compute_dtype)
    with torch.autocast(hidden.device.type, enabled=False):
        return _linear_forward(hidden, weight, bias, targets, chunk_size, softcap, compute_dtype)[0]


def token_logprobs(model: nn.Module, block: Mapping[str, Tensor], *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """fp32 ``[N]`` log-probs of ``block["target_ids"]``, each predicted at ``block["logit_index"]``.

    ``block`` is one collator block: ``input_ids [R, L]``, ``attention_mask`` (absent in
    padding-free mode, where ``position_ids`` restart per packed sequence), ``position_ids``, and
    ``logit_index`` into the flattened ``[R * L]`` positions. The top-level ``model`` is called, as
    DDP / FSDP / DeepSpeed wrappers require; the LM head is applied here. Call it under
    ``torch.no_grad()`` for a pass without gradient: then nothing is kept for backward.
    """
    logit_index, targets = block["logit_index"], block["target_ids"]
    positions = block["input_ids"].numel()
    if logit_index.dim() != 1 or logit_index.dtype != torch.long or logit_index.shape != targets.shape:
        raise ValueError(
            f"block['logit_index'] must be int64 with the shape of target_ids {tuple(targets.shape)}; got "
            f"{logit_index.dtype} {tuple(logit_index.shape)}"
        )
    if logit_index.numel() and not (int(logit_index.min()) >= 0 and int(logit_index.max()) < positions):
        raise ValueError(f"block['logit_index'] points outside the {positions} positions of input_ids")
    head, softcap = output_head(model)
    hidden, outputs = _final_hidden_states(model, block)
    flat = hidden.reshape(-1, hidden.shape[-1])
    with _gathered(head) as finish:
        logprobs = chunked_head_logprobs(
            flat.index_select(0, logit_index), head, targets, chunk_size=chunk_size, softcap=softcap
        )
        _verify_head_once(head, softcap, hidden[:, -1], getattr(outputs, "logits", None))
    return finish(logprobs)


def _final_hidden_states(model: nn.Module, block: Mapping[str, Tensor]) -> tuple[Tensor, Any]:
    """The head's input ``[R, L, H]`` and the model's outputs, keeping no other layer's hidden states.

    A forward hook on the decoder (``get_decoder()``, whose ``last_hidden_state`` is post-final-norm
    in transformers 5) captures only the last layer, where ``output_hidden_states=True`` would keep
    every layer's until the call returns (in a no-grad pass nothing else holds them). Models without
    a separate decoder fall back to ``hidden_states[-1]``. Either way `_verify_head_once` checks it.
    """
    decoder = _decoder(model)
    if decoder is None:
        outputs = model(**_model_inputs(block, model), output_hidden_states=True, logits_to_keep=1, use_cache=False)
        return outputs.hidden_states[-1], outputs
    captured: list[Tensor] = []

    def keep_last(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = decoder.register_forward_hook(keep_last)
    try:
        outputs = model(**_model_inputs(block, model), logits_to_keep=1, use_cache=False)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"the decoder of {type(model).__name__} ran {len(captured)} times in one forward pass")
    return captured[0], outputs


def _decoder(model: nn.Module) -> nn.Module | None:
    """The model's decoder stack (``get_decoder()``), through DDP / DeepSpeed / PEFT wrappers."""
    inner = model
    while not hasattr(inner, "get_decoder") and isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module
    try:
        decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    except (AttributeError, ValueError, NotImplementedError):
        return None
    if not isinstance(decoder, nn.Module) or decoder is inner or not hasattr(inner, "get_output_embeddings"):
        return None
    return decoder


@contextlib.contextmanager
def _gathered(head: nn.Module) -> Iterator[Callable[[Tensor], Tensor]]:
    """Make a sharded LM head's full weight available to the chunked projection.

    Yields what to apply to the result. FSDP2 (``fully_shard``): a head in the root's parameter
    group stays unsharded after the root's forward; a head sharded as its own module is resharded
    after its forward, so it is unsharded here. Its gradient lands on the unsharded parameter, which
    FSDP's end-of-backward callback reduce-scatters and reshards. A later pass (the no-grad one, or
    the head's next forward) may reshard it before backward, so the result's backward unshards it
    again first (a no-op when it still is). Without gradient we reshard at once.
    DeepSpeed ZeRO-3: the head's partitioned parameters are gathered once around all chunks, with
    gradient or without (ZeRO-3's own hooks would all-gather in every call of the head module, and
    processes with different row counts run different numbers of chunks: a deadlock). A plain linear
    head's backward gathers its weight again (`_ChunkedLinearLogprobs`); its full-size gradient then
    reaches ZeRO-3's gradient hooks like any module's. Other ZeRO-3 heads (e.g. LoRA on ``lm_head``)
    are refused by `chunked_head_logprobs`.
    """
    weight = getattr(head, "weight", None)
    fsdp_module = _fsdp_module(head)
    if fsdp_module is not None and _is_dtensor(weight):
        fsdp_module.unshard()
        try:
            yield lambda logprobs: _UnshardBeforeBackward.apply(logprobs, fsdp_module)
        finally:
            if not torch.is_grad_enabled():
                fsdp_module.reshard()
        return
    if _is_zero3_partitioned(weight) and _linear_parameters(head)[0] is not None:
        with _zero3_gathered(head.parameters()):
            yield lambda logprobs: logprobs
        return
    yield lambda logprobs: logprobs


def _zero3_gathered(params: Iterable[Tensor | None]) -> contextlib.AbstractContextManager:
    """DeepSpeed's ``GatheredParameters`` (a collective: every process must enter it) for the ZeRO-3
    partitioned ones among ``params``; a no-op context when there are none."""
    partitioned = [p for p in params if _is_zero3_partitioned(p)]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


def _zero3_all_gather(params: Iterable[Tensor | None]) -> list[Tensor]:
    """All-gather the ZeRO-3 partitioned ones among ``params`` (a collective); returns them."""
    partitioned = [p for p in params if _is_zero3_partitioned(p)]
    if partitioned:
        partitioned[0].all_gather(param_list=partitioned)
    return partitioned


def _zero3_partition_after_accumulation(params: list[Tensor]) -> None:
    """Partition ZeRO-3 parameters gathered for a backward, each once its gradient is accumulated.

    Why not at once: autograd's AccumulateGrad, which runs after the backward that returned the
    full-size gradient, lays it out like the parameter, and a partitioned one is 0-sized (a shape
    error). ZeRO-3's reduce hook, registered first, runs first and sees the full gradient.
    """
    for param in params:
        if param.requires_grad:
            _partition_once_accumulated(param)
        else:
            param.partition(param_list=[param], has_been_updated=False)


def _partition_once_accumulated(param: Tensor) -> None:
    def partition(tensor: Tensor) -> None:
        handle.remove()
        tensor.partition(param_list=[tensor], has_been_updated=False)

    handle = param.register_post_accumulate_grad_hook(partition)


class _UnshardBeforeBackward(torch.autograd.Function):
    """Identity whose backward unshards an FSDP2 module before the head's backward reads its weight."""

    @staticmethod
    def forward(ctx: Any, logprobs: Tensor, module: nn.Module) -> Tensor:
        ctx.module = module
        return logprobs.view_as(logprobs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        ctx.module.unshard()
        return grad, None


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP2 (``fully_shard``) or DeepSpeed ZeRO-3 manages the model's parameters.

    Then every forward pass gathers parameters collectively, so all processes must run the same
    passes. Checked on the modules, not the parameters' types: FSDP2 leaves a root's parameters
    unsharded between its forward and backward.
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        FSDPModule = ()
    return any(isinstance(m, FSDPModule) for m in model.modules()) or any(
        hasattr(p, "ds_id") for p in model.parameters()
    )


def _fsdp_module(module: nn.Module) -> Any | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return None
    return module if isinstance(module, FSDPModule) else None


def _is_dtensor(tensor: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover
        return False
    return isinstance(tensor, DTensor)


def _is_zero3_partitioned(tensor: Any) -> bool:
    return tensor is not None and hasattr(tensor, "ds_id")


def _has_zero3_parameters(head: nn.Module | Tensor) -> bool:
    return any(_is_zero3_partitioned(p) for p in ([head] if isinstance(head, Tensor) else head.parameters()))


def packing_unsupported_reason(model: nn.Module) -> str | None:
    """``None`` when packed rows (restarting ``position_ids``, no mask) keep sequences apart, else why not.

    transformers 5 builds a block-diagonal mask from restarting ``position_ids`` (sdpa, eager, flex)
    or passes them to FlashAttention's varlen kernel -- but only in models that build their masks
    with ``masking_utils`` and only without a KV cache. Rather than trusting a list of model types,
    this runs the model once on two short sequences packed into one row and checks that the second
    one's logits equal those of the second sequence alone (and differ from a row that attends across
    the boundary). A model whose weights are ZeRO-3 partitioned cannot run here, so its modeling
    code is checked for the mask builders instead.
    """
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None)
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        source = _modeling_source(model)
        if "create_causal_mask" in source or "create_sliding_window_causal_mask" in source:
            return None
        return f"{type(model).__name__} does not build its attention mask from position_ids"
    try:
        leak, packed = _packing_probe(model)
    except Exception as err:  # any model that cannot run the probe pads instead
        return f"the packing check failed on {type(model).__name__} ({attn} attention): {type(err).__name__}: {err}"
    if packed <= 1e-3 * max(leak, 1e-6) or packed < 1e-5:
        return None
    return (f"{type(model).__name__} with {attn} attention lets packed sequences attend to each other "
            f"(max logit difference {packed:.3g} from the sequence alone)")


def _packing_probe(model: nn.Module) -> tuple[float, float]:
    """Max |logits - alone| of a sequence after another one: attending across, and packed."""
    vocab = int(model.get_input_embeddings().num_embeddings)
    device = next(model.parameters()).device
    first = torch.arange(3, 10, device=device) % vocab
    second = torch.arange(11, 16, device=device) % vocab
    n, m = first.numel(), second.numel()
    row = torch.cat([first, second])[None]
    restarting = torch.cat([torch.arange(n), torch.arange(m)]).to(device)[None]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            def tail_logits(**kwargs: Tensor) -> Tensor:
                return _upcast(model(**kwargs, use_cache=False).logits[0, -m:])

            alone = tail_logits(input_ids=second[None], position_ids=torch.arange(m, device=device)[None])
            packed = tail_logits(input_ids=row, position_ids=restarting)
            leak = tail_logits(input_ids=row, position_ids=restarting, attention_mask=torch.ones_like(row))
    finally:
        model.train(training)
    return float((leak - alone).abs().max()), float((packed - alone).abs().max())


def _modeling_source(model: nn.Module) -> str:
    import inspect
    import sys

    inner = model
    while isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module
    base = getattr(inner, "get_base_model", lambda: inner)()
    module = sys.modules.get(type(base).__module__)
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return ""


def naive_token_logprobs(model: nn.Module, block: Mapping[str, Tensor]) -> Tensor:
    """The reference: the model's full ``[R, L, V]`` logits, fp32 log-softmax, gather.

    Exactly what :func:`token_logprobs` avoids; for tests and benchmarks.
    """
    logits = model(**_model_inputs(block), use_cache=False).logits
    logprobs = _upcast(logits).log_softmax(dim=-1).reshape(-1, logits.shape[-1])
    return logprobs[block["logit_index"], block["target_ids"]]


def output_head(model: nn.Module) -> tuple[nn.Module, float | None]:
    """The LM head module and the config's ``final_logit_softcapping`` (text config aware).

    Unwraps DDP / DeepSpeed (``.module``); a PEFT model forwards ``get_output_embeddings`` to its
    base model, and LoRA layers are injected in place, so they are part of what is returned.
    """
    inner = model
    while not hasattr(inner, "get_output_embeddings") and isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None)")
    config = inner.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return head, getattr(text_config, "final_logit_softcapping", None)


class _ChunkedLinearLogprobs(torch.autograd.Function):
    """Log-probs through a linear head; backward recomputes each chunk's logits from the saved lse."""

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int,
        softcap: float | None, compute_dtype: torch.dtype,
    ) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            logprobs, lse = _linear_forward(hidden, weight, bias, targets, chunk_size, softcap, compute_dtype)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.softcap, ctx.compute_dtype = chunk_size, softcap, compute_dtype
        return logprobs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_logprobs: Tensor) -> tuple[Tensor | None, ...]:
        # A ZeRO-3 head was partitioned again after the forward (see `_gathered`): gather it for the
        # recomputed logits. Every process reaches this node once per pass, so the collectives pair up.
        gathered = _zero3_all_gather(ctx.saved_tensors[1:3])
        grads = _linear_backward(ctx, grad_logprobs)
        _zero3_partition_after_accumulation(gathered)
        return grads


def _linear_backward(ctx: Any, grad_logprobs: Tensor) -> tuple[Tensor | None, ...]:
    """`_ChunkedLinearLogprobs`' gradients: each chunk's logits recomputed, one ``[chunk, V]`` at a time."""
    hidden, weight, bias, targets, lse = ctx.saved_tensors
    need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
    dtype, softcap = ctx.compute_dtype, ctx.softcap
    w = weight.to(dtype)
    b = None if bias is None else bias.to(dtype)
    grad_hidden = torch.empty_like(hidden) if need_hidden else None
    grad_weight = torch.zeros_like(w) if need_weight else None
    grad_bias = torch.zeros(w.shape[0], dtype=_upcast_dtype(dtype), device=w.device) if need_bias else None
    with torch.autocast(hidden.device.type, enabled=False):
        for rows in _chunks(hidden.shape[0], ctx.chunk_size):
            h = hidden[rows].to(dtype)
            logits, squashed = _chunk_logits(h, w, b, softcap)
            g = grad_logprobs[rows, None].to(logits.dtype)
            # d log p(target) / d logits = onehot(target) - softmax
            d_logits = logits.sub_(lse[rows, None]).exp_().mul_(-g)  # in place: one [chunk, V] buffer
            d_logits.scatter_add_(1, targets[rows, None], g)
            if squashed is not None:  # d(cap * tanh(z / cap)) / dz = 1 - tanh^2
                d_logits.mul_(1 - squashed.square())
            if need_bias:
                grad_bias += d_logits.sum(dim=0)
            d_logits = d_logits.to(dtype)
            if need_hidden:
                grad_hidden[rows] = d_logits @ w
            if need_weight:
                grad_weight.addmm_(d_logits.t(), h)
            del logits, squashed, d_logits  # else the next chunk's logits are allocated beside them
    return (
        grad_hidden,
        None if grad_weight is None else grad_weight.to(weight.dtype),
        None if grad_bias is None else grad_bias.to(bias.dtype),
        None, None, None, None,
    )


def _linear_forward(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int,
    softcap: float | None, dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """``(log-probs, logsumexp)``, both fp32 ``[N]``, one ``[chunk, V]`` logits tensor at a time."""
    w = weight.to(dtype)
    b = None if bias is None else bias.to(dtype)
    logprobs = torch.empty(hidden.shape[0], dtype=_upcast_dtype(dtype), device=hidden.device)
    lse = torch.empty_like(logprobs)
    for rows in _chunks(hidden.shape[0], chunk_size):
        logits = _chunk_logits(hidden[rows].to(dtype), w, b, softcap)[0]
        target_logits = logits.gather(1, targets[rows, None]).squeeze(1)
        lse[rows] = _logsumexp_(logits)
        logprobs[rows] = target_logits - lse[rows]
        del logits  # before the next chunk's logits exist
    return logprobs, lse


def _logsumexp_(logits: Tensor) -> Tensor:
    """``torch.logsumexp(logits, -1)`` computed in ``logits``' own buffer (which it overwrites).

    ``torch.logsumexp`` allocates a second ``[chunk, V]`` tensor for ``exp(logits - max)``; these are
    its exact steps (aten's ``logsumexp_out_impl``), in place, so the result is bit-identical
    (``tests/test_logprobs.py`` checks it against ``torch.logsumexp``).
    """
    maxes = logits.amax(dim=-1, keepdim=True)
    maxes.masked_fill_(maxes.abs() == float("inf"), 0)
    total = logits.sub_(maxes).exp_().sum(dim=-1)
    return total.log_().add_(maxes.squeeze(-1))


def _chunk_logits(h: Tensor, w: Tensor, b: Tensor | None, softcap: float | None) -> tuple[Tensor, Tensor | None]:
    """fp32 logits of one chunk and, with softcapping, the ``tanh`` the backward pass needs."""
    raw = _upcast(F.linear(h, w, b))
    if softcap is None:
        return raw, None
    squashed = torch.tanh(raw / softcap)
    return squashed * softcap, squashed


def _module_logprobs(hidden: Tensor, head: nn.Module, targets: Tensor, chunk_size: int, softcap: float | None) -> Tensor:
    """Any head module: each chunk under activation checkpointing, so backward recomputes it."""
    vocab = getattr(head, "out_features", None)
    if isinstance(vocab, int):
        _check_targets(targets, vocab)
    needs_grad = hidden.requires_grad or any(p.requires_grad for p in head.parameters())
    pieces = []
    for rows in _chunks(hidden.shape[0], chunk_size):
        args = (head, hidden[rows], targets[rows], softcap)
        if torch.is_grad_enabled() and needs_grad:
            pieces.append(checkpoint(_module_chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(_module_chunk_logprobs(*args))
    return torch.cat(pieces)


def _module_chunk_logprobs(head: nn.Module, hidden: Tensor, targets: Tensor, softcap: float | None) -> Tensor:
    logits = _upcast(head(hidden))
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return logits.gather(1, targets[:, None]).squeeze(1) - logits.logsumexp(dim=-1)


def _verify_head_once(head: nn.Module, softcap: float | None, last_hidden: Tensor, model_logits: Tensor | None) -> None:
    """Compare our head's logits with the model's own at the last position, once per head.

    Catches models whose ``hidden_states[-1]`` is not the head's input or whose forward transforms
    the logits beyond softcapping (e.g. a logit scale), which would otherwise give silently wrong
    log-probs. Only plain linear heads are checked (no dropout, so the comparison is exact).
    """
    weight, bias = _linear_parameters(head)
    if weight is None or model_logits is None or head in _VERIFIED_HEADS:
        return
    with torch.no_grad(), torch.autocast(last_hidden.device.type, enabled=False):
        dtype = _compute_dtype(last_hidden, weight)
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        ours, _ = _chunk_logits(last_hidden.to(dtype), w, b, softcap)
        theirs = model_logits[:, -1].to(ours.dtype)  # fp32, or fp64 for a float64 model
        scale = 1 + float(theirs.abs().max()) if theirs.numel() else 1.0
        if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=0, atol=1e-2 * scale):
            raise RuntimeError(
                f"{type(head).__name__} applied to hidden_states[-1] does not reproduce the model's logits: "
                "this architecture transforms hidden states or logits in a way token_logprobs does not "
                "know (e.g. a logit scale); use naive_token_logprobs for it"
            )
    _VERIFIED_HEADS.add(head)


def _model_inputs(block: Mapping[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor | None]:
    """The model's keyword arguments; a packed block on sdpa gets :func:`_packed_sdpa_mask`."""
    mask = block.get("attention_mask")
    if mask is None and model is not None:
        mask = _packed_sdpa_mask(model, block)
    return {"input_ids": block["input_ids"], "attention_mask": mask, "position_ids": block.get("position_ids")}


def _packed_sdpa_mask(model: nn.Module, block: Mapping[str, Tensor]) -> Tensor | None:
    """One additive ``[R, 1, L, L]`` mask (0 / -inf: causal within each packed sequence) for every layer.

    Why: for a packed row transformers builds a boolean mask, and torch's sdpa converts it to a float
    ``[L, L]`` mask in every layer, each saved for backward -- ``layers x L^2 x 4`` bytes (176 MiB for
    2 layers at L = 4803; 2 GiB for 24). Passing the converted mask once makes every layer share it.
    The values are exactly those of torch's conversion, so outputs and gradients are unchanged. Only
    for plain sdpa full attention outside autocast (the mask must be in the query dtype).
    """
    position_ids = block.get("position_ids")
    config = getattr(model, "config", None)
    if position_ids is None or config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return None
    if getattr(config, "sliding_window", None) is not None or any(
            kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return None
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    if not isinstance(weight, Tensor) or torch.is_autocast_enabled(weight.device.type) or is_sharded(model):
        return None
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] - position_ids[:, :-1] != 1  # as transformers detects packed sequences
    sequence = starts.cumsum(dim=1)
    length = position_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril_()
    allowed = (sequence[:, :, None] == sequence[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=weight.dtype, device=position_ids.device)
    return mask.masked_fill_(allowed.logical_not_(), float("-inf"))[:, None]


def _linear_parameters(head: nn.Module | Tensor) -> tuple[Tensor | None, Tensor | None]:
    """``(weight, bias)`` when ``head`` computes exactly ``F.linear``; ``(None, None)`` otherwise.

    A subclass that overrides ``forward`` (e.g. a quantised linear layer) is not plain.
    """
    if isinstance(head, Tensor):
        return head, None
    if isinstance(head, nn.Linear) and type(head).forward is nn.Linear.forward:
        return head.weight, head.bias
    return None, None


def _upcast_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or fp64 for fp64 inputs (so that float64 gradient checks are exact)."""
    return torch.promote_types(dtype, torch.float32)


def _upcast(tensor: Tensor) -> Tensor:
    return tensor.to(_upcast_dtype(tensor.dtype))


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype


def _chunks(total: int, chunk_size: int) -> list[slice]:
    return [slice(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def _check_head_inputs(hidden: Tensor, targets: Tensor, chunk_size: int, softcap: float | None) -> None:
    if hidden.dim() != 2 or not hidden.is_floating_point():
        raise ValueError(f"hidden must be a floating-point [N, H] tensor, got {hidden.dtype} {tuple(hidden.shape)}")
    if targets.dim() != 1 or targets.dtype != torch.long or targets.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"targets must be int64 [N] with N={hidden.shape[0]} (rows of hidden), got {targets.dtype} "
            f"{tuple(targets.shape)}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be None or > 0, got {softcap}")


def _check_weight(weight: Tensor, bias: Tensor | None, hidden: Tensor) -> None:
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1] or not weight.is_floating_point():
        raise ValueError(
            f"the LM head weight must be a floating-point [V, {hidden.shape[1]}] tensor, got {weight.dtype} "
            f"{tuple(weight.shape)} (a parameter sharded by FSDP or DeepSpeed ZeRO-3 is not gathered "
            "outside the model's forward)"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"the LM head bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")


def _check_targets(targets: Tensor, vocab_size: int) -> None:
    if targets.numel() and not (int(targets.min()) >= 0 and int(targets.max()) < vocab_size):
        raise ValueError(f"target ids must lie in [0, {vocab_size}) of the LM head's vocabulary")
