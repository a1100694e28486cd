"""`cutalign demo`: CUT beside SFT-on-positives from a pretrained base holding misconceptions."""

from __future__ import annotations

import json

import pytest
import torch

from cutalign.demo.run import DemoSettings, run_demo, small_settings
from cutalign.lab.judge import judge_response
from cutalign.lab.world import make_world


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch threads spin while waiting: on the shared 2-core test machine one thread is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("demo")
    settings = small_settings(root / "out", cache_dir=root / "cache")
    return settings, run_demo(settings)


def test_small_demo_writes_both_models_the_judged_samples_and_its_figures(small_run):
    settings, figures = small_run
    out = settings.output_dir
    trained = ["cut"] + (["sft"] if figures["sft"]["examples"] else [])  # rejection sampling may accept none
    for method in trained:
        for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "train_results.json"):
            assert (out / method / name).is_file(), (method, name)
    assert json.loads((out / "demo_results.json").read_text()) == json.loads(json.dumps(figures))
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    world = make_world(settings.base.n_entities, settings.base.world_seed)
    assert len(records) == figures["samples"] == len(world.facts) * settings.samples_per_fact
    assert sum(not r["label"] for r in records) == figures["negatives"]
    for record in records:  # every label is the judge's verdict on what the base really said
        assert judge_response(record["prompt"], record["completion"], world=world).satisfactory is record["label"]
    # CUT trains on every sample, SFT on the positives only; anything else is a counted drop
    cut, sft = figures["cut"], figures["sft"]
    assert cut["examples"] + sum(cut["drops"].values()) == figures["samples"]
    if sft["examples"]:
        empty = cut["drops"].get("empty_response", 0)  # an empty answer is wrong, and dropped before the label
        assert sft["drops"].get("empty_response", 0) == empty
        assert sft["drops"]["negative_excluded"] == figures["negatives"] - empty
        assert sft["examples"] + sum(sft["drops"].values()) == figures["samples"]
    n, k = figures["facts"], figures["targeted_facts"]
    assert 0 < k < n
    for model in ("before", "cut", "sft"):  # the accuracies are of the stated fact sets
        acc = figures[model]
        assert acc["all"] * n == pytest.approx(acc["targeted"] * k + acc["other"] * (n - k))
    assert set(figures["seconds"]) >= {"base model (pretraining, cached)", "training CUT", "training SFT"}


def test_second_run_reuses_the_cached_base(small_run, tmp_path):
    settings, first = small_run
    assert first["base"]["built_now"]
    again = run_demo(DemoSettings(**{**settings.__dict__, "output_dir": tmp_path, "epochs": 0.1}))
    assert not again["base"]["built_now"] and again["base"]["dir"] == first["base"]["dir"]
    assert again["before"] == first["before"]  # same base, same greedy answers
    assert not [p for p in settings.cache_dir.iterdir() if p.name.startswith(".")]  # no half-built folder


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_demo(DemoSettings(output_dir=tmp_path_factory.mktemp("demo-default")))  # the user's cache


@pytest.mark.slow
def test_default_demo_flags_the_judged_wrong_value_and_fixes_targeted_facts(default_run):
    detection = default_run["detection"]
    assert detection["gold"] and all(any(g in f for f in detection["flagged"]) for g in detection["gold"])
    assert default_run["cut"]["targeted"] > default_run["before"]["targeted"]


@pytest.mark.slow
@pytest.mark.xfail(reason="observed 2026-12-02: the subject name is flagged beside the wrong value", strict=False)
def test_default_demo_flags_exactly_the_judged_wrong_value(default_run):
    detection = default_run["detection"]
    assert "".join(detection["flagged"]).strip() == " ".join(detection["gold"]).strip()
