"""`cutalign merge`: what comes after training (`generate` lives in cli/generate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cutalign.cli import app
from cutalign.generation.prompts import read_prompts  # noqa: F401  (moved; old import path kept)


@app.command()
def merge(
    adapter: Annotated[Path, typer.Argument(help="A LoRA adapter directory written by `cutalign train`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the merged model.")],
    dtype: Annotated[str, typer.Option(help="Weights dtype of the merged model (float32, bfloat16, float16).")] = "float32",
) -> None:
    """Merge a LoRA adapter into its base model and save it as safetensors (with its template)."""
    from cutalign.models import merge_adapter

    try:
        merged = merge_adapter(adapter, output, dtype=dtype)
    except (ValueError, OSError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"merged {adapter} into its base model: {merged}", err=True)
