"""One training run end to end: load data, build the trainer, train, save a standard output dir.

Shared by `cutalign train`, `cutalign demo` and Python users who want the CLI's behaviour.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from cutalign.data.converters import load_judged
from cutalign.data.schema import PolarityRule

logger = logging.getLogger("cutalign")
console = Console(stderr=True, soft_wrap=True)


def resolve_checkpoint(value: str | None, output_dir: str) -> str | bool | None:
    """`--resume_from_checkpoint auto|true` picks the newest checkpoint in the output dir."""
    if value is None or value == "":
        return None
    if value.lower() in ("auto", "true", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            logger.warning("no checkpoint found in %s; starting from scratch", output_dir)
        return last
    return value


def run_training(method: str, run_args: Any, config: Any, model_args: Any, trainer_cls: type) -> Any:
    """Train and write: model or adapter, tokenizer, README.md model card, train_results.json."""
    from trl import get_peft_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not model_args.model_name_or_path:
        raise ValueError("no model given (--model)")
    rule = PolarityRule(score_threshold=config.score_threshold, positive_pattern=config.positive_pattern)
    train_data = load_judged(_one_or_many(run_args.data), run_args.data_format, rule=rule)  # carries its drops
    eval_data = (load_judged(_one_or_many(run_args.eval_data), run_args.data_format, rule=rule)
                 if run_args.eval_data else None)
    init_kwargs = dict(config.model_init_kwargs or {})
    # Every method (TRL's DPO loader included) loads weights as safetensors, without remote code.
    init_kwargs.setdefault("use_safetensors", True)
    init_kwargs.setdefault("trust_remote_code", False)
    init_kwargs.setdefault("dtype", model_args.dtype)
    if model_args.attn_implementation:
        init_kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    init_kwargs.setdefault("revision", model_args.model_revision)
    if model_args.load_in_8bit or model_args.load_in_4bit:
        from trl import get_quantization_config

        init_kwargs["quantization_config"] = get_quantization_config(model_args)
    config.model_init_kwargs = init_kwargs
    peft_config = get_peft_config(model_args)
    targets = getattr(peft_config, "target_modules", None)
    if isinstance(targets, str) and targets.isidentifier():
        # One module name from the CLI arrives as a string, which PEFT reads as a full-match regex.
        peft_config.target_modules = [targets]
    trainer = trainer_cls(
        model=model_args.model_name_or_path, args=config, train_dataset=train_data, eval_dataset=eval_data,
        peft_config=peft_config,
    )
    _print_data_summary(trainer)
    result = trainer.train(resume_from_checkpoint=resolve_checkpoint(config.resume_from_checkpoint, config.output_dir))
    trainer.save_model(config.output_dir)
    metrics = {**result.metrics, "train_examples": len(trainer.train_dataset),
               "dropped_examples": trainer.drop_report.total}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        trainer.create_model_card()
        from cutalign.cli.train import dump_run_config

        dump_run_config(Path(config.output_dir) / "cutalign_config.yaml", run=asdict(run_args),
                        model=asdict(model_args), training=config.to_dict())
        console.print(f"[green]done[/green]: {method} model written to {config.output_dir} "
                      f"(train_loss {metrics.get('train_loss', float('nan')):.4f})")
    return trainer


def _print_data_summary(trainer: Any) -> None:
    if not trainer.is_world_process_zero():
        return
    data, args = trainer.train_dataset, trainer.args
    if "is_negative" in data.column_names:
        negatives = sum(bool(x) for x in data["is_negative"])
        console.print(f"training examples: {len(data)} ({negatives} negative, {len(data) - negatives} positive)")
    else:  # DPO methods train on preference pairs
        console.print(f"training pairs: {len(data)}")
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    console.print(f"processes: {args.world_size}, global batch: {global_batch}")
    for name, report in (("training", trainer.drop_report), ("evaluation", trainer.eval_drop_report)):
        if report:
            console.print(f"dropped {name} examples: {report.total}")
            for line in report.lines():
                console.print(f"  - {line}")


def _one_or_many(sources: list[str]) -> str | list[str]:
    if not sources:
        raise ValueError("no training data given (--data)")
    return sources[0] if len(sources) == 1 else sources
