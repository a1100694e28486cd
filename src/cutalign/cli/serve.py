"""`cutalign serve MODEL`: an OpenAI-compatible server (`/v1/chat/completions`, `/v1/completions`, `/v1/models`)."""

from __future__ import annotations

from typing import Annotated

import typer

from cutalign.cli import app


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="Model dir, merged checkpoint, LoRA adapter dir or hub id.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default; 0.0.0.0 exposes it).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    api_key_env: Annotated[str | None, typer.Option(
        "--api_key_env", "--api-key-env", help="Require `Authorization: Bearer <key>`, the key read from this "
                                               "environment variable.")] = None,
    served_model_name: Annotated[str | None, typer.Option(
        "--served_model_name", "--served-model-name", help="The model name clients send (default: MODEL).")] = None,
    template: Annotated[str | None, typer.Option(
        "--template", help="'alpaca' or 'chat' (default: the one saved with the model, else alpaca).")] = None,
    chat_template: Annotated[str | None, typer.Option(
        "--chat_template", "--chat-template", help="Chat template: a built-in name (llama2, chatml, zephyr) or a "
                                                   "Jinja file (default: saved with the model / the tokenizer's).")] = None,
    system_prompt: Annotated[str | None, typer.Option(
        "--system_prompt", "--system-prompt", help="System message added to chats without one (chat template).")] = None,
    max_new_tokens: Annotated[int, typer.Option(
        "--max_new_tokens", "--max-new-tokens", help="Completion tokens when a request sets no max_tokens.")] = 256,
    max_batch_size: Annotated[int, typer.Option(
        "--max_batch_size", "--max-batch-size", help="Concurrent requests generated as one batch.")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch_wait_ms", "--batch-wait-ms", help="How long the first request waits for others to join its batch.")
                             ] = 5.0,
    dtype: Annotated[str, typer.Option("--dtype", help="Model dtype (auto, float32, bfloat16, float16).")] = "auto",
) -> None:
    """Serve a model over the OpenAI API (as `vllm serve` does at scale); Ctrl-C stops it."""
    from cutalign.data.templates import resolve_template_settings
    from cutalign.generation.transformers_backend import TransformersGenerator
    from cutalign.serve.server import api_key_from_env
    from cutalign.serve.server import serve as run_server

    try:
        api_key_from_env(api_key_env)
        settings = resolve_template_settings(model, template=template, chat_template=chat_template,
                                             system_prompt=system_prompt)
        generator = TransformersGenerator.from_pretrained(
            model, dtype=dtype, template=template, chat_template=chat_template, system_prompt=system_prompt,
            batch_size=max_batch_size, name=served_model_name or model)
    except (ValueError, OSError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(2) from err
    key_note = f", bearer key from ${api_key_env}" if api_key_env else ""
    typer.echo(f"serving {model} as '{generator.name}' on http://{host}:{port}/v1 "
               f"(template {settings.describe()}{key_note})", err=True)
    run_server(generator, host=host, port=port, api_key_env=api_key_env, max_batch_size=max_batch_size,
               batch_wait_ms=batch_wait_ms, default_max_tokens=max_new_tokens)
