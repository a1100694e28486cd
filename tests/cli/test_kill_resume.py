"""`cutalign train` killed with SIGKILL (at a random step, and while writing a checkpoint), then rerun
with `--resume_from_checkpoint auto`, ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cutalign.trainer.base import KILL_AT_SAVE_ENV

pytestmark = pytest.mark.slow  # each case starts three `cutalign train` processes
MAX_STEPS = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory, online_examples) -> Path:
    path = tmp_path_factory.mktemp("kill") / "train.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in online_examples[:12]) + "\n")
    return path


def _command(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cutalign", "train", "--method", "sft", "--sft_include_negatives", "true",
            "--model", str(model), "--data", str(data), "--output_dir", str(out), "--max_steps", str(MAX_STEPS),
            "--per_device_train_batch_size", "2", "--max_length", "256", "--save_steps", "1", "--logging_steps", "2",
            "--report_to", "none", "--disable_tqdm", "true", *extra]


def _run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir, data) -> Path:
    out = tmp_path_factory.mktemp("full") / "out"
    done = _run(_command(tiny_model_dir, data, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _kill_when_checkpoint_complete(command: list[str], step: int) -> None:
    """Start the run and SIGKILL it as soon as checkpoint-`step` is complete (mid-training)."""
    out = Path(command[command.index("--output_dir") + 1])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while not (out / f"checkpoint-{step}" / "trainer_state.json").is_file():
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)


def _same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        assert (first[key] == second[key]).all(), key


def test_killed_at_a_random_step_then_auto_resume_matches(tmp_path, tiny_model_dir, data, uninterrupted):
    out = tmp_path / "out"
    command = _command(tiny_model_dir, data, out)
    _kill_when_checkpoint_complete(command, random.Random().randint(1, MAX_STEPS - 2))
    resumed = _run([*command, "--resume_from_checkpoint", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumedfrom" in "".join(resumed.stderr.split())
    _same_weights(uninterrupted, out)
    full = json.loads((uninterrupted / "train_results.json").read_text())["train_loss"]
    assert json.loads((out / "train_results.json").read_text())["train_loss"] == pytest.approx(full, rel=1e-5)


def test_killed_while_writing_a_checkpoint_then_auto_skips_it(tmp_path, tiny_model_dir, data, uninterrupted):
    out = tmp_path / "out"
    command = _command(tiny_model_dir, data, out)
    killed = _run(command, env={KILL_AT_SAVE_ENV: "3"})  # dies inside checkpoint-3's save
    assert killed.returncode == -signal.SIGKILL
    assert (out / "checkpoint-3").is_dir() and not (out / "checkpoint-3" / "trainer_state.json").exists()
    resumed = _run([*command, "--resume_from_checkpoint", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = "".join(resumed.stderr.split())  # rich wraps long lines
    assert "skippedincompletecheckpoint" in said and "checkpoint-3" in said
    assert f"resumedfrom{out}/checkpoint-2" in said
    _same_weights(uninterrupted, out)
