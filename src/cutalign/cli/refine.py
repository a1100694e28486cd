"""`cutalign refine`: generate the refined responses y_hat = model(x, y, j) that ILF-MLE / ILF-DPO train on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from cutalign.cli import app

BAD_INPUT = 2


@app.command()
def refine(
    model: Annotated[str, typer.Option("--model", help="Model dir, adapter dir or hub id that writes the refinements "
                                                       "(openai backend: the served model name).")],
    data: Annotated[list[Path], typer.Option("--data", help="Judged data: files or folders (repeatable).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Canonical JSONL to write (appended to on resume).")],
    data_format: Annotated[str, typer.Option(
        "--format", "-f", "--data_format", help="Format of --data: canonical or a converter name (e.g. shepherd).",
    )] = "canonical",
    prompt_template: Annotated[str | None, typer.Option(
        "--prompt_template", "--prompt-template",
        help="Refinement prompt: a file or a string with {instruction}, {response}, {judgment} (default: built in).",
    )] = None,
    backend: Annotated[str, typer.Option("--backend", help="transformers, openai or vllm.")] = "transformers",
    template: Annotated[str | None, typer.Option(
        "--template", help="How the request is shown to the model: 'alpaca' or 'chat' (default: saved with the "
                           "model, else alpaca).")] = None,
    chat_template: Annotated[str | None, typer.Option(
        "--chat_template", "--chat-template", help="Chat template: a built-in name (llama2, chatml, zephyr) or a "
                                                   "Jinja file.")] = None,
    system_prompt: Annotated[str | None, typer.Option(
        "--system_prompt", "--system-prompt", help="System message (chat template).")] = None,
    batch_size: Annotated[int, typer.Option("--batch_size", "--batch-size",
                                            help="Requests per generate() call and per write.")] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max_new_tokens", "--max-new-tokens",
                                                help="Tokens per refinement.")] = 512,
    max_prompt_length: Annotated[int | None, typer.Option(
        "--max_prompt_length", "--max-prompt-length", help="Keep only the last N tokens of long requests.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Model dtype.")] = "auto",
    base_url: Annotated[str | None, typer.Option("--base_url", "--base-url", help="openai backend: the endpoint.")
                        ] = None,
    api_key_env: Annotated[str | None, typer.Option(
        "--api_key_env", "--api-key-env", help="openai backend: environment variable holding the API key.")] = None,
    score_threshold: Annotated[float, typer.Option(
        "--score_threshold", "--score-threshold", help="A score at or above this makes an unlabelled example "
                                                       "positive.")] = 7.0,
    positive_pattern: Annotated[str | None, typer.Option(
        "--positive_pattern", "--positive-pattern", help="Regex: an unlabelled example whose judgment matches it is "
                                                         "positive.")] = None,
) -> None:
    """Write every example to --output with a refinement for each negative that lacks one.

    Resumable: run the same command again after an interruption and only the examples not yet in
    --output are generated. Positives and examples with a refinement are copied unchanged.
    """
    from cutalign.cli.generate import build_generator
    from cutalign.data.converters import load_judged
    from cutalign.data.schema import DataError, PolarityRule
    from cutalign.files import ForeignOutputError
    from cutalign.generation import GenerationError, SamplingParams
    from cutalign.refine import load_prompt_template, needs_refinement, refine_examples

    console = Console(stderr=True)
    if any(output.resolve() == path.resolve() for path in data):
        _fail(f"--output {output} is one of the --data files; write the refined data to a new file")
    try:
        prompt = load_prompt_template(prompt_template)
        params = SamplingParams(max_new_tokens=max_new_tokens)
        rule = PolarityRule(score_threshold=score_threshold, positive_pattern=positive_pattern)
        judged = load_judged(data[0] if len(data) == 1 else data, data_format, rule=rule)
        dataset, dropped = judged.dataset, judged.report
    except (DataError, ValueError, OSError) as err:
        _fail(str(err))
    for line in dropped.lines():
        console.print(f"dropped {line}", highlight=False, soft_wrap=True)
    examples = dataset.to_list()
    console.print(f"{len(examples)} examples, {sum(map(needs_refinement, examples))} need a refinement")
    try:
        generator, _, described = build_generator(
            backend, model, dtype=dtype, template=template, chat_template=chat_template, system_prompt=system_prompt,
            batch_size=batch_size, base_url=base_url, api_key_env=api_key_env, concurrency=batch_size,
            max_prompt_length=max_prompt_length)
    except (ValueError, ImportError, OSError) as err:
        _fail(str(err))
    console.print(f"refining with {generator.name} ({backend}), template: {described}", highlight=False)
    render = generator.template.plain if hasattr(generator, "template") else None
    from tqdm.auto import tqdm

    with tqdm(total=len(examples), desc="refining", unit="example") as bar:
        try:
            result = refine_examples(examples, output, generator, params, render=render, prompt_template=prompt,
                                     batch_size=batch_size, on_batch=bar.update)
        except (DataError, ForeignOutputError, GenerationError, ValueError) as err:
            _fail(str(err))
    failed = f", {result.failed} failed (rerun to retry): {dict(result.errors)}" if result.failed else ""
    console.print(f"[green]done[/green]: {output}: {result.refined} refined ({result.empty} empty), "
                  f"{result.copied} copied, {result.resumed} already there from an earlier run{failed}")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(BAD_INPUT)
