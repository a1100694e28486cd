"""`cutalign generate`: answer a file of prompts into resumable JSONL, with the model's own template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cutalign.cli import app


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def generate(
    model: Annotated[str, typer.Option("--model", help="Model dir, adapter dir or hub id (openai backend: the "
                                                       "served model name).")],
    data: Annotated[Path, typer.Option("--data", help="JSON/JSONL of records with `prompt` (a string or chat "
                                                      "messages), `messages`, or `instruction`/`input`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL: id, prompt, completion (appended "
                                                               "to on resume).")],
    backend: Annotated[str, typer.Option("--backend", help="transformers, openai (any OpenAI-compatible "
                                                           "endpoint) or vllm (the optional vllm extra).")
                       ] = "transformers",
    template: Annotated[str | None, typer.Option(
        "--template", help="'alpaca' or 'chat' (default: the one saved with the model, else alpaca).")] = None,
    chat_template: Annotated[str | None, typer.Option(
        "--chat_template", "--chat-template", help="Chat template: a built-in name (llama2, chatml, zephyr) or a "
                                                   "Jinja file (default: saved with the model / the tokenizer's).")] = None,
    system_prompt: Annotated[str | None, typer.Option(
        "--system_prompt", "--system-prompt", help="System message (chat template; default: the one used in "
                                                   "training).")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max_new_tokens", "--max-new-tokens",
                                                help="Tokens to generate per response.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch_size", "--batch-size",
                                            help="Prompts per generate() call and per write.")] = 8,
    do_sample: Annotated[bool, typer.Option("--do_sample", "--do-sample",
                                            help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature (with --do_sample).")
                           ] = 1.0,
    top_p: Annotated[float, typer.Option("--top_p", "--top-p", help="Nucleus sampling (with --do_sample).")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed (one per prompt id, derived from it).")] = 42,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N prompts.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Model dtype (transformers, vllm).")] = "auto",
    base_url: Annotated[str | None, typer.Option("--base_url", "--base-url",
                                                 help="openai backend: the endpoint, e.g. http://127.0.0.1:8000/v1.")
                        ] = None,
    api_key_env: Annotated[str | None, typer.Option(
        "--api_key_env", "--api-key-env", help="openai backend: environment variable holding the API key.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="openai backend: requests in flight.")] = 8,
) -> None:
    """Generate responses for a file of prompts (greedy by default) into JSONL; rerun to resume."""
    from tqdm.auto import tqdm

    from cutalign.data.schema import DataError
    from cutalign.files import ForeignOutputError
    from cutalign.generation import GenerationError, SamplingParams
    from cutalign.generation.jsonl import generate_jsonl
    from cutalign.generation.prompts import read_prompts

    if output.exists() and data.exists() and output.resolve() == data.resolve():
        _fail(f"--output {output} is the --data file; write the responses to a new file")
    try:
        params = SamplingParams(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                                top_p=top_p, seed=seed)
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        records = read_prompts(data, with_location=True)[:limit]
        generator, render, described = build_generator(backend, model, dtype=dtype, template=template,
                                                       chat_template=chat_template, system_prompt=system_prompt,
                                                       batch_size=batch_size, base_url=base_url,
                                                       api_key_env=api_key_env, concurrency=concurrency)
        _check_renders(records, render)
    except (DataError, ValueError, ImportError, OSError) as err:
        _fail(str(err))
    typer.echo(f"{len(records)} prompts, {generator.name} ({backend}), template: {described}", err=True)
    with tqdm(total=len(records), desc="generating", unit="prompt") as bar:
        try:
            summary = generate_jsonl([{"id": r["id"], "prompt": r["prompt"]} for r in records], output, generator,
                                     params, render=render, batch_size=batch_size, on_batch=bar.update)
        except (ForeignOutputError, GenerationError) as err:
            _fail(str(err))
    for line in summary.lines():
        typer.echo(line, err=True)
    typer.echo(f"wrote {output}")
    if summary.errors:
        raise typer.Exit(1)


def build_generator(backend: str, model: str, *, dtype: str, template: str | None, chat_template: str | None,
                    system_prompt: str | None, batch_size: int, base_url: str | None, api_key_env: str | None,
                    concurrency: int, max_prompt_length: int | None = None) -> tuple[Any, Any, str]:
    """The generator, how a prompt is turned into its input (None: sent as is, the server renders it),
    and the template in words. Shared by `generate` and `refine`."""
    from cutalign.data.templates import render_chat, resolve_template_settings
    from cutalign.generation import make_generator

    if backend == "openai":
        if template is not None or chat_template is not None:
            raise ValueError("with --backend openai the server applies the model's template; drop --template / "
                             "--chat_template")
        generator = make_generator("openai", model=model, base_url=base_url, api_key_env=api_key_env,
                                   concurrency=concurrency, system_prompt=system_prompt)
        return generator, None, "applied by the server (chat endpoint)"
    if base_url is not None or api_key_env is not None:
        raise ValueError("--base_url / --api_key_env only apply to --backend openai")
    settings = resolve_template_settings(model, template=template, chat_template=chat_template,
                                         system_prompt=system_prompt)
    options: dict[str, Any] = {"dtype": dtype, "template": template, "chat_template": chat_template,
                               "system_prompt": system_prompt}
    if max_prompt_length is not None:
        options.update(max_prompt_length=max_prompt_length)
    if backend == "transformers":
        options.update(batch_size=batch_size)
    generator = make_generator(backend, model=model, **options)
    return generator, lambda prompt: render_chat(generator.template, prompt), settings.describe()


def _check_renders(records: list[dict[str, Any]], render: Any) -> None:
    """Every prompt renders under the model's template, checked before any generation starts."""
    from cutalign.data.schema import DataError

    if render is None:
        return
    for record in records:
        try:
            render(record["prompt"])
        except (ValueError, TypeError) as err:
            source, line = record["where"]
            raise DataError(source, line, "prompt", str(err)) from err
