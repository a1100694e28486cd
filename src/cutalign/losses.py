"""The CUT loss (arXiv 2312.14591, Sections 3-4 of docs/cut-method.md) as a pure function.

The loss only sees per-token log-probs of the response under each context, so it is testable
by hand and independent of how the log-probs were computed (see :mod:`cutalign.logprobs`).

Contexts, per response token ``y_t``:

- ``logp_plain``      log p(y_t | x)       -- Align-P for positives, the L1 / UL sequence for negatives;
- ``logp_judged``     log p(y_t | x, j-)   -- Align-N (negatives only; ignored for positives);
- ``logp_misaligned`` log p(y_t | x, j+)   -- the misaligned context of the detection; ``None``
  means the bare instruction ``x`` (the official code), i.e. ``logp_plain`` itself.

Two reductions are selectable. ``mode="paper"`` follows the paper's equations: every example gets
L1 (negatives) + L2 normalised by its response length, and the batch loss is the mean over examples.
``mode="official"`` reproduces the official code: ``loss = (ul_part + mle_part) / 2`` with token
means over the micro-batch (see :func:`cut_loss` for the details and how ablations apply).

Everything is computed in fp32 (fp64 for fp64 inputs); gradients flow back in the inputs' dtypes. Entries outside
``response_mask`` and ``logp_judged`` / ``logp_misaligned`` of positives are never read, so they
may hold any value, NaN included, without affecting values or gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor

LossMode = Literal["paper", "official"]
LOSS_MODES: tuple[str, ...] = ("paper", "official")

# log(1 - p) is evaluated with p <= 1 - 1e-6, so its value is >= log(1e-6) ~ -13.8 and its gradient
# wrt log p is at most ~1e6 (multiplied by 1 - p on the way to the logits, so it stays bounded).
MAX_PROB = 1.0 - 1e-6
_MAX_LOGP = math.log1p(-1e-6)


@dataclass(frozen=True)
class CUTAblations:
    """The paper's ablation switches (Section 4 of docs/cut-method.md); all off = full CUT.

    paper mode / official mode:

    - ``no_l1``: drop L1 / drop ``ul_part`` (the loss is then the MLE part alone).
    - ``no_align_p``: positives get no L2, so they add 0 to the mean over examples (drop them from
      the data to save their forward passes) / positives' tokens leave the MLE token mean.
    - ``no_align_n``: as ``no_align_p`` for the negatives' ``y | x, j-`` term.
    - ``no_detection``: U = every valid response token of the negatives (both modes).
    - ``no_dynamic_weight``: weight ``alpha`` instead of ``alpha * p-(t)^gamma`` / no effect (the
      official weight is already constant).
    """

    no_l1: bool = False
    no_align_p: bool = False
    no_align_n: bool = False
    no_detection: bool = False
    no_dynamic_weight: bool = False

    @classmethod
    def from_names(cls, names: Iterable[str]) -> CUTAblations:
        """Build from switch names, e.g. ``["no_l1", "no_detection"]`` (CLI / YAML lists)."""
        known = [f.name for f in fields(cls)]
        chosen = list(names)
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise ValueError(f"unknown CUT ablation(s) {unknown}; known: {known}")
        return cls(**dict.fromkeys(chosen, True))


@dataclass(frozen=True)
class CUTLossOutput:
    """The loss and the detached quantities worth logging.

    ``l1`` / ``l2``: paper mode -- the mean of L1 over negatives and of L2 over the examples that
    receive it; official mode -- ``ul_part`` and ``mle_part``. ``unlikelihood_term`` is the
    U-token share of ``l1`` (the ``alpha * w * -log(1 - p)`` sum, reduced like ``l1``). The three
    ``mean_logp_*`` are token means: plain over all valid tokens, judged and misaligned over the
    negatives' valid tokens (0 when there are none).
    """

    loss: Tensor
    unlikely_mask: Tensor
    l1: Tensor
    l2: Tensor
    unlikelihood_term: Tensor
    unlikely_fraction: Tensor
    num_negative_tokens: Tensor
    num_unlikely_tokens: Tensor
    mean_logp_plain: Tensor
    mean_logp_judged: Tensor
    mean_logp_misaligned: Tensor

    def metrics(self) -> dict[str, float]:
        """Every scalar field as a Python float (one device sync), for the trainer's logs."""
        return {f.name: float(getattr(self, f.name).detach()) for f in fields(self) if f.name != "unlikely_mask"}


def cut_loss(
    logp_plain: Tensor,
    logp_judged: Tensor,
    logp_misaligned: Tensor | None,
    response_mask: Tensor,
    is_negative: Tensor,
    *,
    threshold: float = 1.1,
    alpha: float = 1.0,
    gamma: float = 0.0,
    mode: LossMode = "paper",
    ablations: CUTAblations = CUTAblations(),  # frozen, so a shared default is safe
) -> CUTLossOutput:
    """The CUT loss of a micro-batch from per-token log-probs ``[B, T]`` of the response tokens.

    ``threshold`` is lambda of the detection ``U = {t : p-(t) > lambda * p+(t)}``, evaluated in log
    space on the negatives' valid tokens; U and the weight ``alpha * p-(t)^gamma`` are constants
    (no gradient), so ``logp_judged`` receives gradient from L2 only and ``logp_misaligned`` never.

    ``mode="paper"``: per example ``L1 + L2`` (negatives) or ``L2`` (positives), each divided by the
    example's response length; the loss is the mean over all B examples (an example whose terms are
    all ablated adds 0), so ``loss * B`` is the micro-batch's sum for exact gradient accumulation.

    ``mode="official"`` (the official code's reduction): ``ul_part`` = sum over the negatives'
    tokens of ``-alpha * log(1 - p(y|x))`` on U and ``-log p(y|x)`` elsewhere, divided by the number
    of negative tokens; ``mle_part`` = one token mean of ``-log p(y|x)`` (positives) and
    ``-log p(y|x, j-)`` (negatives); ``loss = (ul_part + mle_part) / 2`` when both are present,
    else the one present (0 if neither). ``gamma`` must be 0 here (the official weight is constant).
    The official code's misaligned context is ``x``: pass ``logp_misaligned=None`` to reproduce
    it; a given ``logp_misaligned`` (e.g. the fake-positive context) is used for the detection.

    Every example must have at least one response token (an empty one is a data bug upstream).
    """
    _check_inputs(logp_plain, logp_judged, logp_misaligned, response_mask, is_negative)
    _check_hyperparameters(threshold, alpha, gamma, mode)
    valid = response_mask
    negative_tokens = valid & is_negative[:, None]
    positive_tokens = valid & ~is_negative[:, None]
    # Zero every entry that is never read *before* any arithmetic: garbage (even NaN) there then
    # cannot reach values or gradients.
    dtype = torch.promote_types(logp_plain.dtype, torch.float32)
    plain = torch.where(valid, logp_plain.to(dtype), 0.0)
    judged = torch.where(negative_tokens, logp_judged.to(dtype), 0.0)
    misaligned_source = logp_plain if logp_misaligned is None else logp_misaligned
    misaligned = torch.where(negative_tokens, misaligned_source.detach().to(dtype), 0.0)

    unlikely, weight = cut_detection(judged, misaligned, negative_tokens, threshold=threshold, alpha=alpha,
                                     gamma=gamma, mode=mode, ablations=ablations)
    neg_ul = torch.where(unlikely, -weight * log1m_exp(plain), 0.0)  # on U: -w log(1 - p(y|x))
    neg_mle = torch.where(negative_tokens & ~unlikely, -plain, 0.0)  # off U: -log p(y|x)
    pos_mle = torch.where(positive_tokens, -plain, 0.0)  # Align-P: -log p(y|x)
    align_n = -judged  # Align-N: -log p(y|x, j-) (zero off the negatives' tokens)

    reduce = _reduce_paper if mode == "paper" else _reduce_official
    loss, l1, l2, ul_term = reduce(neg_ul, neg_mle, pos_mle, align_n, valid, is_negative, ablations)

    num_negative = negative_tokens.sum()
    num_unlikely = unlikely.sum()
    return CUTLossOutput(
        loss=loss,
        unlikely_mask=unlikely,
        l1=l1.detach(),
        l2=l2.detach(),
        unlikelihood_term=ul_term.detach(),
        unlikely_fraction=num_unlikely / num_negative.clamp(min=1),
        num_negative_tokens=num_negative,
        num_unlikely_tokens=num_unlikely,
        mean_logp_plain=plain.detach().sum() / valid.sum(),
        mean_logp_judged=judged.detach().sum() / num_negative.clamp(min=1),
        mean_logp_misaligned=misaligned.sum() / num_negative.clamp(min=1),
    )


def cut_detection(
    logp_judged: Tensor,
    logp_misaligned: Tensor,
    candidates: Tensor,
    *,
    threshold: float = 1.1,
    alpha: float = 1.0,
    gamma: float = 0.0,
    mode: LossMode = "paper",
    ablations: CUTAblations = CUTAblations(),
) -> tuple[Tensor, Tensor | float]:
    """CUT's unlikely set U and the unlikelihood weight of its tokens, exactly as :func:`cut_loss` uses them.

    One function for the loss and for ``cutalign inspect`` (so what a user inspects is what the
    trainer flags). ``candidates`` are the negatives' valid response tokens; U is all of them under
    ``no_detection``. The weight is ``alpha * p(t|x,j-)^gamma`` in paper mode (a ``[B, T]`` tensor),
    the constant ``alpha`` in official mode, with ``no_dynamic_weight`` or ``gamma == 0``. No gradient.
    """
    with torch.no_grad():
        if ablations.no_detection:
            unlikely = candidates
        else:
            unlikely = detect_unlikely_tokens(logp_judged, logp_misaligned, candidates, threshold)
        if mode == "official" or ablations.no_dynamic_weight or gamma == 0:
            return unlikely, alpha
        return unlikely, alpha * torch.exp(gamma * logp_judged.detach())


def detect_unlikely_tokens(
    logp_judged: Tensor, logp_misaligned: Tensor, candidates: Tensor, threshold: float
) -> Tensor:
    """U = {t in candidates : p-(t) - threshold * p+(t) > 0}, as ``log p- - log p+ > log threshold``.

    The log form is the same set (p+ > 0) without underflow for tiny probabilities. No gradient.
    """
    with torch.no_grad():
        return candidates & (logp_judged - logp_misaligned > math.log(threshold))


def log1m_exp(logp: Tensor) -> Tensor:
    """``log(1 - exp(logp))``, finite with finite gradients even when ``p -> 1``.

    ``p`` is clamped to ``MAX_PROB`` in value only (a straight-through clamp): above it the
    gradient is the one at the clamp point, so a certain token still gets pushed down instead of
    getting the zero gradient of a hard clamp.
    """
    clamped = logp - (logp - _MAX_LOGP).clamp(min=0).detach()
    return torch.log(-torch.expm1(clamped))


_Parts = tuple[Tensor, Tensor, Tensor, Tensor]


def _reduce_paper(
    neg_ul: Tensor, neg_mle: Tensor, pos_mle: Tensor, align_n: Tensor, valid: Tensor, is_negative: Tensor,
    ablations: CUTAblations,
) -> _Parts:
    """Per-example ``L1 + L2`` over response length, mean over the batch's examples."""
    length = valid.sum(dim=1).float()
    ul_row = neg_ul.sum(dim=1) / length
    l1_row = ul_row + neg_mle.sum(dim=1) / length
    l2_row = torch.where(is_negative, align_n.sum(dim=1), pos_mle.sum(dim=1)) / length
    has_l1 = is_negative & (not ablations.no_l1)
    has_l2 = torch.where(is_negative, not ablations.no_align_n, not ablations.no_align_p)
    row_loss = torch.where(has_l1, l1_row, 0.0) + torch.where(has_l2, l2_row, 0.0)
    loss = row_loss.mean()
    return loss, _masked_mean(l1_row, is_negative), _masked_mean(l2_row, has_l2), _masked_mean(ul_row, is_negative)


def _reduce_official(
    neg_ul: Tensor, neg_mle: Tensor, pos_mle: Tensor, align_n: Tensor, valid: Tensor, is_negative: Tensor,
    ablations: CUTAblations,
) -> _Parts:
    """The official code: token means over the micro-batch, ``(ul_part + mle_part) / 2``."""
    num_negative = (valid & is_negative[:, None]).sum()
    ul_term = neg_ul.sum() / num_negative.clamp(min=1)
    ul_part = ul_term + neg_mle.sum() / num_negative.clamp(min=1)
    mle_sum = pos_mle.new_zeros(())
    mle_count = num_negative.new_zeros(())
    if not ablations.no_align_p:
        mle_sum = mle_sum + pos_mle.sum()
        mle_count = mle_count + (valid & ~is_negative[:, None]).sum()
    if not ablations.no_align_n:
        mle_sum = mle_sum + align_n.sum()
        mle_count = mle_count + num_negative
    mle_part = mle_sum / mle_count.clamp(min=1)
    has_ul = (num_negative > 0) & (not ablations.no_l1)
    has_mle = mle_count > 0
    total = torch.where(has_ul, ul_part, 0.0) + torch.where(has_mle, mle_part, 0.0)
    loss = total / (has_ul.long() + has_mle.long()).clamp(min=1)
    return loss, ul_part, mle_part, ul_term


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def _check_inputs(
    logp_plain: Tensor, logp_judged: Tensor, logp_misaligned: Tensor | None, response_mask: Tensor,
    is_negative: Tensor,
) -> None:
    if response_mask.dtype != torch.bool or response_mask.dim() != 2:
        raise ValueError(
            f"response_mask must be a bool [B, T] tensor, got {response_mask.dtype} of shape "
            f"{tuple(response_mask.shape)}"
        )
    shape = response_mask.shape
    if shape[0] == 0:
        raise ValueError("the batch is empty (response_mask has 0 rows)")
    named = {"logp_plain": logp_plain, "logp_judged": logp_judged, "logp_misaligned": logp_misaligned}
    for name, tensor in named.items():
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must hold floating-point log-probs, got {tensor.dtype}")
        if tensor.shape != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, response_mask has {tuple(shape)}")
    if is_negative.dtype != torch.bool or is_negative.shape != shape[:1]:
        raise ValueError(
            f"is_negative must be a bool [B] tensor with B={shape[0]}, got {is_negative.dtype} of shape "
            f"{tuple(is_negative.shape)}"
        )
    empty = (~response_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"examples {empty} of the batch have no response tokens in response_mask")


def _check_hyperparameters(threshold: float, alpha: float, gamma: float, mode: str) -> None:
    if mode not in LOSS_MODES:
        raise ValueError(f"mode must be one of {LOSS_MODES}, got {mode!r}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a finite number > 0, got {threshold}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    if mode == "official" and gamma != 0:
        raise ValueError(f"mode='official' uses the constant weight alpha; gamma must be 0, got {gamma}")
