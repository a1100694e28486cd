"""Experiment 4 (detection) on the smoke preset: P/R/F1 tables per style x mode x lambda, resumable."""

from __future__ import annotations

import json

import pytest
import torch

from cutalign.inspection.core import MISALIGN_MODES
from cutalign.lab.experiments import detection
from cutalign.lab.experiments.context import ExperimentContext
from cutalign.lab.experiments.presets import PRESETS

STYLES = ("vague", "full")  # two of the five styles keep the default test short; the code is the same


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("detection")
    ctx = ExperimentContext(preset=PRESETS["smoke"], run_dir=root / "run", name="detection",
                            cache_dir=tmp_path_factory.getbasetemp() / "lab-base-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(detection, "STYLES", STYLES)
        result = detection.run(ctx)
    return ctx, result


def test_tables_have_a_row_per_style_mode_and_threshold(ran):
    ctx, result = ran
    base, after, best = result.tables
    thresholds = ctx.preset.thresholds
    assert len(base.rows) == len(STYLES) * len(MISALIGN_MODES) * len(thresholds)
    assert [(r[0], r[1], r[2]) for r in base.rows] == [
        (s, m, t) for s in STYLES for m in MISALIGN_MODES for t in thresholds]
    assert {r[0] for r in after.rows} == {detection.AFTER_STYLE}
    assert len(best.rows) == len(STYLES) * len(MISALIGN_MODES)
    assert (ctx.run_dir / result.figures[0]).stat().st_size > 0
    assert any(f.startswith("Vague judgments") for f in result.findings)


def test_precision_recall_f1_are_consistent(ran):
    _, result = ran
    runs = [run for stage in ("base", "after_cut") for style_runs in result.data[stage].values() for run in style_runs]
    assert runs
    for run in runs:
        for mode in MISALIGN_MODES:
            previous = None
            for row in run["modes"][mode]:
                p, r, f1 = row["precision"], row["recall"], row["f1"]
                assert all(0.0 <= v <= 1.0 for v in (p, r, f1))
                assert f1 == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
                assert 0 <= row["unlikely_tokens"] <= row["negative_tokens"]
                assert row["true_positives"] <= min(row["unlikely_tokens"], row["gold_tokens"])
                assert 0 < row["gold_examples"] <= run["negatives"]  # the inspected negatives, with gold spans
                if previous is not None:  # a higher lambda can only shrink U
                    assert row["unlikely_tokens"] <= previous
                previous = row["unlikely_tokens"]


def test_gold_spans_reach_inspection_not_the_training_records():
    from cutalign.lab.align import Prepared

    record = {"id": "a", "prompt": "q", "completion": "Velmar is it.", "judgment": "wrong", "label": False}
    prepared = Prepared(condition=None, base_dir=None, belief=None, records=[record], gold_spans=[[(0, 6)]],
                        questions=[], groups={})
    assert detection.inspectable(prepared) == [{**record, "error_spans": [[0, 6]]}]
    assert "error_spans" not in record


def test_chance_f1():
    assert detection.chance_f1(0.1, 0.1) == pytest.approx(0.1)
    assert detection.chance_f1(0.0, 0.0) == 0.0


def test_a_rerun_computes_no_unit(ran, monkeypatch):
    ctx, result = ran

    def fail(*args, **kwargs):
        raise AssertionError("a finished unit was recomputed")

    monkeypatch.setattr(detection, "STYLES", STYLES)
    monkeypatch.setattr(detection, "prepare", fail)
    monkeypatch.setattr(detection, "train_method", fail)
    again = detection.run(ctx)
    assert json.dumps(again.data, sort_keys=True) == json.dumps(result.data, sort_keys=True)
