"""`cutalign merge` and `cutalign generate`: what comes after training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cutalign.cli import app


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


@app.command()
def generate(
    model: Annotated[str, typer.Option("--model", help="Model dir, adapter dir or hub id.")],
    data: Annotated[Path, typer.Option("--data", help="JSON/JSONL of records with `prompt` (or `instruction`/`input`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL: id, prompt, completion.")],
    template: Annotated[str, typer.Option(help="'alpaca' (the paper's inference template) or 'chat'.")] = "alpaca",
    system_prompt: Annotated[str | None, typer.Option(help="With --template chat: the system message used in "
                                                           "training (--system_prompt of train).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per response.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate() call.")] = 8,
    do_sample: Annotated[bool, typer.Option(help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (with --do-sample).")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (with --do-sample).")] = 1.0,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    dtype: Annotated[str, typer.Option(help="Model dtype.")] = "auto",
) -> None:
    """Generate responses for a file of prompts (greedy by default) into JSONL."""
    from cutalign.data.schema import DataError
    from cutalign.generation import generate_responses, load_for_inference, write_generations

    try:
        records = read_prompts(data)
    except DataError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from err
    records = records[:limit] if limit is not None else records
    lm, tokenizer = load_for_inference(model, dtype=dtype)
    responses = generate_responses(
        lm, tokenizer, [r["prompt"] for r in records], prompt_template(template, tokenizer, system_prompt),
        max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
        temperature=temperature, top_p=top_p,
    )
    write_generations(output, records, responses)
    typer.echo(f"wrote {len(responses)} responses to {output}")


def prompt_template(name: str, tokenizer: Any, system_prompt: str | None):
    """The training template by name; a system prompt only exists in the chat template."""
    from cutalign.data.templates import get_template

    if system_prompt is not None:
        if name != "chat":
            raise typer.BadParameter("--system-prompt needs --template chat", param_hint="--system-prompt")
        return get_template("chat", tokenizer, system_prompt=system_prompt)
    return get_template(name, tokenizer)


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """Records with an id and a prompt; `instruction` + `input` (Alpaca style) also accepted."""
    from cutalign.data.io import read_records
    from cutalign.data.schema import DataError

    records = []
    for record in read_records(path):
        raw, source, line = record.raw, record.source, record.line
        if "prompt" in raw:
            prompt = raw["prompt"]
        elif isinstance(raw.get("instruction"), str):
            extra = raw.get("input") or ""
            prompt = raw["instruction"] + ("\n" + extra if isinstance(extra, str) and extra.strip() else "")
        else:
            raise DataError(source, line, "prompt",
                            f"expected a `prompt` (or `instruction`) field, got keys {sorted(raw)}")
        if not (isinstance(prompt, str) and prompt.strip()) and not isinstance(prompt, list):
            raise DataError(source, line, "prompt", "must be a non-empty string or a list of messages")
        records.append({"id": raw.get("id", f"{Path(source).name}:{line}"), "prompt": prompt})
    return records
