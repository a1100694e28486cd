"""`create_app`: an OpenAI-compatible FastAPI app (`/v1/chat/completions`, `/v1/completions`,
`/v1/models`) over a `Generator`, with dynamic batching, SSE streaming and OpenAI-shaped errors.

Chat messages are rendered with the model's training template (the one `cutalign train` saved with
it, see `resolve_template`), so a served model is prompted exactly as `cutalign generate` prompts
it; `/v1/completions` prompts are used verbatim (encoded as in training).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cutalign.generation.base import GenerationResult, Generator, Prompt, SamplingParams
from cutalign.serve.batcher import Batcher
from cutalign.serve.protocol import APIError, ChatRequest, CompletionRequest, _Sampling, parse_body

DEFAULT_MAX_TOKENS = 256


def create_app(
    generator_or_model: Generator | str | Path,
    *,
    served_model_name: str | None = None,
    api_key: str | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 5.0,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    **load_options: Any,
) -> FastAPI:
    """The app for a generator, or for a model dir / adapter / hub id loaded with `load_options`
    (`dtype`, `template`, `chat_template`, `system_prompt`: see `TransformersGenerator.from_pretrained`).

    `api_key` set: every `/v1` request needs `Authorization: Bearer <api_key>`.
    """
    if isinstance(generator_or_model, str | Path):
        from cutalign.generation.transformers_backend import TransformersGenerator

        generator: Any = TransformersGenerator.from_pretrained(str(generator_or_model), batch_size=max_batch_size,
                                                               **load_options)
    elif load_options:
        raise TypeError(f"load options {sorted(load_options)} only apply when a model path is given")
    else:
        generator = generator_or_model
    name = served_model_name or generator.name
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = Batcher(generator, max_batch_size=max_batch_size, wait_s=batch_wait_ms / 1000)
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()

    app = FastAPI(title="cutalign serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.generator = generator
    app.state.model_name = name

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, err: Exception) -> JSONResponse:
        body = APIError(500, f"the server failed: {type(err).__name__}: {err}", type="server_error").body()
        return JSONResponse(body, status_code=500)

    def check(request: Request, model: str | None = None) -> None:
        if api_key is not None:
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(given.encode(), api_key.encode()):
                raise APIError(401, "missing or incorrect API key (send Authorization: Bearer <key>)",
                               code="invalid_api_key")
        if model is not None and model != name:
            raise APIError(404, f"the model '{model}' does not exist; this server serves '{name}'",
                           param="model", code="model_not_found")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check(request)
        return {"object": "list", "data": [_model_card(name, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        check(request, model_id)
        return _model_card(name, created)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check(request)
        body: ChatRequest = parse_body(await request.body(), ChatRequest)
        check(request, body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        limit = body.max_completion_tokens or body.max_tokens
        params = _params(body, _budget(generator, messages, limit, default_max_tokens, "messages"))
        job = request.app.state.batcher.submit(messages, params, body.seed, stream=bool(body.stream))
        if body.stream:
            return _sse(_chat_chunks(job, name))
        return _chat_response(await job.future, name)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        check(request)
        body: CompletionRequest = parse_body(await request.body(), CompletionRequest)
        check(request, body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or (body.stream and len(prompts) > 1):
            raise APIError(400, "prompt must be a string or a non-empty list of strings (one when streaming)",
                           param="prompt")
        budgets = [_budget(generator, p, body.max_tokens, default_max_tokens, "prompt") for p in prompts]
        batcher = request.app.state.batcher
        jobs = [batcher.submit(p, _params(body, b), None if body.seed is None else body.seed + i,
                               stream=bool(body.stream)) for i, (p, b) in enumerate(zip(prompts, budgets, strict=True))]
        if body.stream:
            return _sse(_completion_chunks(jobs[0], name))
        return _completion_response([await job.future for job in jobs], name)

    return app


def _model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "cutalign"}


def _budget(generator: Any, prompt: Prompt, requested: int | None, default: int, param: str) -> int:
    """Completion tokens for this request, or a 400 when the prompt (plus the request) exceeds the context."""
    encode = getattr(generator, "encode", None)
    context = getattr(generator, "max_context", None)
    if encode is None:
        return requested or default
    try:
        prompt_tokens = len(encode(prompt))
    except ValueError as err:  # e.g. a system message for an Alpaca-trained model
        raise APIError(400, str(err), param=param) from err
    if context is None:
        return requested or default
    wanted = requested or min(default, context - prompt_tokens)
    if prompt_tokens + max(wanted, 1) > context:
        raise APIError(400, f"this model's maximum context length is {context} tokens; the request needs "
                            f"{prompt_tokens + max(wanted, 1)} ({prompt_tokens} in the {param}, {max(wanted, 1)} "
                            "in the completion). Shorten the prompt or lower max_tokens.",
                       param=param, code="context_length_exceeded")
    return wanted


def _params(body: _Sampling, max_tokens: int) -> SamplingParams:
    """OpenAI semantics: temperature defaults to 1 (sampling); 0 means greedy."""
    temperature = 1.0 if body.temperature is None else body.temperature
    sample = temperature > 0
    return SamplingParams(max_new_tokens=max_tokens, do_sample=sample, temperature=temperature if sample else 1.0,
                          top_p=body.top_p if (sample and body.top_p is not None) else 1.0, stop=tuple(body.stop or ()))


def _usage(results: list[GenerationResult]) -> dict[str, int]:
    prompt = sum(r.prompt_tokens or 0 for r in results)
    completion = sum(r.completion_tokens or 0 for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chat_response(result: GenerationResult, name: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": name, "usage": _usage([result]),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason, "logprobs": None}]}


def _completion_response(results: list[GenerationResult], name: str) -> dict[str, Any]:
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": name, "usage": _usage(results),
            "choices": [{"index": i, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
                        for i, r in enumerate(results)]}


def _sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _events(job: Any) -> AsyncIterator[tuple[str, Any]]:
    while True:
        kind, value = await job.events.get()
        if kind == "error":
            raise value
        yield kind, value
        if kind == "done":
            return


async def _chat_chunks(job: Any, name: str) -> AsyncIterator[dict[str, Any]]:
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": name}
    yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    async for kind, value in _events(job):
        if kind == "text":
            yield {**head, "choices": [{"index": 0, "delta": {"content": value}, "finish_reason": None}]}
        else:
            yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": value.finish_reason}],
                   "usage": _usage([value])}


async def _completion_chunks(job: Any, name: str) -> AsyncIterator[dict[str, Any]]:
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": name}
    async for kind, value in _events(job):
        if kind == "text":
            yield {**head, "choices": [{"index": 0, "text": value, "finish_reason": None, "logprobs": None}]}
        else:
            yield {**head, "choices": [{"index": 0, "text": "", "finish_reason": value.finish_reason, "logprobs": None}],
                   "usage": _usage([value])}
