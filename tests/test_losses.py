"""The CUT loss against hand-computed values and a naive per-token reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cutalign.losses import CUTAblations, cut_loss, log1m_exp

ABLATIONS = [CUTAblations(), *(CUTAblations(**{name: True}) for name in (
    "no_l1", "no_align_p", "no_align_n", "no_detection", "no_dynamic_weight"))]


def _log(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).log()


# One negative, two tokens: p(y|x) = [0.5, 0.25], p(y|x,j-) = [0.8, 0.2].
NEG_PLAIN, NEG_JUDGED = [0.5, 0.25], [0.8, 0.2]


def _hand_batch(with_positive: bool) -> tuple[torch.Tensor, ...]:
    """Negative as above; optional positive with p(y|x) = [0.5, <pad>] and garbage j- log-probs."""
    plain, judged, mask = [NEG_PLAIN], [NEG_JUDGED], [[True, True]]
    if with_positive:
        plain.append([0.5, 0.9])
        judged.append([float("nan"), 7.0])
        mask.append([True, False])
    neg = torch.tensor([True, False][: len(mask)])
    return _log(plain), torch.tensor(judged, dtype=torch.float64).log(), torch.tensor(mask), neg


def test_paper_single_negative_by_hand() -> None:
    plain, judged, mask, neg = _hand_batch(with_positive=False)
    out = cut_loss(plain, judged, None, mask, neg, threshold=1.1)
    # U (misaligned = x): t0: 0.8 > 1.1 * 0.5 = 0.55 -> in U; t1: 0.2 > 1.1 * 0.25 = 0.275 -> not.
    assert out.unlikely_mask.tolist() == [[True, False]]
    # L1 = -(1/2) [log(1 - 0.5) + log 0.25] = (0.693147 + 1.386294) / 2 = 1.0397208
    # L2 = -(1/2) [log 0.8 + log 0.2]       = (0.223144 + 1.609438) / 2 = 0.9162907
    assert out.l1.item() == pytest.approx(1.0397208, abs=1e-6)
    assert out.l2.item() == pytest.approx(0.9162907, abs=1e-6)
    assert out.loss.item() == pytest.approx(1.9560115, abs=1e-6)
    # The U-token share of L1: -(1/2) log(1 - 0.5) = 0.3465736
    assert out.unlikelihood_term.item() == pytest.approx(0.3465736, abs=1e-6)
    assert out.unlikely_fraction.item() == 0.5
    assert (out.num_negative_tokens.item(), out.num_unlikely_tokens.item()) == (2, 1)


def test_paper_dynamic_weight_by_hand() -> None:
    plain, judged, mask, neg = _hand_batch(with_positive=False)
    out = cut_loss(plain, judged, None, mask, neg, alpha=0.5, gamma=2.0)
    # weight on t0 = 0.5 * 0.8^2 = 0.32; L1 = -(1/2) [0.32 log 0.5 + log 0.25]
    #   = (0.2218071 + 1.3862944) / 2 = 0.8040507; L2 = 0.9162907 as before.
    assert out.loss.item() == pytest.approx(0.8040507 + 0.9162907, abs=1e-6)
    flat = cut_loss(plain, judged, None, mask, neg, alpha=0.5, gamma=2.0,
                    ablations=CUTAblations(no_dynamic_weight=True))
    # weight = alpha = 0.5: L1 = (0.5 * 0.6931472 + 1.3862944) / 2 = 0.8664340
    assert flat.loss.item() == pytest.approx(0.8664340 + 0.9162907, abs=1e-6)


def test_paper_mixed_batch_by_hand() -> None:
    plain, judged, mask, neg = _hand_batch(with_positive=True)
    out = cut_loss(plain, judged, None, mask, neg)
    # positive: L2 = -log 0.5 / 1 = 0.6931472; batch = mean of (1.9560115, 0.6931472) = 1.3245793
    assert out.loss.item() == pytest.approx(1.3245793, abs=1e-6)
    assert out.unlikely_mask.tolist() == [[True, False], [False, False]]
    # l2 averages L2 over both examples: (0.9162907 + 0.6931472) / 2
    assert out.l2.item() == pytest.approx(0.8047190, abs=1e-6)
    no_p = cut_loss(plain, judged, None, mask, neg, ablations=CUTAblations(no_align_p=True))
    # the positive gets no term but still counts: loss = (1.9560115 + 0) / 2
    assert no_p.loss.item() == pytest.approx(0.9780058, abs=1e-6)


def test_paper_fake_positive_context_by_hand() -> None:
    plain, judged, mask, neg = _hand_batch(with_positive=False)
    misaligned = _log([[0.9, 0.1]])
    out = cut_loss(plain, judged, misaligned, mask, neg, threshold=1.1)
    # U: t0: 0.8 > 0.99? no; t1: 0.2 > 0.11 -> in U.
    assert out.unlikely_mask.tolist() == [[False, True]]
    # L1 = -(1/2) [log 0.5 + log(1 - 0.25)] = (0.6931472 + 0.2876821) / 2 = 0.4904146
    assert out.loss.item() == pytest.approx(0.4904146 + 0.9162907, abs=1e-6)


def test_official_mixed_batch_by_hand() -> None:
    plain, judged, mask, neg = _hand_batch(with_positive=True)
    out = cut_loss(plain, judged, None, mask, neg, mode="official", alpha=1.0)
    # ul_part over the 2 negative tokens: (-log(1 - 0.5) - log 0.25) / 2 = 1.0397208
    # mle_part over all 3 valid tokens: (-log 0.8 - log 0.2 - log 0.5) / 3
    #   = (0.2231436 + 1.6094379 + 0.6931472) / 3 = 0.8419096
    assert out.l1.item() == pytest.approx(1.0397208, abs=1e-6)
    assert out.l2.item() == pytest.approx(0.8419096, abs=1e-6)
    assert out.loss.item() == pytest.approx((1.0397208 + 0.8419096) / 2, abs=1e-6)
    half = cut_loss(plain, judged, None, mask, neg, mode="official", alpha=0.5)
    # ul_part = (0.5 * 0.6931472 + 1.3862944) / 2 = 0.8664340
    assert half.loss.item() == pytest.approx((0.8664340 + 0.8419096) / 2, abs=1e-6)


def test_official_all_positive_is_plain_mle() -> None:
    plain = _log([[0.5, 0.25], [0.125, 1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    out = cut_loss(plain, torch.zeros(2, 2), None, mask, torch.tensor([False, False]), mode="official")
    # no negative: loss = mle_part = (log 2 + log 4 + log 8) / 3 = 6 log 2 / 3 = 2 log 2
    assert out.loss.item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert out.unlikely_fraction.item() == 0.0


# ---------------------------------------------------------------------------------------------
# The naive reference: one Python loop over examples and tokens, straight from the equations.


def reference_loss(plain, judged, misaligned, mask, neg, *, threshold, alpha, gamma, mode, ablations):
    B, T = mask.shape
    context_plus = plain if misaligned is None else misaligned
    in_u = {}
    for b, t in itertools.product(range(B), range(T)):
        if mask[b, t] and neg[b]:
            p_minus, p_plus = math.exp(judged[b, t].item()), math.exp(context_plus[b, t].item())
            in_u[b, t] = ablations.no_detection or p_minus - threshold * p_plus > 0

    def weight(b: int, t: int) -> float:
        if mode == "official" or ablations.no_dynamic_weight:
            return alpha
        return alpha * math.exp(judged[b, t].item()) ** gamma

    def l1_token(b: int, t: int) -> torch.Tensor:  # the summand of L1 (without the minus sign)
        return weight(b, t) * torch.log(1 - torch.exp(plain[b, t])) if in_u[b, t] else plain[b, t]

    def l2_token(b: int, t: int) -> torch.Tensor:
        return judged[b, t] if neg[b] else plain[b, t]

    if mode == "paper":
        total = (plain.nan_to_num() * 0).sum()
        for b in range(B):
            tokens = [t for t in range(T) if mask[b, t]]
            terms = []
            if neg[b] and not ablations.no_l1:
                terms.append(-sum(l1_token(b, t) for t in tokens) / len(tokens))
            if not (ablations.no_align_n if neg[b] else ablations.no_align_p):
                terms.append(-sum(l2_token(b, t) for t in tokens) / len(tokens))
            total = total + sum(terms)
        return total / B
    neg_tokens = [(b, t) for b in range(B) for t in range(T) if mask[b, t] and neg[b]]
    mle_tokens = [(b, t) for b in range(B) for t in range(T) if mask[b, t]
                  and not (ablations.no_align_n if neg[b] else ablations.no_align_p)]
    parts = []
    if neg_tokens and not ablations.no_l1:
        parts.append(-sum(l1_token(b, t) for b, t in neg_tokens) / len(neg_tokens))
    if mle_tokens:
        parts.append(-sum(l2_token(b, t) for b, t in mle_tokens) / len(mle_tokens))
    return sum(parts) / len(parts) if parts else (plain.nan_to_num() * 0).sum()


def _random_batch(seed: int, kind: str, with_misaligned: bool):
    gen = torch.Generator().manual_seed(seed)
    B, T = 4, 5

    def logp() -> torch.Tensor:  # p in [0.02, 0.95]: the naive log(1 - p) is accurate there
        return (0.02 + 0.93 * torch.rand(B, T, generator=gen, dtype=torch.float64)).log()

    plain, judged = logp(), logp()
    misaligned = logp() if with_misaligned else None
    lengths = torch.tensor([5, 3, 1, 4])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    neg = {"mixed": torch.tensor([True, False, True, False]), "all_negative": torch.ones(B, dtype=torch.bool),
           "all_positive": torch.zeros(B, dtype=torch.bool)}[kind]
    # Garbage where the loss must not look: padding and the positives' judged log-probs.
    plain = plain.masked_fill(~mask, float("nan"))
    judged = judged.masked_fill(~mask | ~neg[:, None], float("nan"))
    return plain, judged, misaligned, mask, neg


@pytest.mark.parametrize("mode", ["paper", "official"])
@pytest.mark.parametrize("kind", ["mixed", "all_negative", "all_positive"])
@pytest.mark.parametrize("with_misaligned", [False, True])
@pytest.mark.parametrize("ablations", ABLATIONS, ids=lambda a: "-".join(k for k, v in vars(a).items() if v) or "full")
def test_matches_reference_values_and_gradients(mode, kind, with_misaligned, ablations) -> None:
    kwargs = {"threshold": 1.1, "alpha": 0.5, "gamma": 0.5 if mode == "paper" else 0.0, "mode": mode,
              "ablations": ablations}
    for seed in range(3):
        plain, judged, misaligned, mask, neg = _random_batch(seed, kind, with_misaligned)
        ours_inputs = [plain.clone().requires_grad_(), judged.clone().requires_grad_()]
        ref_inputs = [plain.clone().requires_grad_(), judged.clone().requires_grad_()]
        out = cut_loss(*ours_inputs, misaligned, mask, neg, **kwargs)
        expected = reference_loss(*ref_inputs, misaligned, mask, neg, **kwargs)
        assert torch.isfinite(out.loss)
        torch.testing.assert_close(out.loss, expected, rtol=1e-9, atol=1e-12)
        out.loss.backward()
        expected.backward()
        for ours, ref in zip(ours_inputs, ref_inputs, strict=True):
            ours_grad = torch.zeros_like(ours) if ours.grad is None else ours.grad
            ref_grad = torch.zeros_like(ref) if ref.grad is None else ref.grad
            assert torch.isfinite(ours_grad).all()
            torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_unlikely_mask_matches_probability_space_definition() -> None:
    plain, judged, misaligned, mask, neg = _random_batch(0, "mixed", with_misaligned=True)
    out = cut_loss(plain, judged, misaligned, mask, neg, threshold=1.2)
    expected = mask & neg[:, None] & (judged.exp() - 1.2 * misaligned.exp() > 0)
    assert out.unlikely_mask.tolist() == expected.tolist()
    assert out.unlikely_mask.any() and not out.unlikely_mask.all()
    no_det = cut_loss(plain, judged, misaligned, mask, neg, ablations=CUTAblations(no_detection=True))
    assert no_det.unlikely_mask.tolist() == (mask & neg[:, None]).tolist()


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_judged_gradient_comes_from_l2_only(mode: str) -> None:
    """U and the dynamic weight are constants: d loss / d logp_judged is the L2 term alone."""
    plain, judged, misaligned, mask, neg = _random_batch(1, "mixed", with_misaligned=True)
    judged = judged.float().requires_grad_()
    misaligned = misaligned.float().requires_grad_()
    gamma = 1.0 if mode == "paper" else 0.0
    out = cut_loss(plain.float(), judged, misaligned, mask, neg, mode=mode, gamma=gamma)
    assert out.unlikely_mask.any()
    out.loss.backward()
    assert misaligned.grad is None
    lengths = mask.sum(dim=1, keepdim=True).float()
    negative_tokens = mask & neg[:, None]
    if mode == "paper":  # -(1/N) per token, mean over the 4 examples
        expected = torch.where(negative_tokens, -1.0 / (lengths * 4), 0.0)
    else:  # -1 / (all valid tokens) in mle_part, halved by (ul_part + mle_part) / 2
        expected = torch.where(negative_tokens, -0.5 / mask.sum(), 0.0)
    torch.testing.assert_close(judged.grad, expected)


def test_stable_when_p_is_one_or_tiny() -> None:
    # t0, t1 have p(y|x) = 1 (and 1 - 1e-9) and are in U (p- = 1 > 1.1 * p+ is false with x as the
    # misaligned context, so a separate misaligned context with tiny p+ puts them in U).
    plain = torch.tensor([[0.0, -1e-9, -1e4, -float("inf")]], requires_grad=True)
    judged = torch.tensor([[0.0, 0.0, -1e4, -5.0]], requires_grad=True)
    misaligned = torch.full((1, 4), -30.0)
    mask = torch.tensor([[True, True, True, False]])
    out = cut_loss(plain, judged, misaligned, mask, torch.tensor([True]), gamma=1.0)
    assert out.unlikely_mask.tolist() == [[True, True, False, False]]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(plain.grad).all() and torch.isfinite(judged.grad).all()
    # the certain tokens are still pushed down (a hard clamp would give them zero gradient)
    assert (plain.grad[0, :2] > 1e3).all()
    # log(1 - p) is bounded below by log(1e-6)
    assert log1m_exp(torch.tensor(0.0)).item() == pytest.approx(math.log(1e-6), rel=1e-3)
    assert log1m_exp(torch.tensor(-1e4)).item() == 0.0


def test_bf16_inputs_give_fp32_loss_and_bf16_gradients() -> None:
    plain, judged, _, mask, neg = _random_batch(2, "mixed", with_misaligned=False)
    plain16 = plain.bfloat16().requires_grad_()
    out = cut_loss(plain16, judged.bfloat16(), None, mask, neg)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert plain16.grad.dtype == torch.bfloat16
    reference = cut_loss(plain.bfloat16().double(), judged.bfloat16().double(), None, mask, neg)
    assert out.loss.item() == pytest.approx(reference.loss.item(), rel=1e-5)


def test_metrics_are_floats() -> None:
    plain, judged, misaligned, mask, neg = _random_batch(0, "mixed", with_misaligned=True)
    metrics = cut_loss(plain, judged, misaligned, mask, neg).metrics()
    assert set(metrics) >= {"loss", "l1", "l2", "unlikely_fraction", "num_negative_tokens", "mean_logp_judged"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    # judged / misaligned means are over the negatives' 5 + 1 valid tokens only
    negative_tokens = mask & neg[:, None]
    assert metrics["mean_logp_misaligned"] == pytest.approx(misaligned[negative_tokens].mean().item())


def test_ablations_from_names() -> None:
    assert CUTAblations.from_names(["no_l1", "no_detection"]) == CUTAblations(no_l1=True, no_detection=True)
    with pytest.raises(ValueError, match="unknown CUT ablation"):
        CUTAblations.from_names(["no_l3"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"response_mask": torch.ones(2, 3)}, "response_mask must be a bool"),
        ({"logp_judged": torch.zeros(2, 4)}, "logp_judged has shape"),
        ({"logp_plain": torch.zeros(2, 3, dtype=torch.long)}, "floating-point"),
        ({"is_negative": torch.tensor([1, 0])}, "is_negative must be a bool"),
        ({"is_negative": torch.tensor([True])}, "is_negative must be a bool"),
        ({"response_mask": torch.tensor([[True, True, False], [False, False, False]])}, r"examples \[1\]"),
        ({"threshold": 0.0}, "threshold must be"),
        ({"alpha": -1.0}, "alpha must be"),
        ({"gamma": float("nan")}, "gamma must be"),
        ({"mode": "Paper"}, "mode must be one of"),
        ({"mode": "official", "gamma": 0.5}, "gamma must be 0"),
    ],
)
def test_bad_inputs_raise_clear_errors(change: dict, message: str) -> None:
    args = {"logp_plain": torch.zeros(2, 3), "logp_judged": torch.zeros(2, 3), "logp_misaligned": None,
            "response_mask": torch.ones(2, 3, dtype=torch.bool), "is_negative": torch.tensor([True, False])}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        cut_loss(**args)


def test_cut_detection_is_the_losss_u_and_weight():
    """`cut_detection` (shared with `cutalign inspect`) gives exactly the loss's U, and the weight alpha * p-^gamma."""
    from cutalign.losses import cut_detection

    torch.manual_seed(0)
    plain, judged, misaligned = (-torch.rand(3, 5) * 3 for _ in range(3))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False
    is_negative = torch.tensor([True, False, True])
    out = cut_loss(plain, judged, misaligned, mask, is_negative, threshold=1.2, alpha=0.5, gamma=0.7)
    candidates = mask & is_negative[:, None]
    unlikely, weight = cut_detection(torch.where(candidates, judged, 0.0), torch.where(candidates, misaligned, 0.0),
                                     candidates, threshold=1.2, alpha=0.5, gamma=0.7)
    assert torch.equal(unlikely, out.unlikely_mask)
    assert torch.equal(unlikely, candidates & (judged.exp() > 1.2 * misaligned.exp()))
    assert torch.allclose(weight[candidates], 0.5 * judged.exp()[candidates] ** 0.7)
    constant = cut_detection(judged, misaligned, candidates, threshold=1.2, alpha=0.5, gamma=0.7, mode="official")[1]
    assert constant == 0.5
    everything = cut_detection(judged, misaligned, candidates, ablations=CUTAblations(no_detection=True))[0]
    assert torch.equal(everything, candidates)
