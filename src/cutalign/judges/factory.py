"""`make_judge`: the judge a `--judge KIND` flag names, built from the CLI's options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cutalign.judges.base import Judge

KINDS = ("openai", "hf", "demo", "python:MODULE:FUNCTION")


def make_judge(kind: str, *, model: str | None = None, judge_model: str | None = None,
               base_url: str | None = None, api_key_env: str | None = None,
               prompt_template: str | Path | None = None, concurrency: int = 8, timeout: float = 60.0,
               max_retries: int = 5, max_new_tokens: int = 512, batch_size: int = 8,
               dtype: str | None = None, fold_system: bool = False, backend: str = "transformers") -> Judge:
    """`openai` (needs `judge_model`), `hf` (needs `model`), `demo`, or `python:module:function`."""
    if kind == "openai":
        from cutalign.judges.openai_judge import OpenAIJudge
        from cutalign.judges.prompts import load_chat_prompt

        name = judge_model or model
        if not name:
            raise ValueError("--judge openai needs --judge_model (the model name the endpoint serves)")
        prompt = load_chat_prompt(prompt_template)
        return OpenAIJudge(name, base_url=base_url, api_key_env=api_key_env,
                           prompt=prompt.folded() if fold_system else prompt, concurrency=concurrency, timeout=timeout,
                           max_retries=max_retries, max_tokens=max_new_tokens)
    if kind == "hf":
        from cutalign.generation.base import SamplingParams
        from cutalign.judges.hf_judge import HFJudge

        if not model:
            raise ValueError("--judge hf needs --model (a model or adapter dir, e.g. `cutalign train-judge` output)")
        if prompt_template is not None:
            raise ValueError("--prompt_template applies to --judge openai; the hf judge uses the AI-judge format")
        return HFJudge.from_pretrained(model, backend=backend, dtype=dtype, params=SamplingParams(max_new_tokens=max_new_tokens),
                                       batch_size=batch_size)
    if kind == "demo" or kind.startswith("python:"):
        from cutalign.judges.python_judge import PythonJudge

        return PythonJudge.from_spec(kind)
    raise ValueError(f"unknown judge {kind!r}; choose one of {', '.join(KINDS)}")


def close_judge(judge: Any) -> None:
    """Release a judge's threads and connections (judges without resources have no `close`)."""
    close = getattr(judge, "close", None)
    if callable(close):
        close()
