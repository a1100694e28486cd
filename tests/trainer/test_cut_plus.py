"""CUT+ (the lab's recipe): the loss checked by hand, CUT recovered at unit weights, and a short training run."""

from __future__ import annotations

import math

import pytest
import torch

from cutalign.data.collator import block_to_matrices
from cutalign.demo.assets import tiny_causal_lm
from cutalign.logprobs import token_logprobs
from cutalign.losses import cut_loss
from cutalign.trainer.cut_plus import (
    CUTPlusConfig,
    CUTPlusTrainer,
    _target_log_softmax,
    context_rows,
    cut_plus_loss,
)

# Example 0 is a negative, example 1 a positive; two response tokens each.
# Negative token 0: p(x,j-) 0.8 vs p(misaligned) 0.4, ratio 2 > 1.1 -> in U; token 1: 0.5 vs 0.5 -> not in U.
PLAIN = [[0.5, 0.25], [0.5, 0.25]]
JUDGED = [[0.8, 0.5], [0.9, 0.9]]  # a positive's judged values are never read
MISALIGNED = [[0.4, 0.5], [0.9, 0.9]]
KL = [[0.3, 0.1], [0.2, 0.4]]
DISTILL = [[0.2, 0.6], [0.5, 0.5]]  # a positive's distillation values are never read


def inputs(requires_grad: bool = False):
    plain = torch.tensor(PLAIN, dtype=torch.float64).log().requires_grad_(requires_grad)
    judged = torch.tensor(JUDGED, dtype=torch.float64).log()
    misaligned = torch.tensor(MISALIGNED, dtype=torch.float64).log()
    return plain, judged, misaligned, torch.ones(2, 2, dtype=torch.bool), torch.tensor([True, False])


def test_default_loss_by_hand_drops_the_negatives_unflagged_mle():
    out = cut_plus_loss(*inputs())
    # negative: UL on token 0, -log(1 - 0.5) = log 2; no MLE on token 1; Align-N -log 0.8 - log 0.5; / 2 tokens
    negative = (math.log(2) + (-math.log(0.8) - math.log(0.5))) / 2  # 0.804719
    positive = (-math.log(0.5) - math.log(0.25)) / 2  # 1.039721
    assert out.unlikely_mask.tolist() == [[True, False], [False, False]]
    assert float(out.loss) == pytest.approx((negative + positive) / 2) == pytest.approx(0.922220, abs=1e-6)


def test_unit_weights_are_the_paper_cut_loss():
    expected = (1.497866 + 1.039721) / 2  # negative row adds -log 0.25 / 2 of the unflagged token's MLE
    ours = cut_plus_loss(*inputs(), negative_mle_weight=1.0, gamma=0.5)
    theirs = cut_loss(*inputs(), gamma=0.5)
    assert float(ours.loss) == pytest.approx(float(theirs.loss))
    assert float(cut_plus_loss(*inputs(), negative_mle_weight=1.0).loss) == pytest.approx(expected, abs=1e-6)


def test_kl_term_skips_flagged_tokens_and_weighs_each_part():
    kl = torch.tensor(KL, dtype=torch.float64)
    out = cut_plus_loss(*inputs(), kl_per_token=kl, kl_weight=2.0)
    # + 2 * 0.1 / 2 on the negative (token 0 is in U: no KL there) and 2 * (0.2 + 0.4) / 2 on the positive
    assert float(out.loss) == pytest.approx(0.922220 + (0.1 + 0.6) / 2, abs=1e-6)
    weighted = cut_plus_loss(*inputs(), align_n_weight=0.0, align_p_weight=0.5)
    assert float(weighted.loss) == pytest.approx((math.log(2) / 2 + 0.5 * 1.039721) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="kl_per_token"):
        cut_plus_loss(*inputs(), kl_weight=1.0)


def test_distillation_term_weighs_every_token_of_a_negative_and_nothing_of_a_positive():
    distill = torch.tensor(DISTILL, dtype=torch.float64)
    out = cut_plus_loss(*inputs(), distill_per_token=distill, distill_weight=0.5)
    # + 0.5 * (0.2 + 0.6) / 2 tokens on the negative (U token included), 0 on the positive; / 2 examples
    assert float(out.loss) == pytest.approx(0.922220 + 0.2 / 2, abs=1e-6)
    with pytest.raises(ValueError, match="distill_per_token"):
        cut_plus_loss(*inputs(), distill_weight=1.0)


def test_a_judged_wrong_unflagged_token_gets_no_gradient():
    plain, *rest = inputs(requires_grad=True)
    cut_plus_loss(plain, *rest).loss.backward()
    # d/dlog p of -log(1 - p) is p / (1 - p) = 1 at p = 0.5, over 2 tokens and 2 examples: +0.25 (pushed down);
    # each positive token: -1 / 2 / 2 = -0.25; the negative's unflagged token: nothing (CUT gives it -0.25)
    torch.testing.assert_close(plain.grad, torch.tensor([[0.25, 0.0], [-0.25, -0.25]], dtype=torch.float64))


def make_config(tmp_path, **overrides) -> CUTPlusConfig:
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2,
                logging_steps=1, save_strategy="no", report_to=[], max_length=256, disable_tqdm=True,
                use_cpu=True, lr_scheduler_type="constant", positive_ratio=None, kl_weight=1.0)
    return CUTPlusConfig(**base | overrides)


def test_training_with_kl_moves_the_model_and_keeps_the_reference(tmp_path, tokenizer, online_examples):
    torch.manual_seed(0)
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    data = [e for e in online_examples if not e["label"]][:6] + [e for e in online_examples if e["label"]][:2]
    trainer = CUTPlusTrainer(model, make_config(tmp_path), train_dataset=data, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    with torch.no_grad():  # the full-vocabulary pass gives the same target log-probs as the chunked one
        full = _target_log_softmax(model, batch["grad"]).gather(1, batch["grad"]["target_ids"][:, None])[:, 0]
        torch.testing.assert_close(full, token_logprobs(model, batch["grad"]))
    result = trainer.train()
    assert math.isfinite(result.training_loss) and trainer.method_name == "cut_plus"
    assert any(not torch.equal(v.detach(), before[k]) for k, v in model.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in trainer.reference.named_parameters())
    assert any(entry.get("num_negative_tokens") for entry in trainer.state.log_history)


def test_distillation_reads_the_judged_row_of_the_same_token_and_trains(tmp_path, tokenizer, online_examples):
    torch.manual_seed(0)
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    data = [e for e in online_examples if not e["label"]][:6] + [e for e in online_examples if e["label"]][:2]
    config = make_config(tmp_path, kl_weight=0.0, distill_weight=1.0)
    trainer = CUTPlusTrainer(model, config, train_dataset=data, processing_class=tokenizer)
    items = list(trainer.train_dataset)
    chosen = [e for e in items if e["is_negative"]][:2] + [e for e in items if not e["is_negative"]][:1]
    batch = trainer.data_collator(chosen)
    block = batch["grad"]
    rows = context_rows(block, trainer.grad_contexts, 3)
    scattered = block_to_matrices(block["target_ids"].double(), block, trainer.grad_contexts, 3)
    for context, (targets, mask) in scattered.items():  # each row index points at that token's own target
        assert torch.equal(rows[context] >= 0, mask)
        torch.testing.assert_close(block["target_ids"][rows[context].clamp(min=0)].double() * mask, targets)
    with torch.no_grad():
        logps = trainer.context_logps(model, batch)
        distill = trainer._judged_distill(batch, logps)
    plain_mask = logps["plain"][1]
    assert distill.shape == plain_mask.shape and bool((distill[plain_mask] >= -1e-6).all())
    assert batch["is_negative"].tolist() == [True, True, False]
    assert float(distill[:2].sum()) > 0 and float(distill[2].abs().sum()) == 0  # a positive has no judged row
    result = trainer.train()
    assert math.isfinite(result.training_loss) and trainer.reference is None


@pytest.mark.parametrize(("override", "message"), [({"mode": "official"}, "paper"), ({"no_l1": True}, "switches"),
                                                   ({"kl_weight": -1.0}, "kl_weight"),
                                                   ({"distill_weight": -0.5}, "distill_weight")])
def test_config_rejects_what_cut_plus_does_not_do(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **override)
