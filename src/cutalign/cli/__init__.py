"""The `cutalign` command line: one Typer app, one module per command group."""

from __future__ import annotations

import logging
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


class _PlainHelp:
    """Flags (`--help`, `--force`, `--do_sample/--no_do_sample`) show without the `<bool>` type Typer's
    rich help gives them."""

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Group(_PlainHelp, TyperGroup):
    pass


class Command(_PlainHelp, TyperCommand):
    pass


app = typer.Typer(
    name="cutalign",
    help="Align language models with natural-language judgments (Contrastive Unlikelihood Training).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)


def _register() -> None:
    # Command groups register themselves on import; each lives in its own module.
    import cutalign.cli.lab  # noqa: F401
    from cutalign.cli import data, demo, eval, generate, inspect, judge, model, online, refine, serve, train  # noqa: F401

    _plain_help(app)


def _plain_help(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
    from typer.models import DefaultPlaceholder

    for group in typer_app.registered_groups:
        if group.cls in (None, TyperGroup) or isinstance(group.cls, DefaultPlaceholder):
            group.cls = Group
        if group.typer_instance is not None:
            _plain_help(group.typer_instance)


def configure_logging(level: int = logging.INFO) -> None:
    """Once per process: cutalign's log lines through one rich handler on stderr (the library adds
    no handler and never calls `logging.basicConfig`, so nothing is printed twice)."""
    from rich.console import Console
    from rich.logging import RichHandler

    root = logging.getLogger("cutalign")
    if any(getattr(h, "_cutalign", False) for h in root.handlers):
        return
    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)
    handler._cutalign = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def main() -> None:
    _register()
    configure_logging()
    app()
