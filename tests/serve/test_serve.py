"""`cutalign serve` as a real subprocess on 127.0.0.1, spoken to with the official `openai` client."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from cutalign.generation import GenerationError, OpenAIGenerator, SamplingParams, TransformersGenerator

CHAT = [{"role": "user", "content": "Name a color."}]
GREEDY = SamplingParams(max_new_tokens=5)


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    """The same model in this process: what the server must reproduce."""
    return TransformersGenerator.from_pretrained(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def client(served_tiny_model):
    return openai.OpenAI(base_url=served_tiny_model.base_url, api_key=served_tiny_model.api_key, max_retries=0)


def remote(server, endpoint="chat", **kwargs):
    return OpenAIGenerator(server.model, base_url=server.base_url, api_key_env=server.api_key_env,
                           endpoint=endpoint, **kwargs)


def test_greedy_output_over_http_equals_the_local_generator(served_tiny_model, local):
    chat = remote(served_tiny_model).generate([CHAT], GREEDY)[0]
    expected = local.generate([CHAT], GREEDY)[0]
    assert chat.text == expected.text and chat.text
    assert (chat.prompt_tokens, chat.completion_tokens) == (expected.prompt_tokens, expected.completion_tokens)
    assert chat.finish_reason == expected.finish_reason == "length"
    prompts = ["The sky is", "Once upon a time, in a land far away, there lived"]
    texts = [r.text for r in remote(served_tiny_model, "completions").generate(prompts, GREEDY)]
    assert texts == [r.text for r in local.generate(prompts, GREEDY)]


def test_concurrent_requests_are_batched_without_changing_answers(served_tiny_model, local):
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(4)]
    generator = remote(served_tiny_model, "completions", concurrency=4)
    assert [r.text for r in generator.generate(prompts, GREEDY)] == [r.text for r in local.generate(prompts, GREEDY)]


def test_seeded_sampling_is_reproducible(served_tiny_model):
    params = SamplingParams(max_new_tokens=8, do_sample=True, temperature=1.0, seed=7)
    generator = remote(served_tiny_model)
    first, again = generator.generate([CHAT, CHAT], params), generator.generate([CHAT], params)
    assert first[0].text == again[0].text
    assert first[0].text != first[1].text  # seeds 7 and 8


def test_models_and_streaming(client, served_tiny_model, local):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    expected = local.generate([CHAT], GREEDY)[0].text
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert len([c for c in chunks if c.choices[0].delta.content]) > 1  # token by token, not one piece
    assert chunks[-1].choices[0].finish_reason == "length"
    pieces = list(client.completions.create(model="tiny", prompt="The sky is", max_tokens=5, temperature=0,
                                            stream=True))
    assert "".join(p.choices[0].text for p in pieces) == local.generate(["The sky is"], GREEDY)[0].text


def test_stop_strings_cut_the_text(client, local):
    full = local.generate([CHAT], SamplingParams(max_new_tokens=12))[0].text
    stop = full.split()[1][:2]
    reply = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0, stop=[stop])
    assert reply.choices[0].message.content == full[:full.index(stop)].rstrip()
    assert reply.choices[0].finish_reason == "stop"


def post(server, path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.base_url + path, content=data, timeout=30,
                      headers={"Content-Type": "application/json", **(server.headers if headers is None else headers)})


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/chat/completions", b"{not json", 400, None),
        ("/chat/completions", b"[1, 2]", 400, None),
        ("/chat/completions", {"model": "tiny"}, 400, "messages"),
        ("/chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
        ("/chat/completions", {"model": "nope", "messages": CHAT}, 404, "model"),
        ("/chat/completions", {"model": "tiny", "messages": CHAT, "temperature": -1}, 400, "temperature"),
        ("/chat/completions", {"model": "tiny", "messages": CHAT, "top_p": 0}, 400, "top_p"),
        ("/chat/completions", {"model": "tiny", "messages": CHAT, "n": 2}, 400, "n"),
        ("/chat/completions", {"model": "tiny", "messages": CHAT, "max_tokens": 0}, 400, "max_tokens"),
        ("/chat/completions", {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400,
         "messages.0.role"),
        ("/chat/completions", {"model": "tiny", "messages": [{"role": "system", "content": "x"}, *CHAT]}, 400,
         "messages"),  # the tiny model uses the Alpaca template: no system turn
        ("/chat/completions", {"model": "tiny", "messages": CHAT, "logprobs": True}, 400, "logprobs"),
        ("/completions", {"model": "tiny", "prompt": "x", "echo": True}, 400, "echo"),
        ("/completions", {"model": "tiny", "prompt": [1, 2, 3]}, 400, "prompt"),
    ],
)
def test_client_mistakes_get_4xx_with_an_openai_error_body(served_tiny_model, path, body, status, param):
    response = post(served_tiny_model, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_over_long_prompts_and_missing_keys_are_refused(served_tiny_model, tiny_model_dir, client):
    context = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="word " * context, max_tokens=4)
    assert err.value.status_code == 400 and err.value.code == "context_length_exceeded"
    assert "maximum context length" in err.value.message
    refused = remote(served_tiny_model, "completions").generate(["word " * context], GREEDY)[0]
    assert refused.error and refused.text == "" and "maximum context length" in refused.error
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = post(served_tiny_model, "/chat/completions", {"model": "tiny", "messages": CHAT}, headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(served_tiny_model.base_url + "/models").status_code == 401
    with pytest.raises(GenerationError, match="401"):
        OpenAIGenerator("tiny", base_url=served_tiny_model.base_url).generate(["hi"], GREEDY)


def test_unknown_routes_answer_json(served_tiny_model):
    response = httpx.get(served_tiny_model.base_url + "/nowhere", headers=served_tiny_model.headers)
    assert response.status_code == 404 and "error" in response.json()


def test_parallel_streams_each_get_their_own_text(client, local):
    prompts = ["The sky is", "Water is", "Fire is"]

    def stream(prompt):
        events = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0, stream=True)
        return "".join(e.choices[0].text for e in events)

    with ThreadPoolExecutor(3) as pool:
        streamed = list(pool.map(stream, prompts))
    assert streamed == [r.text for r in local.generate(prompts, SamplingParams(max_new_tokens=6))]


def test_generate_cli_over_the_server_equals_the_local_backend(served_tiny_model, tiny_model_dir, tmp_path, cli_ok):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"id": 1, "prompt": "Name a color."}\n{"id": 2, "prompt": "Count to three."}\n')
    local, remote_out = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    cli_ok("generate", "--model", tiny_model_dir, "--data", data, "-o", local, "--max_new_tokens", "6")
    result = cli_ok("generate", "--backend", "openai", "--model", served_tiny_model.model, "--base_url",
                    served_tiny_model.base_url, "--api_key_env", served_tiny_model.api_key_env, "--data", data,
                    "-o", remote_out, "--max_new_tokens", "6")
    assert "applied by the server" in result.output
    assert remote_out.read_text() == local.read_text()
