"""`cutalign train`: any method, any config field as `--field_name` or YAML key (TRL's parser)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from cutalign.cli import app

logger = logging.getLogger("cutalign")


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
    method: str = field(default="cut", metadata={"help": "Training method (see `cutalign methods`)."})


_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_CONTEXT, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train a model on judged data. `cutalign train --method cut --help` lists every flag."""
    argv = _normalise_argv(list(ctx.args))
    method = _peek_method(argv)
    from cutalign.trainer import METHODS

    if method not in METHODS:
        raise typer.BadParameter(f"unknown method {method!r}; choose from {', '.join(METHODS)}", param_hint="--method")
    config_cls, trainer_cls = METHODS[method].load()
    from trl import ModelConfig, TrlParser

    parser = TrlParser((RunArguments, config_cls, ModelConfig), prog=f"cutalign train --method {method}")
    if "--help" in argv or "-h" in argv:
        parser.print_help()
        raise typer.Exit(0)
    try:
        run_args, config, model_args = parser.parse_args_and_config(argv)
    except (ValueError, SystemExit) as err:
        if isinstance(err, SystemExit) and not err.code:
            raise
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from err
    from cutalign.run import run_training

    run_training(method, run_args, config, model_args, trainer_cls)


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


def _normalise_argv(argv: list[str]) -> list[str]:
    """Accept `--model` as the short form of TRL's `--model_name_or_path`, and `--flag=value`."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            out.extend(arg.split("=", 1))
        else:
            out.append(arg)
    return ["--model_name_or_path" if a == "--model" else a for a in out]


def _peek_method(argv: list[str]) -> str:
    """The method decides the config class, so read it before parsing (CLI flag wins over YAML)."""
    if "--method" in argv:
        i = argv.index("--method")
        if i + 1 < len(argv):
            return argv[i + 1]
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 < len(argv):
            path = Path(argv[i + 1])
            if not path.is_file():
                typer.secho(f"error: config file {path} not found", fg="red", err=True)
                raise typer.Exit(2)
            loaded = yaml.safe_load(path.read_text()) or {}
            if isinstance(loaded, dict) and "method" in loaded:
                return str(loaded["method"])
    return "cut"


SECRET_KEY_PARTS = ("secret", "password", "api_key", "apikey")


def dump_run_config(path: Path, **parts: Any) -> None:
    """Save the resolved run configuration, without secrets at any depth (tokens, keys, passwords)."""
    merged: dict[str, Any] = {}
    for part in parts.values():
        merged.update(part)
    path.write_text(yaml.safe_dump(_without_secrets(json.loads(json.dumps(merged, default=str))), sort_keys=True))


def _is_secret(key: str) -> bool:
    return key == "token" or key.endswith("_token") or any(part in key for part in SECRET_KEY_PARTS)


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if not _is_secret(str(k).lower())}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
