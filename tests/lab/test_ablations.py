"""Experiment 5 (ablations) on the smoke preset: one row per switch, deltas to full CUT, resumable."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cutalign.lab.experiments import ablations
from cutalign.lab.experiments.context import ExperimentContext
from cutalign.lab.experiments.presets import PRESETS

FEW = {name: ablations.VARIANTS[name] for name in ("cut", "-L1")}  # the default test trains two variants


def _run(root, variants, cache):
    torch.set_num_threads(1)
    ctx = ExperimentContext(preset=PRESETS["smoke"], run_dir=root / "run", name="ablations", cache_dir=cache)
    calls = []
    train = ablations.train_method

    def recording(*args, **kwargs):
        calls.append(kwargs["overrides"])
        return train(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ablations, "VARIANTS", variants)
        patch.setattr(ablations, "train_method", recording)
        result = ablations.run(ctx)
    return ctx, result, calls


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    # the same base cache as the detection tests: the tiny base is built once per session
    return _run(tmp_path_factory.mktemp("ablations"), FEW, tmp_path_factory.getbasetemp() / "lab-base-cache")


def _check(result, variants):
    table = result.tables[0]
    assert [row[0] for row in table.rows] == ["base", *variants]
    assert len(table.rows[0]) == len(table.columns)
    by_name = dict(zip([r[0] for r in table.rows], table.rows, strict=True))
    assert by_name["cut"][table.columns.index("Δ all")] == "+0.0"
    for name, runs in result.data["results"].items():
        for run in runs:
            assert all(0.0 <= run[c] <= 1.0 for c in ablations.COLUMNS)
            if name != "base":
                assert math.isfinite(run["train_loss"]) or run["diverged"]
    assert result.findings[0].startswith("The switch that matters most here is")


def test_one_row_per_variant_and_the_switches_reach_the_trainer(ran):
    _, result, calls = ran
    _check(result, FEW)
    assert calls == [{"gamma": ablations.GAMMA}, {"gamma": ablations.GAMMA, "no_l1": True}]
    cut, no_l1 = (result.data["results"][n][0] for n in ("cut", "-L1"))
    assert ablations.delta(result.data["results"], "-L1", "all") == pytest.approx(no_l1["all"] - cut["all"])


def test_a_rerun_computes_no_unit(ran):
    ctx, result, _ = ran

    def fail(*args, **kwargs):
        raise AssertionError("a finished unit was recomputed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ablations, "VARIANTS", FEW)
        patch.setattr(ablations, "prepare", fail)
        patch.setattr(ablations, "train_method", fail)
        again = ablations.run(ctx)
    assert json.dumps(again.data, sort_keys=True) == json.dumps(result.data, sort_keys=True)


@pytest.mark.slow
def test_all_five_switches(tmp_path, tmp_path_factory):
    _, result, calls = _run(tmp_path, ablations.VARIANTS, tmp_path_factory.getbasetemp() / "lab-base-cache")
    _check(result, ablations.VARIANTS)
    assert len(calls) == len(ablations.VARIANTS)
    assert len(result.findings) >= len(ablations.VARIANTS)
