"""Experiment 6 (regimes) on the smoke preset: a winner per cell, the axes' data as described, resumable."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_rewards_experiment import assert_rerun_computes_nothing, run_recording

from cutalign.lab.experiments import regimes
from cutalign.lab.experiments.presets import PRESETS


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    return run_recording(regimes, "regimes", tmp_path_factory)


def test_the_design_covers_every_axis_value_and_full_is_the_product():
    smoke = regimes.cells(PRESETS["smoke"])
    for axis, values in enumerate((regimes.REGIMES, regimes.SCARCITY, regimes.STYLES)):
        assert {cell[axis] for cell in smoke} == set(values)
    full = regimes.cells(PRESETS["full"])
    assert len(full) == len(set(full)) == len(regimes.REGIMES) * len(regimes.SCARCITY) * len(regimes.STYLES)
    assert set(smoke) <= set(full) and set(regimes.cells(PRESETS["quick"])) <= set(full)


def test_a_row_per_cell_with_an_honest_winner(ran):
    _, result, _ = ran
    cells = regimes.cells(PRESETS["smoke"])
    table = result.tables[0]
    assert [tuple(row[:3]) for row in table.rows] == cells
    for cell in result.data["cells"]:
        assert ("targeted_means" in cell) == (cell["regime"] != "noise")  # noise has no misconceptions
        for prefix in ("", "targeted_")[:1 + ("targeted_means" in cell)]:
            means, winner, margin = cell[f"{prefix}means"], cell[f"{prefix}winner"], cell[f"{prefix}margin"]
            assert set(means) == set(regimes.METHODS) and all(0.0 <= v <= 1.0 for v in means.values())
            best = max(means.values())
            assert winner.split("=") == [m for m in regimes.METHODS if means[m] == best]
            assert margin >= 0.0 and (margin == 0.0) == ("=" in winner or len(set(means.values())) == 1)
    assert regimes.rank({"cut": 0.5, "sft": 0.4, "dpo": 0.1}) == ("cut", pytest.approx(0.1))
    assert regimes.rank({"cut": 0.5, "sft": 0.5, "dpo": 0.1}) == ("cut=sft", 0.0)
    assert result.findings[0].startswith("Cells won:")
    assert result.figures == ["regimes/regime_map.png"]


def test_sft_and_dpo_train_once_per_data_and_scarcity_keeps_every_negative(ran):
    _, result, calls = ran
    cells = regimes.cells(PRESETS["smoke"])
    data_conditions = {(r, s) for r, s, _ in cells}
    assert sorted(m for m, _, _ in calls if m != "cut") == sorted(["dpo", "sft"] * len(data_conditions))
    assert sum(m == "cut" for m, _, _ in calls) == len(cells)
    epochs = PRESETS["smoke"].train.epochs * regimes.EPOCH_FRACTION
    assert {settings.epochs for _, _, settings in calls} == {epochs}
    vague = [records for m, records, _ in calls if m == "cut" and any(r["judgment"] == "The response is wrong."
                                                                        for r in records)]
    assert len(vague) == sum(style == "vague" for _, _, style in cells)
    for name, runs in result.data["results"].items():
        assert len(runs) == len(PRESETS["smoke"].seeds), name


def test_keep_positives_drops_only_positives():
    records = [{"id": f"r{i}", "label": i % 2 == 0} for i in range(400)]
    prepared = replace(_stub(), records=records, gold_spans=[[] for _ in records])
    kept = regimes.keep_positives(prepared, 0.25, seed=0)
    assert [r for r in kept.records if not r["label"]] == [r for r in records if not r["label"]]
    assert 25 <= sum(r["label"] for r in kept.records) <= 75  # about a quarter of 200
    assert regimes.keep_positives(prepared, 1.0, seed=0) is prepared
    again = regimes.keep_positives(prepared, 0.25, seed=0)
    assert again.records == kept.records and len(kept.gold_spans) == len(kept.records)


def test_a_rerun_computes_no_unit(ran):
    ctx, result, _ = ran
    assert_rerun_computes_nothing(regimes, ctx, result)
    units = {path.name.split("-")[0] for path in (ctx.dir / "units").iterdir()}
    assert units == {regime for regime, _, _ in regimes.cells(PRESETS["smoke"])}  # every unit keyed by its regime


def _stub():
    from cutalign.lab.align import Condition, Prepared

    return Prepared(Condition(), None, None, [], [], [], {})
