"""The `online` lab experiment on a tiny preset: both arms run the library loop, counts match its manifests,
the AI arm is judged by the trained judge, and a rerun (or a lost unit) redoes no loop work."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from cutalign.demo.run import small_settings
from cutalign.lab.align import TrainSettings, heldout_subjects
from cutalign.lab.base import beliefs
from cutalign.lab.experiments import online
from cutalign.lab.experiments.context import ExperimentContext, Preset
from cutalign.lab.world import evaluation_set, make_world

ITERATIONS = 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("online")
    base = small_settings(root / "demo").base
    preset = Preset(name="tiny", seeds=(0,), base=base, samples_per_fact=2, heldout_fraction=0.34, eval_samples=1,
                    train=TrainSettings(epochs=1.0, batch_size=8, max_length=128),
                    online_iterations=ITERATIONS, online_prompts=8)
    ctx = ExperimentContext(preset=preset, run_dir=root / "run", name="online", cache_dir=root / "bases")
    return ctx, online.run(ctx)


def _manifest(ctx, arm, k=None):
    run_dir = ctx.dir / "seed0" / f"{arm}-run"
    return json.loads((run_dir / ("manifest.json" if k is None else f"iter_{k}/manifest.json")).read_text())


def test_every_arm_has_every_iteration_with_counts_of_the_loops_manifests(tiny_run):
    ctx, result = tiny_run
    assert [t.rows[-1][0] for t in result.tables[:2]] == [ITERATIONS, ITERATIONS]
    for arm in online.ARMS:
        rows = result.data["runs"][arm][0]
        assert [r["iteration"] for r in rows] == list(range(ITERATIONS + 1))
        summary = _manifest(ctx, arm)["summary"]
        assert len(summary) == ITERATIONS + 1
        for row, loop_row in zip(rows[1:], summary[1:], strict=True):
            assert row["prompts"] == loop_row["prompts"] == row["generated"] == 8
            assert row["trained_on"] == loop_row["trained_on"]
            assert row["judged_satisfactory"] == loop_row["satisfactory_rate"]
            assert all(0.0 <= row[k] <= 1.0 for k in ("satisfactory", "agreement", "all", "sampled_all"))


def test_the_arms_differ_only_in_the_judge(tiny_run):
    ctx, result = tiny_run
    first = [(ctx.dir / "seed0" / f"{arm}-run" / "iter_1" / "generations.jsonl").read_text() for arm in online.ARMS]
    assert first[0] == first[1]  # same base, seed and prompts: the same samples reach both judges
    python, ai = (result.data["runs"][arm][0][1] for arm in online.ARMS)
    assert python["satisfactory"] == ai["satisfactory"]
    assert result.data["runs"]["python"][0][0] == result.data["runs"]["ai"][0][0]


def test_the_python_arm_is_its_own_ground_truth(tiny_run):
    _, result = tiny_run
    for row in result.data["runs"]["python"][0][1:]:
        assert row["agreement"] == 1.0 and row["judged_satisfactory"] == row["satisfactory"]
        assert row["judge"].startswith("python:") and row["judge"].endswith("python_judge.py:judge")


def test_the_ai_arm_is_judged_by_the_trained_judge(tiny_run):
    ctx, result = tiny_run
    judge = result.data["ai_judges"][0]
    assert (ctx.dir / "work" / "seed0-ai-judge" / "judge" / "judge_eval.json").is_file()
    assert _manifest(ctx, "ai")["config"]["judge"] == "hf"
    for k in range(1, ITERATIONS + 1):
        assert _manifest(ctx, "ai", k)["stages"]["judge"]["judge"] == judge["model"]
        judged = [json.loads(line) for line in
                  (ctx.dir / "seed0" / "ai-run" / f"iter_{k}" / "judgments.jsonl").read_text().splitlines()]
        assert {r["judge"]["kind"] for r in judged} == {"hf"}
        assert {r["judge"]["model"] for r in judged} == {judge["model"]}


def test_pool_holds_no_heldout_subject_and_prompts_are_fresh(tiny_run):
    ctx, _ = tiny_run
    pool = [json.loads(line) for line in (ctx.dir / "seed0" / "pool.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in pool}) == len(pool)
    belief = beliefs(ctx.preset.base)
    heldout = heldout_subjects(belief, ctx.preset.heldout_fraction, 0)
    assert heldout and not any(r["id"].split("/")[-1] in heldout for r in pool)
    assert {r["id"].split("/")[-1] for r in pool} == set(belief.world.subjects) - heldout
    config = _manifest(ctx, "python")["config"]
    assert config["reuse_prompts"] == (len(pool) < ITERATIONS * 8)
    if not config["reuse_prompts"]:
        used = [json.loads(line)["id"] for k in range(1, ITERATIONS + 1) for line in
                (ctx.dir / "seed0" / "python-run" / f"iter_{k}" / "prompts.jsonl").read_text().splitlines()]
        assert len(set(used)) == len(used)


def test_a_second_run_computes_no_unit_and_a_lost_unit_redoes_no_loop_work(tiny_run, monkeypatch):
    ctx, result = tiny_run
    monkeypatch.setattr(online, "train_ai_judge", lambda *a: pytest.fail("the judge was trained again"))
    monkeypatch.setattr("cutalign.online.stages.train_policy", lambda *a, **k: pytest.fail("the loop trained again"))
    monkeypatch.setattr("cutalign.online.stages.make_policy_generator",
                        lambda *a, **k: pytest.fail("the loop generated again"))
    assert online.run(replace(ctx)).to_dict() == result.to_dict()
    (ctx.dir / "units" / f"seed0-python-iter{ITERATIONS}.json").unlink()  # killed after the loop, before the save
    assert online.run(replace(ctx)).to_dict() == result.to_dict()


def test_ground_truth_counts_satisfactory_samples_and_agreement(tmp_path):
    world = make_world(12, 0)
    right, wrong = evaluation_set(world)[:2]
    bad_value = right.wrong_values[0] if right.wrong_values else next(
        v for pool in world.pools.values() for v in pool if v != right.gold)
    gens = [{"id": "a", "prompt": right.question, "completion": f"It is {right.gold}."},
            {"id": "b", "prompt": right.question, "completion": f"It is {bad_value}."},
            {"id": "c", "prompt": wrong.question, "completion": f"It is {wrong.gold}."}]
    judged = [{**gens[0], "label": True}, {**gens[1], "label": True},  # a false accept
              {**gens[2], "label": None, "judge": {"error": "unparseable"}}]  # a failed verdict
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gens))
    (tmp_path / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in judged))
    truth = online.ground_truth(SimpleNamespace(belief=SimpleNamespace(world=world)), tmp_path)
    assert truth == {"generated": 3, "satisfactory": pytest.approx(2 / 3), "agreement": pytest.approx(1 / 3)}
