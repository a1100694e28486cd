"""The `cutalign` command line: one Typer app, one module per command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="cutalign",
    help="Align language models with natural-language judgments (Contrastive Unlikelihood Training).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Command groups register themselves on import; each lives in its own module.
    from cutalign.cli import data, demo, eval, generate, inspect, judge, model, online, refine, serve, train  # noqa: F401


def main() -> None:
    _register()
    app()
