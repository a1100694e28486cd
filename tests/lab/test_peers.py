"""The `peers` lab experiment on a tiny preset: TRL's SDFT really trains, its teacher (and only its teacher)
reads the judgment in the base's judged template, rows are in range, a rerun computes nothing."""

from __future__ import annotations

import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from cutalign.lab.align import TrainSettings, render_prompt
from cutalign.lab.experiments import offline, peers
from cutalign.lab.experiments.context import ExperimentContext, Preset
from cutalign.lab.experiments.presets import SMOKE_BASE


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("peers")
    preset = Preset(name="tiny", seeds=(0,), base=SMOKE_BASE, samples_per_fact=2, heldout_fraction=0.34,
                    eval_samples=1, train=TrainSettings(epochs=2.0, batch_size=8, max_length=64))
    ctx = ExperimentContext(preset=preset, run_dir=root / "run", name="peers", cache_dir=root / "bases")
    return ctx, peers.run(ctx)


def test_every_method_has_a_row_with_accuracies_in_range(tiny_run):
    _, result = tiny_run
    assert [row[0] for row in result.tables[0].rows] == ["base", *peers.METHODS]
    assert result.data["blocked"] is None
    for runs in result.data["runs"].values():
        for run in runs:
            assert all(0.0 <= run[c] <= 1.0 for c in peers.COLUMNS)
    assert result.figures == ["peers/peers_accuracy.png"]


def test_sdft_trained_with_cuts_budget_and_moved_the_weights(tiny_run):
    _, result = tiny_run
    sdft, cut = result.data["runs"]["sdft"][0], result.data["runs"]["cut"][0]
    assert sdft["steps"] == cut["steps"] > 1
    assert sdft["train_examples"] == sdft["steps"] * 8
    assert sdft["weight_change"] > 1e-4 and cut["weight_change"] > 1e-4
    assert (sdft["teacher"], sdft["distillation"]) == ("base", "topk_logits")  # TRL's defaults, not ours


def test_the_teacher_saw_the_judgment_and_the_student_did_not(tiny_run):
    _, result = tiny_run
    probe = result.data["runs"]["sdft"][0]["probe"]
    assert probe["batches"] == result.data["runs"]["sdft"][0]["steps"]
    assert probe["rows"] == probe["student_plain"] == probe["teacher_judged"] == probe["batches"] * 8
    assert probe["student_judged"] == 0
    assert "### Judgment:" in probe["example"]["teacher"] and "### Judgment:" not in probe["example"]["student"]


def test_the_adapter_renders_the_lab_templates_through_trls_own_prompt_builder(tiny_run):
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

    from cutalign.data.templates import ALPACA_JUDGED
    from cutalign.lab.base import load_base

    ctx, _ = tiny_run
    prepared = offline.judged_samples(ctx, peers.condition(ctx).with_seed(0), 0)()
    _, tokenizer = load_base(prepared.base_dir)
    tokenizer = peers.lab_chat_tokenizer(tokenizer)
    builder = DemonstrationTeacherContextBuilder(SimpleNamespace(args=SimpleNamespace(
        teacher_prompt_template=peers.TEACHER_TEMPLATE)))
    # The tiny base answers nothing right: add a satisfactory sample, which TRL must get a judgment for too.
    records = [*prepared.records, {**prepared.records[0], "label": True, "judgment": None}]
    assert not records[0]["label"] and records[0]["judgment"]
    for record, row in zip(records, peers.sdft_rows(records), strict=True):
        render = tokenizer.apply_chat_template
        student = render(row["prompt"], add_generation_prompt=True, tokenize=False, judgment_marker=peers.MARKER)
        teacher = render(builder._compose_teacher_prompt(row["prompt"], row["privileged_context"]),
                         add_generation_prompt=True, tokenize=False, judgment_marker=peers.MARKER)
        judgment = record["judgment"] or "Your response to the instruction is satisfactory."
        assert student == "<s>" + render_prompt(record["prompt"])
        assert teacher == "<s>" + ALPACA_JUDGED.format(instruction=record["prompt"], judgment=judgment)


def test_a_second_run_computes_no_unit(tiny_run, monkeypatch):
    ctx, result = tiny_run

    def fail(*args, **kwargs):
        raise AssertionError("a unit was recomputed")

    for module, name in ((peers, "train_method"), (peers, "train_sdft"), (offline, "prepare"), (offline, "base_run")):
        monkeypatch.setattr(module, name, fail)
    assert peers.run(replace(ctx)).to_dict() == result.to_dict()


def test_a_missing_sdft_is_reported_as_blocked_not_faked(tiny_run, monkeypatch):
    ctx, _ = tiny_run
    monkeypatch.setitem(sys.modules, "trl.experimental.sdft", None)
    reason = peers.sdft_blocked()
    assert reason is not None and reason.startswith("trl.experimental.sdft does not import")
    result = peers.run(replace(ctx))  # CUT and SFT come from the saved units
    assert "sdft" not in result.data["runs"] and result.data["blocked"] == reason
    assert result.tables[0].rows[-1][:4] == ["sdft", "-", "-", f"blocked: {reason}"]
    assert result.findings[0] == f"SDFT blocked: {reason}."
