"""The `recipe` lab experiment on a tiny preset: a row per regime and method, honest verdicts, resumable units."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cutalign.demo.run import small_settings
from cutalign.lab.align import TrainSettings
from cutalign.lab.experiments import recipe
from cutalign.lab.experiments.context import ExperimentContext, Preset


def runs(**means: float) -> dict[str, list[dict[str, float]]]:
    return {method: [{"all": value}] for method, value in means.items()}


def test_verdict_misconception_needs_to_beat_both_baselines_strictly():
    won = recipe.verdict("misconception", runs(cut_plus=0.60, cut=0.70, sft=0.55, dpo=0.58))
    assert won["met"] and won["rival"] == "dpo" and won["difference"] == pytest.approx(0.02)
    tie = recipe.verdict("misconception", runs(cut_plus=0.58, cut=0.1, sft=0.55, dpo=0.58))
    assert not tie["met"] and "missed" in tie["sentence"]


def test_verdict_elsewhere_allows_two_points_below_the_best_method_cut_included():
    close = recipe.verdict("noise", runs(cut_plus=0.69, cut=0.705, sft=0.60, dpo=0.60))
    assert close["met"] and close["rival"] == "cut"
    far = recipe.verdict("mixed", runs(cut_plus=0.60, cut=0.50, sft=0.63, dpo=0.50))
    assert not far["met"] and far["difference"] == pytest.approx(-0.03) and "-3.0 points" in far["sentence"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("recipe")
    base = small_settings(root / "demo").base
    preset = Preset(name="tiny", seeds=(0,), base=base, samples_per_fact=2, heldout_fraction=0.34, eval_samples=1,
                    train=TrainSettings(epochs=1.0, batch_size=8, max_length=64))
    ctx = ExperimentContext(preset=preset, run_dir=root / "run", name="recipe", cache_dir=root / "bases")
    return ctx, recipe.run(ctx)


@pytest.mark.slow
def test_every_regime_and_method_has_a_row_with_accuracies_in_range(tiny_run):
    _, result = tiny_run
    table = result.tables[0]
    assert {(row[0], row[1]) for row in table.rows} == {
        (regime, method) for regime in recipe.REGIMES for method in ("base", *recipe.METHODS)}
    for regime, by_method in result.data["results"].items():
        for runs in by_method.values():
            for run in runs:
                assert all(0.0 <= run[k] <= 1.0 for k in ("other", "all", "sampled_all"))
                assert ("targeted" in run) == (regime != "noise")  # the noise regime has no misconceptions
                assert 0 <= run["copies_of_rejected"] <= run["wrong"] and 0 <= run["subject_swaps"] <= run["wrong"]


@pytest.mark.slow
def test_verdicts_follow_from_the_numbers(tiny_run):
    _, result = tiny_run
    for regime, verdict in result.data["verdicts"].items():
        runs = result.data["results"][regime]
        recipe_all = sum(r["all"] for r in runs[recipe.RECIPE]) / len(runs[recipe.RECIPE])
        if regime == "misconception":
            best = max(sum(r["all"] for r in runs[m]) / len(runs[m]) for m in recipe.BASELINES)
            assert verdict["met"] == (recipe_all > best)
        else:
            best = max(sum(r["all"] for r in runs[m]) / len(runs[m]) for m in recipe.METHODS)
            assert verdict["met"] == (recipe_all >= best - recipe.MARGIN)
        assert verdict["sentence"] in result.findings and ("met" in verdict["sentence"]) == verdict["met"]


@pytest.mark.slow
def test_a_second_run_computes_no_unit(tiny_run, monkeypatch):
    ctx, result = tiny_run

    def fail(*args, **kwargs):
        raise AssertionError("a unit was recomputed")

    monkeypatch.setattr(recipe, "train_method", fail)
    monkeypatch.setattr(recipe, "prepare", fail)
    assert recipe.run(replace(ctx)).to_dict() == result.to_dict()
