"""Request bodies of the OpenAI API subset `cutalign serve` answers, and its JSON error shape.

Everything a client can get wrong is checked here and answered with a 4xx in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`), so client libraries show the message and a
client mistake is never a 500. Parameters the server cannot honour (n > 1, logprobs, penalties)
are refused rather than silently ignored.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class APIError(Exception):
    """An error answered to the client: HTTP status plus OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Sampling(BaseModel):
    """Fields shared by both endpoints; unknown fields are accepted and ignored, as OpenAI's are."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise ValueError("n > 1 is not supported; send one request per sample (with different seeds)")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or not all(stops):
            raise ValueError("stop must be up to 4 non-empty strings")
        return stops

    def unsupported(self) -> None:
        """Refuse what this server would otherwise silently ignore."""
        if self.logprobs not in (None, False, 0):
            raise APIError(400, "logprobs are not supported by this server", param="logprobs")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise APIError(400, f"{name} is not supported by this server", param=name)
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported by this server", param="logit_bias")


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def unsupported(self) -> None:
        super().unsupported()
        for name in ("tools", "functions", "tool_choice"):
            if (self.model_extra or {}).get(name):
                raise APIError(400, f"{name} is not supported by this server", param=name)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = None

    def unsupported(self) -> None:
        super().unsupported()
        if self.echo:
            raise APIError(400, "echo is not supported by this server", param="echo")
        if self.suffix:
            raise APIError(400, "suffix is not supported by this server", param="suffix")
        if self.best_of not in (None, 1):
            raise APIError(400, "best_of > 1 is not supported by this server", param="best_of")


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """The request body as `model`, or a 400 naming what is wrong (bad JSON, a missing or bad field)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON ({err})", code="invalid_json") from err
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        request = model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        # pydantic names union members in the location ("prompt.list[str].0"); OpenAI names the field.
        param = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and (
            "[" in p or p in ("str", "int", "float", "bool")))) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = f"missing required parameter '{param}'"
        raise APIError(400, f"{param}: {message}" if param and first["type"] != "missing" else message,
                       param=param, code="invalid_value" if first["type"] != "missing" else "missing_required_parameter",
                       ) from err
    request.unsupported()
    return request
