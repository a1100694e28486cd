"""`cutalign train` under torchrun / accelerate with 2 CPU processes (gloo): the Trainer's own DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def train_args(model: Path, data: Path, out: Path) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--data_format", "cut-alpaca",
            "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--max_length", "192", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"]


def run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_torchrun_two_processes(tmp_path, tiny_model_dir, cut_online_dir):
    out = tmp_path / "out"
    result = run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--no-python", str(BIN / "cutalign"),
                  *train_args(tiny_model_dir, cut_online_dir / "train-alpaca-sample-iter3.json", out)], tmp_path)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert "processes: 2, global batch: 4" in result.stderr
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0


@pytest.mark.slow
def test_accelerate_launch_runs_the_module_entry_point(tmp_path, tiny_model_dir, cut_online_dir):
    """`accelerate launch -m cutalign`: on CPU accelerate starts one process (multi-CPU needs MPI);
    on GPUs `--multi_gpu` goes through the same torch.distributed path as the torchrun test."""
    out = tmp_path / "out"
    result = run([str(BIN / "accelerate"), "launch", "--num_processes", "1", "--cpu", "-m", "cutalign",
                  *train_args(tiny_model_dir, cut_online_dir / "train-alpaca-sample-iter3.json", out)], tmp_path)
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0
    assert "processes: 1, global batch: 2" in result.stderr
