"""`cutalign train` under torchrun / accelerate with 2 CPU processes (gloo): the Trainer's own DDP,
FSDP2 (a worker script) and DeepSpeed ZeRO-3 (the Trainer's ``--deepspeed``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent


def train_args(model: Path, data: Path, out: Path) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--data_format", "cut-alpaca",
            "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--max_length", "192", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"]


def run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def train_two_and_one(tmp_path: Path, model: Path, data: Path, exact: list[str], *sharding: str):
    """`cutalign train` under torchrun with 2 processes x 2 examples (plus ``sharding`` flags), and with
    1 process x 4 examples: the 2-process run's stderr and the (initial, 2-process, 1-process) weights."""
    from safetensors.torch import load_file

    two, one = tmp_path / "two", tmp_path / "one"
    result = run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--no-python", str(BIN / "cutalign"),
                  *train_args(model, data, two), *exact, *sharding], tmp_path)
    assert "processes: 2, global batch: 4" in result.stderr
    assert result.stderr.count("model written to") == 1, result.stderr[-2000:]
    run([str(BIN / "cutalign"), *train_args(model, data, one), *exact, "--per_device_train_batch_size", "4"],
        tmp_path)
    return result.stderr, *(load_file(d / "model.safetensors") for d in (model, two, one))


def assert_same_update(initial: dict, after: dict, reference: dict) -> None:
    """Every parameter of ``after`` equals the 1-process ``reference``, and the LM head did move."""
    assert set(after) == set(reference)
    assert not torch.equal(after["lm_head.weight"], initial["lm_head.weight"])
    for name, value in reference.items():
        torch.testing.assert_close(after[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_torchrun_two_processes_give_the_one_process_update(tmp_path, tiny_model_dir, cut_online_dir):
    """2 processes x 2 examples (gloo DDP) == 1 process x 4 examples, parameter for parameter."""
    exact = ["--optim", "sgd", "--learning_rate", "1.0", "--lr_scheduler_type", "constant", "--max_steps", "1",
             "--train_sampling_strategy", "sequential", "--positive_ratio", "-1", "--disable_dropout", "true"]
    _, initial, after_ddp, after_single = train_two_and_one(
        tmp_path, tiny_model_dir, cut_online_dir / "train-alpaca-sample-iter3.json", exact)
    assert_same_update(initial, after_ddp, after_single)


@pytest.mark.slow
def test_accelerate_launch_runs_the_module_entry_point(tmp_path, tiny_model_dir, cut_online_dir):
    """`accelerate launch -m cutalign`: on CPU accelerate starts one process (multi-CPU needs MPI);
    on GPUs `--multi_gpu` goes through the same torch.distributed path as the torchrun test."""
    out = tmp_path / "out"
    result = run([str(BIN / "accelerate"), "launch", "--num_processes", "1", "--cpu", "-m", "cutalign",
                  *train_args(tiny_model_dir, cut_online_dir / "train-alpaca-sample-iter3.json", out)], tmp_path)
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0
    assert "processes: 1, global batch: 2" in result.stderr


WORKER = Path(__file__).with_name("fsdp_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize(("head", "misalign_mode"), [("own", "fake_positive"), ("root", "instruction_only")])
def test_fsdp2_sharded_head_gives_the_one_process_update(tmp_path, tiny_model_dir, cut_online_dir, head,
                                                         misalign_mode):
    """FSDP2 (fully_shard per decoder layer, the LM head on its own or in the root group), 2 gloo processes
    x 2 examples == 1 process x 4 examples. The first 4 examples hold one negative, so one process has no
    no-grad rows and runs the empty pass the collective gathers need."""
    from safetensors.torch import load_file

    data = cut_online_dir / "train-alpaca-sample-iter3.json"
    sharded, single = tmp_path / "fsdp.safetensors", tmp_path / "single.safetensors"
    args = [str(tiny_model_dir), str(data)]
    result = run([str(BIN / "torchrun"), "--nproc_per_node", "2", str(WORKER), *args, str(sharded), misalign_mode,
                  head, "4"], tmp_path)
    assert "processes: 2" in result.stdout
    run([sys.executable, str(WORKER), *args, str(single), misalign_mode, head, "4"], tmp_path)
    initial, after_fsdp, after_single = (load_file(p) for p in (tiny_model_dir / "model.safetensors", sharded, single))
    assert_same_update(initial, after_fsdp, after_single)


# The shipped config. It has no train_batch_size: transformers loads the model under zero.Init before
# DeepSpeed's own process group exists, and zero.Init would check that global batch against world size 1.
ZERO3_CONFIG = Path(__file__).parents[2] / "examples" / "deepspeed_zero3.json"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="DeepSpeed is not installed (pip install 'cutalign[deepspeed]')")
@pytest.mark.parametrize("misalign_mode", ["fake_positive", "instruction_only"])
def test_deepspeed_zero3_gives_the_one_process_update(tmp_path, monkeypatch, tiny_model_dir, cut_online_dir,
                                                      misalign_mode):
    """`cutalign train --deepspeed` with ZeRO-3 (every weight, the LM head too, partitioned), 2 gloo processes
    x 2 examples == 1 process x 4 examples. One of the 4 examples is negative, so in fake_positive mode one
    process runs an empty no-grad pass; with 64-row chunks the processes also run different numbers of
    chunks, which deadlocks unless the head is gathered once per pass rather than in each chunk."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    # Two steps: the second runs with ZeRO-3's recorded parameter trace (prefetching). No clipping: the
    # second step's gradient norm is above 1, and torch's fp32 norm (the reference) is 6e-5 off DeepSpeed's.
    exact = ["--optim", "sgd", "--learning_rate", "1.0", "--lr_scheduler_type", "constant", "--max_steps", "2",
             "--max_grad_norm", "0", "--train_sampling_strategy", "sequential", "--positive_ratio", "-1",
             "--disable_dropout", "true", "--misalign_mode", misalign_mode, "--logprob_chunk_size", "64"]
    _, initial, after_zero3, after_single = train_two_and_one(
        tmp_path, tiny_model_dir, cut_online_dir / "train-alpaca-sample-iter3.json", exact,
        "--deepspeed", str(ZERO3_CONFIG))
    assert_same_update(initial, after_zero3, after_single)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="DeepSpeed is not installed (pip install 'cutalign[deepspeed]')")
def test_deepspeed_zero3_refuses_a_lora_wrapped_head(tmp_path, monkeypatch, tiny_model_dir, cut_online_dir):
    """LoRA on lm_head under ZeRO-3 stops with the reason instead of a deadlock or a wrong update."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--no-python", str(BIN / "cutalign"),
           *train_args(tiny_model_dir, cut_online_dir / "train-alpaca-sample-iter3.json", tmp_path / "out"),
           "--max_steps", "1", "--use_peft", "--lora_target_modules", "q_proj", "lm_head", "--lora_r", "4",
           "--deepspeed", str(ZERO3_CONFIG)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    assert "leave lm_head out of lora_target_modules" in result.stderr
