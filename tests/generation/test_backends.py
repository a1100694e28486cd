"""The factory, the OpenAI backend's retry schedule (against a closed real port) and the vLLM extra."""

from __future__ import annotations

import importlib.util
import socket

import pytest

from cutalign.generation import GenerationError, OpenAIGenerator, SamplingParams, make_generator


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: connections are refused


def test_connection_errors_are_retried_with_backoff_then_stop_the_run():
    sleeps: list[float] = []
    generator = OpenAIGenerator("m", base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=3,
                                backoff=0.01, timeout=2, sleep=sleeps.append)
    with pytest.raises(GenerationError, match="still failing after 4 attempts"):
        generator.generate(["hi"], SamplingParams(max_new_tokens=2))
    assert len(sleeps) == 3 and generator.retries == 3
    assert all(0 <= s <= 0.01 * 2**i for i, s in enumerate(sleeps))


def test_the_key_comes_from_the_named_variable_and_is_never_shown(monkeypatch):
    monkeypatch.delenv("CUTALIGN_NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="CUTALIGN_NO_SUCH_KEY is not set"):
        OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1", api_key_env="CUTALIGN_NO_SUCH_KEY")
    monkeypatch.setenv("CUTALIGN_TEST_KEY", "sk-very-secret")
    generator = OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1", api_key_env="CUTALIGN_TEST_KEY")
    assert "sk-very-secret" not in repr(generator)
    with pytest.raises(ValueError, match="completions endpoint takes text prompts"):
        OpenAIGenerator("m", base_url="http://127.0.0.1:9/v1", endpoint="completions").generate(
            [[{"role": "user", "content": "x"}]], SamplingParams())


def test_make_generator_names_backends_and_options():
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'; choose one of transformers, openai, vllm"):
        make_generator("tgi", model="m")
    with pytest.raises(ValueError, match=r"has no option\(s\) \['temprature'\]; it takes"):
        make_generator({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "temprature": 1})
    with pytest.raises(ValueError, match="needs a model"):
        make_generator("openai")
    generator = make_generator({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
                               concurrency=2)
    assert isinstance(generator, OpenAIGenerator) and generator.concurrency == 2


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'cutalign\[vllm\]'"):
        make_generator("vllm", model="some/model")
