"""Experiment 3 (rewards) on the smoke preset: CUT (judgments, vague judgments) vs DPO (scores), resumable."""

from __future__ import annotations

import json

import pytest
import torch

from cutalign.lab.experiments import offline, rewards
from cutalign.lab.experiments.context import ExperimentContext
from cutalign.lab.experiments.presets import PRESETS


def run_recording(module, name, tmp_path_factory):
    """Run experiment ``module`` on the smoke preset, recording (method, records, settings) per training
    (experiments 3 and 6 train through experiment 1's helpers, so through ``offline.train_method``)."""
    torch.set_num_threads(1)
    ctx = ExperimentContext(preset=PRESETS["smoke"], run_dir=tmp_path_factory.mktemp(name) / "run", name=name,
                            cache_dir=tmp_path_factory.getbasetemp() / "lab-base-cache")
    calls = []
    train = offline.train_method

    def recording(method, base_dir, records, output_dir, settings, *args, **kwargs):
        calls.append((method, records, settings))
        return train(method, base_dir, records, output_dir, settings, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offline, "train_method", recording)
        result = module.run(ctx)
    return ctx, result, calls


def assert_rerun_computes_nothing(module, ctx, result):
    """A second run of a finished experiment samples and trains nothing and returns the same result."""

    def fail(*args, **kwargs):
        raise AssertionError("a finished unit was recomputed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offline, "prepare", fail)
        patch.setattr(offline, "train_method", fail)
        again = module.run(ctx)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(result.to_dict(), sort_keys=True)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    return run_recording(rewards, "rewards", tmp_path_factory)


def test_a_row_per_method_with_accuracies_in_range(ran):
    _, result, _ = ran
    table = result.tables[0]
    assert [row[0] for row in table.rows] == ["base", *rewards.ROWS]
    assert all(len(row) == len(table.columns) for row in table.rows)
    for runs in result.data["runs"].values():
        assert len(runs) == len(PRESETS["smoke"].seeds)
        for run in runs:
            assert all(0.0 <= run[c] <= 1.0 for c in ("targeted", "other", "heldout", "all", "sampled_all"))
    assert result.findings[0].startswith("On all facts (greedy)")
    assert (result.tables[1].rows[0][0], len(result.data["data"])) == (0, 1)


def test_every_method_trains_on_the_same_samples(ran):
    _, result, calls = ran
    assert [method for method, _, _ in calls] == ["cut", "cut", "dpo"]  # one learning rate on smoke
    full, vague, dpo = (records for _, records, _ in calls)
    same = [(r["prompt"], r["completion"], r["label"], r["score"]) for r in full]
    assert same == [(r["prompt"], r["completion"], r["label"], r["score"]) for r in vague]
    assert same == [(r["prompt"], r["completion"], r["label"], r["score"]) for r in dpo]
    assert {r["judgment"] for r in vague if not r["label"]} == {"The response is wrong."}
    stats = result.data["data"][0]
    assert stats["samples"] == len(full) and stats["negatives"] == sum(not r["label"] for r in full)
    assert stats["facts_with_pair"] + stats["facts_no_pair"] == len(
        {(r["prompt"]) for r in full})  # one wording per fact: one prompt per alignment fact


def test_a_rerun_computes_no_unit(ran):
    ctx, result, _ = ran
    assert_rerun_computes_nothing(rewards, ctx, result)
