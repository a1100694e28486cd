"""The OpenAI-compatible backend: any `/v1` endpoint (OpenAI, vLLM, `cutalign serve`, llama.cpp ...).

Built on the official `openai` client. Requests run concurrently (a thread pool, `concurrency` at
most in flight); rate limits, server errors, timeouts and dropped connections are retried with
exponential backoff (honouring `Retry-After`), here rather than inside the client so the schedule
is explicit and a restarted server is waited for. A request the endpoint refuses (400/422: e.g. a
prompt over its context) becomes a result with `error` set; a wrong key, model or URL, or an
endpoint still down after every retry, stops the run with :class:`GenerationError`.

The API key is read from the environment variable named by `api_key_env` (default
`OPENAI_API_KEY` for api.openai.com, none for a `base_url`); it is never logged, printed or written.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from cutalign.generation.base import GenerationError, GenerationResult, Prompt, SamplingParams

RETRYABLE_STATUS = (408, 409, 429)


class OpenAIGenerator:
    """A `Generator` over an OpenAI-compatible endpoint (`endpoint="chat"` or `"completions"`)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        endpoint: Literal["chat", "completions"] = "chat",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        system_prompt: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        import openai

        if api_key_env is None and base_url is None:
            api_key_env = "OPENAI_API_KEY"  # api.openai.com always needs one
        key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not key:
            raise ValueError(f"environment variable {api_key_env} is not set (it must hold the API key)")
        # A local server without --api_key_env needs no key; the client insists on a non-empty string.
        self.client = openai.OpenAI(base_url=base_url, api_key=key or "EMPTY", timeout=timeout, max_retries=0)
        self.name = model
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.system_prompt = system_prompt
        self.sleep = sleep
        self.retries = 0  # requests re-sent after a retryable failure, over this generator's life

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIGenerator(model={self.name!r}, base_url={str(self.client.base_url)!r}, endpoint={self.endpoint!r})"

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, seeds: Sequence[int] | None = None,
    ) -> list[GenerationResult]:
        """One result per prompt, in input order; requests run `concurrency` at a time."""
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if seeds is None and params.seed is not None:
            seeds = [params.seed + i for i in range(len(prompts))]
        jobs = [(p, None if seeds is None else seeds[i]) for i, p in enumerate(prompts)]
        if len(jobs) <= 1:
            return [self._one(p, params, s) for p, s in jobs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
            return list(pool.map(lambda job: self._one(job[0], params, job[1]), jobs))

    def _one(self, prompt: Prompt, params: SamplingParams, seed: int | None) -> GenerationResult:
        import openai

        request = self._request(prompt, params, seed)
        for attempt in range(self.max_retries + 1):
            try:
                return self._call(request)
            except openai.APIStatusError as err:
                if err.status_code in (400, 413, 422):  # this request only: record it, go on
                    return GenerationResult(text="", finish_reason="error", error=_error_message(err))
                if not _retryable(err) or attempt == self.max_retries:
                    raise GenerationError(self._failure(err, attempt)) from err
                delay = _retry_after(err)
            except (openai.APIConnectionError, openai.APITimeoutError) as err:  # timeout is a connection error
                if attempt == self.max_retries:
                    raise GenerationError(self._failure(err, attempt)) from err
                delay = None
            self.retries += 1
            self.sleep(delay if delay is not None else self._backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, prompt: Prompt, params: SamplingParams, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.name, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature if params.do_sample else 0.0}
        if params.do_sample and params.top_p < 1:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        if self.endpoint == "completions":
            if not isinstance(prompt, str):
                raise ValueError("the completions endpoint takes text prompts; use endpoint='chat' for messages")
            body["prompt"] = prompt
            return body
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        body["messages"] = messages
        return body

    def _call(self, request: dict[str, Any]) -> GenerationResult:
        if self.endpoint == "chat":
            response = self.client.chat.completions.create(**request)
            choice = response.choices[0]
            text = choice.message.content or ""
        else:
            response = self.client.completions.create(**request)
            choice = response.choices[0]
            text = choice.text or ""
        usage = response.usage
        return GenerationResult(
            text=text.strip(), finish_reason=choice.finish_reason,
            prompt_tokens=getattr(usage, "prompt_tokens", None), completion_tokens=getattr(usage, "completion_tokens", None),
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential with full jitter, so many clients do not retry in lockstep."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    def _failure(self, err: Exception, attempt: int) -> str:
        where = f"{self.client.base_url} (model {self.name!r})"
        if attempt:
            return f"{where}: still failing after {attempt + 1} attempts: {_error_message(err)}"
        return f"{where}: {_error_message(err)}"


def _retryable(err: Any) -> bool:
    return err.status_code in RETRYABLE_STATUS or err.status_code >= 500


def _retry_after(err: Any) -> float | None:
    """The server's `Retry-After` in seconds (capped at a minute), if it sent one."""
    value = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def _error_message(err: Exception) -> str:
    """The endpoint's own error message (OpenAI's JSON body shape) or the exception's text."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            status = getattr(err, "status_code", None)
            return f"HTTP {status}: {inner['message']}" if status else str(inner["message"])
    return f"{type(err).__name__}: {err}"
