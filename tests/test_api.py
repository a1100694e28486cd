"""`cutalign.train` as a library call: outputs, refusals, no secrets on disk, resume accounting."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

import cutalign
from cutalign.api import NoUsableExamplesError, TrainResult, resolve_checkpoint, train
from cutalign.trainer.config import CUTConfig, SFTConfig


@pytest.fixture()
def few(online_examples):
    """Eight real examples: enough for a few optimizer steps, small enough for a fast test."""
    return online_examples[:8]


HUB_SECRET = "hf_SECRETHUBTOKEN123456"
INIT_SECRET = "hf_SECRETINITTOKEN654321"


def config(out: Path, method: str = "cut", **overrides) -> CUTConfig | SFTConfig:
    fields = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, max_length=256, report_to=[],
                  save_strategy="no", logging_steps=1)
    return (CUTConfig if method == "cut" else SFTConfig)(**{**fields, **overrides})


def test_the_public_api_is_at_the_package_root():
    import inspect

    for name in ("train", "load_model", "merge_adapter", "CUTConfig", "CUTTrainer", "load_judged", "cut_loss",
                 "token_logprobs", "JudgedData", "DataError", "Generator", "Judge"):
        assert getattr(cutalign, name) is not None, name
    assert set(inspect.signature(cutalign.CUTTrainer.__init__).parameters) >= {
        "model", "args", "train_dataset", "eval_dataset", "processing_class", "peft_config", "callbacks"}
    with pytest.raises(AttributeError):
        cutalign.no_such_thing  # noqa: B018


def test_train_writes_a_standard_output_dir_and_prints_nothing(tmp_path, tiny_model_dir, few, capsys):
    result = train("cut", few, model=str(tiny_model_dir), config=config(tmp_path / "out"))
    assert isinstance(result, TrainResult) and result.output_dir == tmp_path / "out"
    assert math.isfinite(result.metrics["train_loss"]) and result.metrics["train_examples"] > 0
    for name in ("model.safetensors", "tokenizer.json", "README.md", "train_results.json", "trainer_state.json",
                 "cutalign_config.yaml", "training_args.bin"):
        assert (result.output_dir / name).is_file(), name
    saved = json.loads((result.output_dir / "train_results.json").read_text())
    assert saved["train_loss"] == result.metrics["train_loss"]
    assert capsys.readouterr().out == ""


def test_a_dict_config_needs_an_output_dir(tiny_model_dir, few):
    with pytest.raises(ValueError, match="output_dir"):
        train("sft", few, model=str(tiny_model_dir), config={"max_steps": 1})


def test_no_usable_examples_names_the_drops(tmp_path, tiny_model_dir, few):
    with pytest.raises(NoUsableExamplesError, match="it is empty"):
        train("cut", [], model=str(tiny_model_dir), config=config(tmp_path / "a"))
    data = tmp_path / "errors.jsonl"
    data.write_text("\n".join(json.dumps({"id": str(i), "prompt": "Hi", "completion": "Yo", "judgment": "$ERROR$",
                                          "label": False}) for i in range(3)))
    with pytest.raises(NoUsableExamplesError, match=r"no usable examples in .*errors.jsonl.*judge_error 3"):
        train("cut", str(data), model=str(tiny_model_dir), config=config(tmp_path / "b"))
    with pytest.raises(NoUsableExamplesError, match="too_long"):  # every response longer than max_length
        train("sft", few, model=str(tiny_model_dir),
              config=SFTConfig(output_dir=str(tmp_path / "c"), max_length=4, report_to=[]))


def test_an_output_dir_holding_another_run_is_refused_unless_overwritten(tmp_path, tiny_model_dir, few):
    out = tmp_path / "out"
    train("sft", few, model=str(tiny_model_dir), config=config(out, "sft", max_steps=1))
    (out / "checkpoint-7").mkdir()  # an old run's checkpoint
    with pytest.raises(ValueError, match="already holds another run"):
        train("sft", few, model=str(tiny_model_dir), config=config(out, "sft", max_steps=1))
    train("sft", few, model=str(tiny_model_dir), config=config(out, "sft", max_steps=1, overwrite_output_dir=True))
    assert not (out / "checkpoint-7").exists()  # a later `auto` resume cannot pick the old run's checkpoint


def test_no_file_written_holds_a_token(tmp_path, tiny_model_dir, few):
    out = tmp_path / "out"
    cfg = config(out, save_strategy="steps", save_steps=1, hub_token=HUB_SECRET,
                 model_init_kwargs={"token": INIT_SECRET, "dtype": "float32"})
    train("cut", few, model=str(tiny_model_dir), config=cfg)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.parent.name == "checkpoint-1" and p.name == "training_args.bin" for p in files)
    for path in files:
        data = path.read_bytes()
        assert HUB_SECRET.encode() not in data and INIT_SECRET.encode() not in data, path
    import torch

    args = torch.load(out / "checkpoint-1" / "training_args.bin", weights_only=False)  # still loadable
    assert args.hub_token is None and args.model_init_kwargs == {"dtype": "float32"} and args.max_steps == 2
    assert cfg.hub_token == HUB_SECRET  # the live config keeps it (pushing to the hub still works)


def _checkpoint(path: Path, complete: bool) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_auto_resume_takes_the_newest_complete_checkpoint(tmp_path, caplog):
    good = _checkpoint(tmp_path / "checkpoint-2", complete=True)
    _checkpoint(tmp_path / "checkpoint-10", complete=False)
    _checkpoint(tmp_path / "checkpoint-3", complete=True)
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="cutalign"):
        path, skipped = resolve_checkpoint("auto", tmp_path)
    assert path == str(good) and skipped == [str(tmp_path / "checkpoint-10"), str(tmp_path / "checkpoint-3")]
    assert "skipped incomplete checkpoint" in caplog.text and "checkpoint-10" in caplog.text
    assert resolve_checkpoint(None, tmp_path) == (None, [])
    assert resolve_checkpoint("auto", tmp_path / "empty") == (None, [])
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(str(tmp_path / "checkpoint-10"), tmp_path)


@pytest.mark.slow  # three short trainings (about 40 s on 2 busy cores)
def test_a_resumed_run_reports_the_whole_runs_loss_and_ends_with_the_same_weights(
        tmp_path, tiny_model_dir, few):
    # logging_steps=3 leaves unlogged steps at the checkpoint: their loss must be carried too.
    settings = dict(method="sft", max_steps=4, save_strategy="steps", save_steps=2, logging_steps=3,
                    per_device_train_batch_size=1, sft_include_negatives=True)
    full = train("sft", few, model=str(tiny_model_dir), config=config(tmp_path / "full", **settings))
    part = tmp_path / "part"
    train("sft", few, model=str(tiny_model_dir), config=config(part, **settings))
    for name in [p.name for p in part.iterdir() if p.name != "checkpoint-2"]:  # as if killed after checkpoint-2
        shutil.rmtree(part / name) if (part / name).is_dir() else (part / name).unlink()
    resumed = train("sft", few, model=str(tiny_model_dir),
                    config=config(part, **settings, resume_from_checkpoint="auto"))
    assert resumed.resumed_from == str(part / "checkpoint-2")
    assert resumed.metrics["train_loss"] == pytest.approx(full.metrics["train_loss"], rel=1e-5)
    assert json.loads((part / "train_results.json").read_text())["train_loss"] == resumed.metrics["train_loss"]
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
