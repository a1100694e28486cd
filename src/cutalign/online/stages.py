"""One adapter per stage of the loop, over the project's own libraries (no second generator,
judge, trainer or merge here): switching a stage to a new library entry point is a change in one
function.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_json
from cutalign.online.config import CALLABLE_RE, OnlineConfig

TrainFn = Callable[..., "TrainOutcome"]


# ---------------------------------------------------------------------------------- generation
def make_policy_generator(config: OnlineConfig, model_path: str, progress: bool) -> Any:
    """A `Generator` for the current policy (a model directory), on the configured backend."""
    from cutalign.generation.factory import make_generator

    if config.generator == "openai":
        raise ValueError("generator 'openai' cannot follow the policy (it changes every iteration); use "
                         "'transformers' or 'vllm'")
    options = {"batch_size": config.generation_batch_size} if config.generator == "transformers" else {}
    return make_generator(config.generator, model=model_path, template=config.template,
                          system_prompt=config.system_prompt, **options)


def policy_inputs(generator: Any, prompts: list[Any]) -> list[str]:
    """Prompts rendered with the policy's training template (the backends send strings as they are)."""
    from cutalign.data.templates import render_chat

    return [render_chat(generator.template, p) for p in prompts]


# ------------------------------------------------------------------------------------- judging
def make_judge(config: OnlineConfig) -> Any:
    """The configured `Judge` (any kind of `cutalign judge`)."""
    from cutalign.judges.factory import make_judge as build

    options = {"judge_model": config.judge_model, "base_url": config.base_url, "api_key_env": config.api_key_env,
               **config.judge_options}
    if config.judge == "hf":
        options.setdefault("model", config.judge_model)
    return build(config.judge, **options)


def judge_generations(judge: Any, generations: Path, output: Path, batch_size: int, progress: bool) -> None:
    """Judge every generation into `output`, resumably: an id already judged is never judged (or paid) again."""
    from tqdm.auto import tqdm

    from cutalign.judges.annotate import judge_file
    from cutalign.judges.factory import close_judge
    from cutalign.judges.guard import FailureGuard

    total = sum(1 for line in generations.read_text(encoding="utf-8").splitlines() if line.strip())
    with tqdm(total=total, desc="judging", disable=not progress, leave=False) as bar:
        try:
            judge_file(generations, output, judge, batch_size=batch_size, guard=FailureGuard(),
                       progress=bar.update)
        finally:
            close_judge(judge)


def judgment_error(row: dict[str, Any]) -> str | None:
    """Why a judged row cannot be trained on (None when it can)."""
    error = (row.get("judge") or {}).get("error") if isinstance(row.get("judge"), dict) else None
    error = error or row.get("error")
    if error:
        return str(error)
    if not isinstance(row.get("label"), bool):
        return "no_verdict"
    return None


# ------------------------------------------------------------------------------------ training
@dataclass
class TrainOutcome:
    """What the loop records of one training run."""

    trained_on: int
    drops: dict[str, int]
    metrics: dict[str, float | None]
    log_history: list[dict[str, Any]] = field(default_factory=list)


def train_policy(method: str, rows: list[dict[str, Any]], *, model: Any, output_dir: Path,
                 settings: dict[str, Any], peft: dict[str, Any] | None, save_steps: int | None = None,
                 progress: bool = True) -> TrainOutcome:
    """Train `method` on canonical rows (`cutalign.api.train`); resumes from the newest complete
    checkpoint in `output_dir`, and starts over when there is none."""
    from cutalign.api import train
    from cutalign.lab.training import LossBar

    config = {"logging_steps": 1, "report_to": [], **settings, "output_dir": str(output_dir),
              "save_strategy": "steps" if save_steps else "no", "save_steps": save_steps or 500,
              "resume_from_checkpoint": "auto", "overwrite_output_dir": True, "disable_tqdm": True}
    peft_config = None
    if peft is not None:
        from peft import LoraConfig

        targets = peft.get("target_modules")
        peft_config = LoraConfig(task_type="CAUSAL_LM", r=peft["r"], lora_alpha=peft["alpha"],
                                 lora_dropout=peft["dropout"],
                                 target_modules="all-linear" if targets == ["all-linear"] else targets)
    model_arg, tokenizer = model if isinstance(model, tuple) else (str(model), None)
    callbacks = [LossBar(f"training ({method})")] if progress else None
    # The Trainer prints every log dict on stdout (PrinterCallback); the loop reports the metrics itself.
    with contextlib.redirect_stdout(io.StringIO()):
        result = train(method, rows, model=model_arg, config=config, peft_config=peft_config, tokenizer=tokenizer,
                       callbacks=callbacks)
    trainer = result.trainer
    history = [h for h in trainer.state.log_history if "loss" in h]
    losses = [h["loss"] for h in history]
    fractions = [h["unlikely_fraction"] for h in history if "unlikely_fraction" in h]
    metrics = {"train_loss": sum(losses) / len(losses) if losses else None,
               "final_loss": losses[-1] if losses else None,
               "unlikely_fraction": sum(fractions) / len(fractions) if fractions else None,
               "steps": trainer.state.global_step}
    return TrainOutcome(len(trainer.train_dataset), trainer.drop_report.as_dict(), metrics, history)


def remove_checkpoints(output_dir: Path) -> None:
    for path in output_dir.glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------- merge
def merge_policy(train_dir: Path, output_dir: Path, dtype: str) -> None:
    """The next policy as a full safetensors model in `output_dir`, put in place by a rename: the merged
    adapter (`cutalign.models.merge_adapter`), or the fully fine-tuned model as trained."""
    if (train_dir / "adapter_config.json").is_file():
        from cutalign.models import merge_adapter

        merge_adapter(train_dir, output_dir, dtype)
        return
    staging = output_dir.parent / f".{output_dir.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(train_dir, staging, ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.rmtree(output_dir, ignore_errors=True)
    staging.rename(output_dir)


# ---------------------------------------------------------------------------------- evaluation
def run_eval_hook(hook: str, model_path: Path, iteration: int, workdir: Path) -> dict[str, float]:
    """Metrics of the model from a Python callable `module:function` or a shell command."""
    if CALLABLE_RE.match(hook):
        result = load_callable(hook, "eval")(str(model_path))
        return _metrics_from(result, hook)
    output = workdir / "eval_output.json"
    output.unlink(missing_ok=True)
    command = hook.format(model=model_path, iteration=iteration, output=output, dir=workdir)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"eval command failed (exit {done.returncode}): {command}\n" + "\n".join(tail))
    if output.is_file():
        return _metrics_from(json.loads(output.read_text()), hook)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        return _metrics_from(json.loads(lines[-1]), hook)
    except (IndexError, ValueError) as err:
        raise RuntimeError(f"eval command wrote no JSON metrics to {{output}} nor as its last line: {command}") from err


def _metrics_from(value: Any, hook: str) -> dict[str, float]:
    if isinstance(value, int | float):
        return {"metric": float(value)}
    if not isinstance(value, dict):
        raise RuntimeError(f"eval hook {hook!r} returned {type(value).__name__}, expected a dict of metrics")
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def load_callable(target: str, what: str) -> Any:
    """`module:attribute`, imported (the current directory is importable, as with `python -m`)."""
    module_name, _, attribute = target.partition(":")
    if not CALLABLE_RE.match(target):
        raise ValueError(f"{what}: expected 'module:function', got {target!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        return getattr(import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what}: cannot import {target!r} ({err})") from err


def save_json(path: Path, value: Any) -> None:
    atomic_write_json(path, value)
