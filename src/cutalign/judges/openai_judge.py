"""A judge behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, `cutalign serve`, ...).

Requests go through the official `openai` client with its own retries turned off: this module
retries 408/409/429/5xx answers, timeouts, dropped connections and malformed bodies itself, with
exponential backoff (and the server's `Retry-After`), so that every failure is classified and
counted per kind. The API key is read from the environment variable named by `api_key_env` and
held only by the client: it is never logged, returned or written.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion

from cutalign.judges.base import Judgment, Preference, Prompt
from cutalign.judges.guard import TRANSIENT_ERRORS
from cutalign.judges.prompts import (
    PAIRWISE_SYSTEM_PROMPT,
    PAIRWISE_USER_TEMPLATE,
    ChatPrompt,
    instruction_text,
    parse_annotation,
    parse_preference,
)

LOCAL_PLACEHOLDER_KEY = "EMPTY"  # what local servers without authentication accept (vLLM's convention)
T = TypeVar("T")


class ReplyError(Exception):
    """A request that failed: `kind` is one of TRANSIENT_ERRORS or "api_error" (not retried)."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


def resolve_api_key(api_key_env: str | None, base_url: str | None) -> str:
    """The key from `$api_key_env`; a local endpoint (base_url given) may run without one."""
    name = api_key_env or "OPENAI_API_KEY"
    key = os.environ.get(name)
    if key:
        return key
    if base_url is not None and not api_key_env:
        return LOCAL_PLACEHOLDER_KEY
    raise ValueError(f"environment variable {name} is not set (it must hold the judge API key)")


def classify(err: Exception) -> ReplyError:
    """Map an `openai`/parsing exception to a failure kind (and the server's Retry-After, if any)."""
    if isinstance(err, ReplyError):
        return err
    if isinstance(err, openai.APITimeoutError):  # subclass of APIConnectionError: test it first
        return ReplyError("timeout", str(err))
    if isinstance(err, openai.APIConnectionError):
        return ReplyError("connection", str(err.__cause__ or err))
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        retry_after = _retry_after(err.response.headers.get("retry-after"))
        if status == 429:
            return ReplyError("rate_limited", str(err), retry_after)
        if status == 408:
            return ReplyError("timeout", str(err), retry_after)
        if status == 409 or status >= 500:
            return ReplyError("server_error", str(err), retry_after)
        return ReplyError("api_error", str(err))
    if isinstance(err, json.JSONDecodeError | openai.APIResponseValidationError):
        return ReplyError("malformed_response", f"{type(err).__name__}: {err}")
    raise err


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def with_retries(call: Callable[[], T], *, max_retries: int, backoff: float, max_backoff: float,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried on transient failures up to `max_retries` times with jittered exponential backoff."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Exception as err:
            failure = classify(err)
            if failure.kind not in TRANSIENT_ERRORS or attempt == max_retries:
                raise failure from err
            delay = min(max_backoff, backoff * 2**attempt) * (0.5 + random.random() / 2)
            sleep(min(max_backoff, max(delay, failure.retry_after or 0.0)))
    raise AssertionError("unreachable")  # pragma: no cover


def reply_text(response: Any) -> str:
    """The first choice's text; anything that is not a chat completion is a malformed response."""
    try:
        if not isinstance(response, ChatCompletion):
            raise TypeError(f"expected a chat completion, got {type(response).__name__}")
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError) as err:
        raise ReplyError("malformed_response", str(err)) from err
    if content is not None and not isinstance(content, str):
        raise ReplyError("malformed_response", f"message content is {type(content).__name__}")
    return content or ""


class OpenAIJudge:
    """Judges (and compares) responses with a chat model behind an OpenAI-compatible endpoint.

    `prompt` defaults to the paper's annotation prompt ("... only reply with 'perfect' ..."). Rows are
    sent `concurrency` at a time; a row whose request fails for good comes back with `error` set to
    its kind (see TRANSIENT_ERRORS, "api_error") and the error message in `raw`.
    """

    kind = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str | None = None,
                 prompt: ChatPrompt | None = None, concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 max_tokens: int = 1024, temperature: float = 0.0) -> None:
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.name = model
        self.base_url = base_url
        self.prompt = prompt or ChatPrompt()
        self.concurrency = concurrency
        self.retry = {"max_retries": max_retries, "backoff": backoff, "max_backoff": max_backoff}
        self.request = {"max_tokens": max_tokens, "temperature": temperature}
        self._client = openai.OpenAI(api_key=resolve_api_key(api_key_env, base_url), base_url=base_url,
                                     timeout=timeout, max_retries=0)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")

    @property
    def metadata(self) -> dict[str, Any]:
        """What the output records about the judge (no key, ever)."""
        return {"kind": self.kind, "model": self.name, **({"base_url": self.base_url} if self.base_url else {})}

    def complete(self, messages: list[dict[str, str]]) -> str:
        """One chat request, retried; raises `ReplyError` when it fails for good."""
        def call() -> str:
            response = self._client.chat.completions.create(model=self.name, messages=messages, **self.request)
            return reply_text(response)

        return with_retries(call, **self.retry)

    def _replies(self, requests: Sequence[list[dict[str, str]]]) -> list[str | ReplyError]:
        def one(messages: list[dict[str, str]]) -> str | ReplyError:
            try:
                return self.complete(messages)
            except ReplyError as err:
                return err

        return list(self._pool.map(one, requests))

    def judge(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Judgment]:
        _same_length(prompts, completions)
        replies = self._replies([self.prompt.messages(p, c) for p, c in zip(prompts, completions, strict=True)])
        return [Judgment(None, None, raw=r.detail, error=r.kind) if isinstance(r, ReplyError) else parse_annotation(r)
                for r in replies]

    def judge_pairs(self, prompts: Sequence[Prompt], a: Sequence[str], b: Sequence[str]) -> list[Preference]:
        _same_length(prompts, a, b)
        requests = [[{"role": "system", "content": PAIRWISE_SYSTEM_PROMPT},
                     {"role": "user", "content": PAIRWISE_USER_TEMPLATE.format(
                         instruction=instruction_text(p), response_a=x, response_b=y)}]
                    for p, x, y in zip(prompts, a, b, strict=True)]
        return [Preference(None, raw=r.detail, error=r.kind) if isinstance(r, ReplyError) else parse_preference(r)
                for r in self._replies(requests)]

    def close(self) -> None:
        """Stop: queued requests are cancelled (Ctrl-C must not wait for a whole batch of retries)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _same_length(*columns: Sequence[Any]) -> None:
    if len({len(c) for c in columns}) > 1:
        raise ValueError(f"judge inputs differ in length: {[len(c) for c in columns]}")
