"""`cutalign train`: any method, any config field as `--field_name` or YAML key (TRL's parser),
over :func:`cutalign.api.train`. Bad input of any kind exits 2 with one line, never a traceback."""

from __future__ import annotations

import difflib
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
import yaml

from cutalign.cli import app

BAD_INPUT = 2


@dataclass
class RunArguments:
    """What to train on; the model and LoRA flags come from TRL's `ModelConfig`."""

    data: list[str] = field(
        default_factory=list,
        metadata={"help": "Training data: JSON/JSONL/Parquet files, folders of them, or a `datasets` id."},
    )
    data_format: str = field(
        default="canonical",
        metadata={"help": "Format of --data: 'canonical' (cutalign JSONL) or a converter name "
                          "(shepherd, cut-alpaca, openai-critiques, ultrafeedback)."},
    )
    eval_data: list[str] = field(default_factory=list, metadata={"help": "Optional evaluation data (same format)."})
    extra_fields: str = field(
        default="error",
        metadata={"help": "Unknown keys in canonical rows: 'error' (default, names the close match) or 'ignore'."},
    )
    method: str = field(default="cut", metadata={"help": "Training method (see `cutalign methods`)."})


_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
_YAML_ONLY_KEYS = ("env",)  # TRL's parser: environment variables to set


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(BAD_INPUT)


@app.command(context_settings=_CONTEXT, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train a model on judged data. `cutalign train --method cut --help` lists every flag."""
    argv = _normalise_argv(list(ctx.args))
    yaml_config = _read_yaml(argv)
    method = _peek_method(argv, yaml_config)
    from cutalign.trainer import METHODS

    if method not in METHODS:
        _fail(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    config_cls, _ = METHODS[method].load()
    from trl import ModelConfig, TrlParser

    parser = TrlParser((RunArguments, config_cls, ModelConfig), prog=f"cutalign train --method {method}")
    run_args, config, model_args = parse_training_argv(
        parser, argv, yaml_config, output_dir_help="where the model, checkpoints and model card go")
    if not model_args.model_name_or_path:
        _fail("--model is required (a model folder, a hub id or a LoRA adapter folder)")
    if not run_args.data:
        _fail("--data is required (judged data files, folders or a `datasets` id)")
    _run(method, run_args, config, model_args)


def parse_training_argv(parser: Any, argv: list[str], yaml_config: dict[str, Any], *,
                        output_dir_help: str) -> tuple[Any, ...]:
    """TRL's parser over flags + YAML, with our checks first: `--help` (listing `--config`), typos with
    close matches, a required `--output_dir`; every parse error exits 2 (shared by train and train-judge)."""
    if "--help" in argv or "-h" in argv:
        # TRL's parser reads --config itself (not a dataclass field), so it is shown here only.
        parser.add_argument("--config", metavar="FILE", help="YAML file with any of these flags as keys; flags "
                                                             "given on the command line win.")
        parser.print_help()
        raise typer.Exit(0)
    _check_names(parser, argv, yaml_config)
    if "--output_dir" not in argv and not yaml_config.get("output_dir"):
        _fail(f"--output_dir is required ({output_dir_help})")
    try:
        return tuple(parser.parse_args_and_config(argv))
    except ValueError as err:
        _fail(str(err))
    except SystemExit as err:  # argparse already printed "error: argument --x: invalid ..."
        if err.code:
            raise typer.Exit(BAD_INPUT) from None
        raise


def _run(method: str, run_args: RunArguments, config: Any, model_args: Any) -> None:
    from rich.console import Console

    from cutalign.api import train as train_run
    from cutalign.data.schema import DataError

    console = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        peft_config = _peft_config(model_args)
        config.model_init_kwargs = _init_kwargs(config.model_init_kwargs, model_args)
        result = train_run(
            method, _one_or_many(run_args.data), model=model_args.model_name_or_path, config=config,
            peft_config=peft_config, eval_data=_one_or_many(run_args.eval_data) if run_args.eval_data else None,
            data_format=run_args.data_format, extra_fields=run_args.extra_fields,
            run_config={"run": asdict(run_args), "model": asdict(model_args)},
            on_start=lambda trainer: _print_data_summary(console, trainer), progress=True,
        )
    except (DataError, ValueError, TypeError, OSError) as err:
        _fail(str(err))
    if config.process_index != 0:  # under torchrun every process returns here; one says so
        return
    if result.resumed_from:
        console.print(f"resumed from {result.resumed_from}")
    loss = result.metrics.get("train_loss", float("nan"))
    console.print(f"[green]done[/green]: {method} model written to {result.output_dir} (train_loss {loss:.4f})")


def _peft_config(model_args: Any) -> Any:
    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    targets = getattr(peft_config, "target_modules", None)
    if isinstance(targets, str) and targets.isidentifier():
        # One module name from the CLI arrives as a string, which PEFT reads as a full-match regex.
        peft_config.target_modules = [targets]
    return peft_config


def _init_kwargs(value: Any, model_args: Any) -> dict[str, Any]:
    """`--model_init_kwargs` (a JSON object) with TRL's model flags (dtype, revision, attention, 8/4-bit)."""
    from cutalign.trainer.base import init_kwargs

    kwargs = init_kwargs(value)
    kwargs.setdefault("dtype", model_args.dtype)
    kwargs.setdefault("revision", model_args.model_revision)
    if model_args.attn_implementation:
        kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    if model_args.load_in_8bit or model_args.load_in_4bit:
        from trl import get_kbit_device_map, get_quantization_config

        kwargs["quantization_config"] = get_quantization_config(model_args)
        kwargs.setdefault("device_map", get_kbit_device_map())
    return kwargs


def _print_data_summary(console: Any, trainer: Any) -> None:
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
    if trainer.drop_report:
        console.print(f"training data: {trainer.drop_report.describe(len(data))}")
        for line in trainer.drop_report.lines():
            console.print(f"  - {line}")
    if trainer.eval_drop_report:
        console.print(f"dropped evaluation examples: {trainer.eval_drop_report.total}")
        for line in trainer.eval_drop_report.lines():
            console.print(f"  - {line}")


@app.command()
def methods() -> None:
    """List the training methods of `cutalign train --method`."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from cutalign.trainer import METHODS

    table = Table("method", "what it trains", title="cutalign train --method NAME")
    for method in METHODS.values():
        table.add_row(method.name, escape(method.summary))
    Console().print(table)


# ---------------------------------------------------------------------------------------- argv
def _normalise_argv(argv: list[str]) -> list[str]:
    """`--flag=value` -> `--flag value`, `--max-steps` -> `--max_steps` (hyphen aliases), and `--model`
    as the short form of TRL's `--model_name_or_path`."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            out.extend(arg.split("=", 1))
        else:
            out.append(arg)
    out = [("--" + a[2:].replace("-", "_")) if a.startswith("--") and len(a) > 2 and _is_flag_name(a[2:]) else a
           for a in out]
    return ["--model_name_or_path" if a == "--model" else a for a in out]


def _is_flag_name(name: str) -> bool:
    return name.replace("-", "_").replace("_", "").isalnum()


def _read_yaml(argv: list[str]) -> dict[str, Any]:
    if "--config" not in argv:
        return {}
    i = argv.index("--config")
    if i + 1 >= len(argv):
        _fail("--config needs a YAML file")
    path = Path(argv[i + 1])
    if not path.is_file():
        _fail(f"config file {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        _fail(f"{path}: not a readable YAML file ({str(err).splitlines()[0]})")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        _fail(f"{path}: must be a YAML mapping of flag names to values, got {type(loaded).__name__}")
    return loaded


def _peek_method(argv: list[str], yaml_config: dict[str, Any]) -> str:
    """The method decides the config class, so read it before parsing (CLI flag wins over YAML)."""
    if "--method" in argv:
        i = argv.index("--method")
        if i + 1 < len(argv):
            return argv[i + 1]
    return str(yaml_config.get("method", "cut"))


def _check_names(parser: Any, argv: list[str], yaml_config: dict[str, Any]) -> None:
    """Unknown flags and YAML keys are errors with the close match ("did you mean --threshold?")."""
    names = {opt[2:] for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
    names.update(("model", "config"))
    for arg in argv:
        if arg.startswith("--") and _is_flag_name(arg[2:]) and arg[2:] not in names:
            _fail(f"unknown option {arg}{_suggest(arg[2:], names, '--')}")
    source = argv[argv.index("--config") + 1] if "--config" in argv else "config"
    for key in yaml_config:
        if str(key) not in names and key not in _YAML_ONLY_KEYS:
            _fail(f"{source}: unknown key '{key}'{_suggest(str(key), names, '')}")


def _suggest(name: str, names: set[str], prefix: str) -> str:
    close = difflib.get_close_matches(name.replace("-", "_"), sorted(names), n=1, cutoff=0.6)
    return f"; did you mean `{prefix}{close[0]}`?" if close else " (`cutalign train --help` lists every flag)"


def _one_or_many(sources: list[str]) -> str | list[str]:
    return sources[0] if len(sources) == 1 else sources


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
