"""`cutalign.train`: one training run end to end, as a library call that prints nothing.

Loads the judged data (any format, carrying its drop report), loads the model through the one
loader, builds the method's trainer, trains (resuming from the newest *complete* checkpoint when
asked) and writes a standard output dir: model or adapter, tokenizer, model card,
``train_results.json``, ``trainer_state.json`` and ``cutalign_config.yaml`` — each atomically.
`cutalign train`, `cutalign demo` and Python users share it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from cutalign.trainer.config import without_secrets

logger = logging.getLogger("cutalign")

RUN_CONFIG = "cutalign_config.yaml"
RUN_MARKERS = ("config.json", "adapter_config.json", "model.safetensors", "adapter_model.safetensors",
               "model.safetensors.index.json", "trainer_state.json", "train_results.json")
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "adapter_model.bin")
AUTO_RESUME = ("auto", "true", "latest")


class NoUsableExamplesError(ValueError):
    """Every example of the data was dropped (or there were none)."""


@dataclass
class TrainResult:
    """What `train` returns: the trainer (model, state), the final metrics and where it all went."""

    trainer: Any
    metrics: dict[str, Any]
    output_dir: Path
    resumed_from: str | None = None
    skipped_checkpoints: list[str] = field(default_factory=list)


def method_classes(method: str) -> tuple[type, type]:
    """(config class, trainer class) of a `cutalign train --method` name."""
    from cutalign.trainer import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method].load()


def train(
    method: str,
    data: Any,
    *,
    model: Any,
    config: Any,
    peft_config: Any | None = None,
    eval_data: Any | None = None,
    data_format: str = "canonical",
    extra_fields: str = "error",
    tokenizer: Any | None = None,
    callbacks: list | None = None,
    run_config: Mapping[str, Any] | None = None,
    on_start: Callable[[Any], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` (path, hub id or loaded model) with ``method`` on ``data`` and save the run.

    ``data`` / ``eval_data``: a path or list of paths (read as ``data_format``), a list of
    canonical dicts, a ``datasets.Dataset`` or the data layer's ``JudgedData`` (its drops reach the
    model card). ``config``: the method's config object or a dict of its fields (``output_dir``
    required). ``config.resume_from_checkpoint`` may be a path or ``"auto"`` (newest complete
    checkpoint). ``run_config`` is saved, without secrets, beside the model as ``cutalign_config.yaml``.
    Raises ``DataError`` / ``ValueError`` (``ModelNotFoundError``, ``NoUsableExamplesError``) for bad input.
    """
    from cutalign.models import check_model_exists, load_model
    from cutalign.trainer.base import init_kwargs

    config_cls, trainer_cls = method_classes(method)
    config = _as_config(config, config_cls)
    output_dir = Path(config.output_dir)
    checkpoint, skipped = resolve_checkpoint(config.resume_from_checkpoint, output_dir)
    check_output_dir(output_dir, overwrite=config.overwrite_output_dir,
                     resuming=checkpoint is not None)
    config.model_init_kwargs = init_kwargs(config.model_init_kwargs)
    if isinstance(model, str | Path):  # before the data: a wrong name fails in seconds
        check_model_exists(str(model), token=config.model_init_kwargs.get("token"))
    train_data = load_training_data(data, data_format, config, extra_fields)
    eval_loaded = load_training_data(eval_data, data_format, config, extra_fields) if eval_data is not None else None
    if isinstance(model, str | Path):
        model, loaded_tokenizer = load_model(str(model), model_init_kwargs=config.model_init_kwargs)
        tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
    if config.overwrite_output_dir and checkpoint is None:
        _remove_checkpoints(output_dir)
    trainer = trainer_cls(model=model, args=config, train_dataset=train_data, eval_dataset=eval_loaded,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    quiet(trainer, progress=progress and not config.disable_tqdm)
    if on_start is not None:
        on_start(trainer)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {**output.metrics, "train_examples": len(trainer.train_dataset),
               "dropped_examples": trainer.drop_report.total}
    save_run(trainer, metrics, output_dir, {"method": method, **(run_config or {})})
    return TrainResult(trainer, metrics, output_dir, checkpoint, skipped)


def _as_config(config: Any, config_cls: type) -> Any:
    if isinstance(config, Mapping):
        if not config.get("output_dir"):
            raise ValueError("config needs an output_dir (where the model and checkpoints go)")
        return config_cls(**config)
    if not isinstance(config, config_cls):
        raise TypeError(f"config must be a {config_cls.__name__} (or a dict of its fields), got {type(config).__name__}")
    return config


def load_training_data(data: Any, data_format: str, config: Any, extra_fields: str = "error") -> Any:
    """Paths are loaded as ``data_format`` with the config's polarity rule; loaded data passes as is.
    Raises :class:`NoUsableExamplesError` when nothing is left (with the drops by reason)."""
    from cutalign.data.converters import CONVERTERS, load_judged
    from cutalign.data.schema import PolarityRule

    if isinstance(data, str | Path) or (isinstance(data, Sequence) and data and
                                        all(isinstance(d, str | Path) for d in data)):
        if data_format not in CONVERTERS:
            raise ValueError(f"unknown format {data_format!r}; known formats: {', '.join(sorted(CONVERTERS))}")
        rule = PolarityRule(score_threshold=config.score_threshold, positive_pattern=config.positive_pattern)
        source = data if isinstance(data, str | Path) else (data[0] if len(data) == 1 else list(data))
        data = load_judged(source, data_format, rule=rule, extra_fields=extra_fields)
    if len(data) == 0:
        report = getattr(data, "report", None)
        raise NoUsableExamplesError(no_usable_message(report))
    return data


def no_usable_message(report: Any, stage: str = "") -> str:
    """``no usable examples in FILE (dropped: too_long 3, judge_error 1)``."""
    sources = ", ".join(report.sources) if report is not None and report.sources else "the data"
    counts = report.as_dict() if report is not None else {}
    detail = ", ".join(f"{reason} {n}" for reason, n in counts.items())
    where = f" after {stage}" if stage else ""
    return f"no usable examples in {sources}{where}" + (f" (dropped: {detail})" if detail else " (it is empty)")


# ---------------------------------------------------------------------------------------- progress
BAR_METRICS = ("loss", "l1", "l2", "unlikely_fraction", "learning_rate")


def quiet(trainer: Any, *, progress: bool) -> None:
    """Remove the Trainer's printing (a raw dict per log on stdout); optionally one clean bar instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(MetricsBar())


class MetricsBar(TrainerCallback):
    """A tqdm bar on stderr over optimizer steps, its postfix the latest key metrics."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.bar is not None and logs:
            shown = {k: f"{v:.4g}" for k, v in logs.items() if k in BAR_METRICS and isinstance(v, int | float)}
            if shown:
                self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------------------- output dir
def check_output_dir(output_dir: Path, *, overwrite: bool, resuming: bool) -> None:
    """Refuse a folder that holds another run: training into it would mix two runs' files."""
    if overwrite or resuming or not output_dir.is_dir():
        return
    found = [name for name in RUN_MARKERS if (output_dir / name).exists()]
    found += sorted(p.name for p in output_dir.glob("checkpoint-*") if p.is_dir())[:3]
    if found:
        raise ValueError(f"output_dir {output_dir} already holds another run ({', '.join(found)}); pass "
                         "--overwrite_output_dir to replace it, --resume_from_checkpoint auto to continue it, "
                         "or choose another --output_dir")


def _remove_checkpoints(output_dir: Path) -> None:
    for path in output_dir.glob("checkpoint-*"):
        if path.is_dir():
            shutil.rmtree(path)


def checkpoint_is_complete(path: Path) -> bool:
    """A checkpoint the Trainer finished writing: trainer_state.json (written last) parses, weights exist."""
    state = path / "trainer_state.json"
    if not state.is_file() or not any((path / name).is_file() for name in WEIGHT_FILES):
        return False
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return True


def resolve_checkpoint(value: str | bool | None, output_dir: str | Path) -> tuple[str | None, list[str]]:
    """`auto` / `true` / `latest` -> the newest complete ``checkpoint-N`` (and the incomplete ones
    skipped on the way, logged); a path is checked; None/'' means no resume."""
    if value is None or value is False or value == "":
        return None, []
    output_dir = Path(output_dir)
    if value is True or str(value).lower() in AUTO_RESUME:
        candidates = sorted((p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                            key=lambda p: int(p.name[11:]), reverse=True) if output_dir.is_dir() else []
        skipped: list[str] = []
        for path in candidates:
            if checkpoint_is_complete(path):
                for name in skipped:
                    logger.warning("skipped incomplete checkpoint %s (no trainer_state.json or weights: the "
                                   "run stopped while saving it)", name)
                return str(path), skipped
            skipped.append(str(path))
        if skipped:
            logger.warning("no complete checkpoint in %s (skipped %s); starting from scratch",
                           output_dir, ", ".join(skipped))
        else:
            logger.warning("no checkpoint found in %s; starting from scratch", output_dir)
        return None, skipped
    path = Path(str(value))
    if not checkpoint_is_complete(path):
        raise ValueError(f"resume_from_checkpoint {path} is not a complete checkpoint "
                         "(no trainer_state.json or weights)")
    return str(path), []


# ---------------------------------------------------------------------------------------- saving
def save_run(trainer: Any, metrics: dict[str, Any], output_dir: Path, run_config: Mapping[str, Any]) -> None:
    """Model (or adapter) and tokenizer, results, trainer state, model card and run config."""
    from cutalign.files import atomic_write_json, atomic_write_text

    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return
    atomic_write_json(output_dir / "train_results.json", metrics, indent=4)
    all_path = output_dir / "all_results.json"
    previous = json.loads(all_path.read_text()) if all_path.is_file() else {}
    atomic_write_json(all_path, {**previous, **metrics}, indent=4)
    state = json.dumps(dataclasses.asdict(trainer.state), indent=2, sort_keys=True) + "\n"
    atomic_write_text(output_dir / "trainer_state.json", state)
    trainer.create_model_card()
    dump_run_config(output_dir / RUN_CONFIG, dict(run_config), training=trainer.args.to_dict())


def dump_run_config(path: Path, *parts: Mapping[str, Any], **named: Mapping[str, Any]) -> None:
    """Save the resolved run configuration (merged parts), without secrets at any depth, atomically."""
    from cutalign.files import atomic_write_text

    merged: dict[str, Any] = {}
    for part in (*parts, *named.values()):
        merged.update(part)
    clean = without_secrets(json.loads(json.dumps(merged, default=str)))
    atomic_write_text(path, yaml.safe_dump(clean, sort_keys=True))
