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
    """Merge a LoRA adapter into its base model and save it as safetensors."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    if not (adapter / "adapter_config.json").is_file():
        typer.secho(f"error: {adapter} has no adapter_config.json (not a LoRA adapter directory)", fg="red", err=True)
        raise typer.Exit(2)
    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter), dtype=getattr(torch, dtype),
                                                     use_safetensors=True, trust_remote_code=False)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(output), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(output))
    card = adapter / "README.md"
    if card.is_file():
        (output / "README.md").write_text(card.read_text().replace("library_name: peft", "library_name: transformers"))
    typer.echo(f"merged {adapter} into its base model: {output}")
