"""Shared pieces of the online-loop tests: fast settings and run-directory comparisons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
VOLATILE_KEYS = {"timings", "created_at", "seconds"}
SLOW_JUDGE = f"python:{HERE / 'slow_judge.py'}:slow"


def fast_args(model_dir: Path, *extra: str, judge: str = "demo", evaluate: bool = True) -> list[str]:
    """Settings that make two iterations take seconds: a tiny model, 8 prompts, a few steps."""
    return ["--model", str(model_dir), "--prompts_per_iteration", "8", "--max_new_tokens", "12",
            "--generation_batch_size", "4", "--judge", judge, "--judge_batch_size", "2",
            "--lora_r", "4", "--lora_alpha", "8", "--save_steps", "1",
            "--train", "num_train_epochs=2", "--train", "per_device_train_batch_size=4",
            "--train", "max_length=96", "--train", "learning_rate=0.003", "--train", "positive_ratio=null",
            *(["--eval", "cutalign.online.builtin:evaluate"] if evaluate else []), *extra]


def subprocess_env() -> dict[str, str]:
    # One thread: identical floating point in every process, and polite on a shared 2-core machine.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def run_cli(args: list[str], *, driver: list[str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`cutalign online ARGS` in a fresh process (or the kill driver with the same arguments)."""
    command = [sys.executable, str(HERE / "kill_driver.py"), *driver] if driver else \
        [sys.executable, "-m", "cutalign", "online"]
    return subprocess.run([*command, *args, "--no_progress"], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def stable(value: Any) -> Any:
    """A manifest without its wall-clock figures."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def manifests(run_dir: Path) -> dict[str, Any]:
    paths = [run_dir / "manifest.json", *sorted(run_dir.glob("iter_*/manifest.json"))]
    return {str(p.relative_to(run_dir)): stable(json.loads(p.read_text())) for p in paths}


def weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))
