"""The lab base: regimes shape the corpus as stated; builds are seeded, cached by hash, atomic."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from cutalign.lab.base import BaseSpec, Regime, beliefs, build_base, load_base, pretraining_corpus


def test_regimes_state_the_values_they_promise():
    spec = BaseSpec(regime=Regime("misconception", misconception_fraction=0.25, misconception_strength=0.8))
    belief = beliefs(spec)
    world = belief.world
    assert len(belief.misconceptions) == round(0.25 * len(world.values))
    rng = random.Random(0)
    (subject, attribute), wrong = next(iter(belief.misconceptions.items()))
    said = Counter(belief.draw(subject, attribute, rng) for _ in range(2000))
    assert said[wrong] / 2000 == pytest.approx(0.8, abs=0.04)
    assert said[world.values[subject, attribute]] / 2000 == pytest.approx(0.2, abs=0.04)  # no noise
    other = next(f for f in world.values if f not in belief.misconceptions)
    assert {belief.draw(*other, rng) for _ in range(200)} == {world.values[other]}
    noisy = beliefs(replace(spec, regime=Regime("noise", noise=0.3)))
    assert not noisy.misconceptions
    right = sum(noisy.draw(*other, rng) == world.values[other] for _ in range(2000)) / 2000
    assert right == pytest.approx(0.7, abs=0.04)
    with pytest.raises(ValueError, match="unknown regime"):
        Regime("sometimes")


def test_corpus_is_seeded_and_holds_judged_demonstrations():
    spec = BaseSpec(n_entities=4, n_chains=5)
    docs = pretraining_corpus(spec)
    assert docs == pretraining_corpus(spec) and docs != pretraining_corpus(replace(spec, seed=1))
    assert any("### Judgment:\n" in d for d in docs) and any("Start with" in d for d in docs)
    assert spec.key() == BaseSpec(n_entities=4, n_chains=5).key() != replace(spec, epochs=2.0).key()


def test_build_is_cached_by_hash_and_leaves_no_partial_folder(tmp_path):
    spec = BaseSpec(n_entities=2, demos_per_fact=1, judged_per_fact=1, hidden_size=16, num_layers=1, num_heads=2,
                    vocab_size=300, epochs=1.0)
    path, built = build_base(spec, tmp_path)
    assert built and path.name == spec.key() and (path / "model.safetensors").is_file()
    assert build_base(spec, tmp_path) == (path, False)
    assert [p.name for p in tmp_path.iterdir()] == [spec.key()]
    model, tokenizer = load_base(path)
    assert model.config.model_type == "llama" and tokenizer.bos_token == "<s>"
