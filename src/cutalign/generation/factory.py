"""`make_generator`: a `Generator` from a backend name and options (CLI flags, a YAML mapping)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from cutalign.generation.base import Generator

BACKENDS = ("transformers", "openai", "vllm")


def _constructor(backend: str) -> Any:
    if backend == "transformers":
        from cutalign.generation.transformers_backend import TransformersGenerator

        return TransformersGenerator.from_pretrained
    if backend == "openai":
        from cutalign.generation.openai_backend import OpenAIGenerator

        return OpenAIGenerator
    if backend == "vllm":
        from cutalign.generation.vllm_backend import VLLMGenerator

        return VLLMGenerator
    raise ValueError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def make_generator(spec: str | Mapping[str, Any] | None = None, /, **kwargs: Any) -> Generator:
    """Build a generator: ``make_generator("openai", model=..., base_url=...)`` or
    ``make_generator({"backend": "transformers", "model": "runs/cut"})``.

    ``model`` is the model dir / hub id (transformers, vllm) or the served model name (openai).
    Options a backend does not take are an error naming the ones it does, so a YAML typo is caught.
    Options set to None are left at the backend's default.
    """
    options = dict(spec) if isinstance(spec, Mapping) else {}
    options.update(kwargs)
    backend = options.pop("backend", None) or (spec if isinstance(spec, str) else "transformers")
    build = _constructor(backend)
    if "model" not in options or not options["model"]:
        raise ValueError(f"the {backend} backend needs a model")
    model = options.pop("model")
    options = {k: v for k, v in options.items() if v is not None}
    signature = inspect.signature(build)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    known = [name for name in signature.parameters if name not in ("model", "path", "kwargs", "llm_kwargs", "sleep")]
    unknown = sorted(set(options) - set(known))
    if unknown and not (takes_any and backend == "vllm"):
        raise ValueError(f"the {backend} backend has no option(s) {unknown}; it takes {', '.join(known)}")
    return build(model, **options)
