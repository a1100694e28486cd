"""`cutalign online`: the online loop (generate -> judge -> CUT -> merge, K times) over `run_online`.

Every key of `OnlineConfig` is a flag, generated from the dataclass so the two never drift apart;
mapping keys (`train`, `judge_options`) take repeated `KEY=VALUE` flags.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from cutalign.cli import app
from cutalign.online.config import FIELDS, OnlineConfig

_RUN_PARAMS = [
    ("config", Annotated[Path | None, typer.Option("--config", help="YAML file of online settings (keys as "
                                                                         "the flags below).")], None),
    ("run_dir", Annotated[Path, typer.Option("--run_dir", "--run-dir", "--output_dir", "--output-dir",
                                             help="Run directory (resumed when it exists).")], Path("runs/online")),
    ("iterations", Annotated[int, typer.Option("--iterations", help="Iterations to reach (a rerun with more "
                                                                     "continues the run).")], 3),
    ("force", Annotated[bool, typer.Option("--force", help="Continue a started run with a changed config.")], False),
    ("progress", Annotated[bool, typer.Option("--progress/--no_progress", help="Progress bars on stderr.")], True),
]


def _flag_type(f: dataclasses.Field) -> Any:
    if f.name in ("train", "judge_options"):
        return list[str] | None
    if f.name == "lora_target_modules":
        return list[str] | None
    base = {bool: bool, int: int, float: float}.get(type(f.default), str)
    return base | None


def _field_param(f: dataclasses.Field) -> inspect.Parameter:
    names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
    help_text = f.metadata.get("help", "")
    if f.name in ("train", "judge_options"):
        help_text += " Repeat KEY=VALUE."
    if type(f.default) is bool:
        names = [f"--{f.name}/--no_{f.name}"]
    option = typer.Option(*names, help=help_text, show_default=False)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[_flag_type(f), option])


def online(**kwargs: Any) -> None:
    """Run the online loop; with no config, on the built-in fact world (tiny model, CPU, a few minutes)."""
    from cutalign.data.schema import DataError
    from cutalign.online import ConfigChangedError, resolve_config, run_online
    from cutalign.online.config import parse_assignments

    run_args = {name: kwargs.pop(name) for name, _, _ in _RUN_PARAMS}
    try:
        for key in ("train", "judge_options"):
            if kwargs.get(key):
                kwargs[key] = parse_assignments(kwargs[key], f"--{key}")
        config = resolve_config(run_args["config"], kwargs)
        result = run_online(config, run_args["run_dir"], iterations=run_args["iterations"],
                            force=run_args["force"], progress=run_args["progress"])
    except (ConfigChangedError, DataError, ValueError, RuntimeError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from err
    _print_summary(result, config)


def _print_summary(result: Any, config: OnlineConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cutalign online: {result.run_dir}", show_header=True)
    for column in ("iter", "satisfactory rate", "train loss", "unlikely_fraction", f"eval {config.eval_metric}",
                   "seconds: generate / judge / train / merge / eval"):
        table.add_column(column, justify="right")
    for row in result.rows:
        seconds = row["seconds"]
        if row["iteration"] == 0:
            timing = "base " + " / ".join(f"{seconds[s]:.1f}" for s in ("base", "base_eval") if s in seconds)
        else:
            timing = " / ".join(f"{seconds.get(s, 0.0):.1f}" for s in ("generate", "judge", "train", "merge", "eval"))
        rate = row["satisfactory_rate"]
        satisfactory = f"{rate:.1%} ({row['satisfactory']}/{row['prompts']})" if rate is not None else "-"
        table.add_row(str(row["iteration"]), satisfactory, _fmt(row["train_loss"]), _fmt(row["unlikely_fraction"]),
                      _fmt(row["eval"].get(config.eval_metric)), timing)
    console = Console()
    console.print(table)
    console.print("satisfactory rate: the judged share of iteration k's generations (policy before its training); "
                  "eval: after it (row 0: the starting policy).")
    console.print(f"final model: {result.final_model}\ncurves: {result.plot}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


_params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
           for name, annotation, default in _RUN_PARAMS] + [_field_param(f) for f in FIELDS.values()]
online.__signature__ = inspect.Signature(_params)  # type: ignore[attr-defined]
online.__annotations__ = {p.name: p.annotation for p in _params} | {"return": None}
app.command(name="online")(online)
