"""Unlikelihood training (CUT without detection and Align-N) on a tiny Llama with the online data."""

from __future__ import annotations

import pytest
import torch

from cutalign.demo.assets import tiny_causal_lm
from cutalign.trainer.unlikelihood import UnlikelihoodConfig, UnlikelihoodTrainer


def make_config(tmp_path, **overrides) -> UnlikelihoodConfig:
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=1, learning_rate=1e-2,
                logging_steps=1, save_strategy="no", report_to=[], max_length=256, disable_tqdm=True,
                use_cpu=True, lr_scheduler_type="constant", positive_ratio=None)
    base.update(overrides)
    return UnlikelihoodConfig(**base)


def test_a_step_changes_parameters_with_unlikelihood_on_every_negative_token(tmp_path, tokenizer, online_examples):
    model = tiny_causal_lm(tokenizer, hidden_size=32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = UnlikelihoodTrainer(model, make_config(tmp_path), train_dataset=online_examples[:16],
                                  processing_class=tokenizer)
    assert (trainer.grad_contexts, trainer.nograd_contexts) == (("plain",), ())  # one pass, no judged context
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss)) and trainer.method_name == "unlikelihood"
    assert any(not torch.equal(v.detach(), before[k]) for k, v in model.named_parameters())
    logged = [entry for entry in trainer.state.log_history if "unlikely_fraction" in entry]
    assert logged and all(entry["unlikely_fraction"] == 1.0 for entry in logged if entry["num_negative_tokens"])


def test_loss_is_unlikelihood_on_negatives_plus_mle_on_positives(tmp_path, tokenizer, online_examples):
    negative = next(e for e in online_examples if not e["label"])
    positive = next(e for e in online_examples if e["label"])
    trainer = UnlikelihoodTrainer(tiny_causal_lm(tokenizer, hidden_size=32), make_config(tmp_path, alpha=0.5,
                                  max_length=4096), train_dataset=[negative, positive], processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    with torch.no_grad():
        loss, _ = trainer.compute_method_loss(trainer.model, batch)
        logp, mask = trainer.context_logps(trainer.model, batch)["plain"]
    p = logp.exp()
    negative_term = (-0.5 * torch.log1p(-p[0]))[mask[0]].mean()
    positive_term = (-logp[1])[mask[1]].mean()
    torch.testing.assert_close(loss, (negative_term + positive_term) / 2)


@pytest.mark.parametrize(("override", "message"), [({"no_detection": False}, "no_detection"),
                                                   ({"no_align_n": False}, "no_align_n"),
                                                   ({"no_l1": True}, "no_l1"), ({"gamma": 1.0}, "gamma")])
def test_config_rejects_what_would_not_be_unlikelihood_training(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **override)
