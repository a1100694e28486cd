"""`cutalign eval winrate` end to end: a real `cutalign serve` on 127.0.0.1 is the pairwise judge (openai client)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def chat_judge_server(tiny_model_dir):
    """The tiny model served with a chat template, so the pairwise prompt's system turn is accepted."""
    from servers import ServedModel

    server = ServedModel(tiny_model_dir, extra_args=("--batch_wait_ms", "20", "--template", "chat",
                                                     "--chat_template", "llama2"))
    with server.running() as running:
        yield running


@pytest.mark.slow  # starts a `cutalign serve` subprocess: ~25 s on a 2-core machine
@pytest.mark.shared
def test_winrate_against_a_served_judge(chat_judge_server, tmp_path, cli_ok):
    n = 6
    model = tmp_path / "model.jsonl"
    model.write_text("".join(json.dumps({"id": str(i), "prompt": f"Name a colour ({i}).",
                                         "completion": "Blue, the colour of the sky." * (1 + i % 2)}) + "\n"
                             for i in range(n)))
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": str(i), "prompt": f"Name a colour ({i}).", "completion": "Red."}) + "\n"
                            for i in range(n)))
    out = tmp_path / "win"
    cli_ok("eval", "winrate", "--outputs", model, "--references", refs, "--judge", "openai",
           "--judge_model", chat_judge_server.model, "--base_url", chat_judge_server.base_url,
           "--api_key_env", chat_judge_server.api_key_env, "--judge_max_tokens", "3", "--n_bootstrap", "200",
           "--output_dir", out)
    results = json.loads((out / "results.json").read_text())
    # Every pair was asked twice over HTTP; a random tiny model's reply is a verdict or counted as an error.
    assert results["pairs"] == n == results["judged"] + results["errors"]
    assert results["wins"] + results["ties"] + results["losses"] == results["judged"]
    assert results["judge"] == chat_judge_server.model
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [v["id"] for v in verdicts] == [str(i) for i in range(n)]
    assert all(v["error"] in (None, "unparseable") for v in verdicts)  # no transport failure
    alpaca = json.loads((out / "model_outputs.json").read_text())
    assert alpaca[0] == {"instruction": "Name a colour (0).", "output": "Blue, the colour of the sky.",
                         "generator": "model"}
    assert json.loads((out / "reference_outputs.json").read_text())[0]["generator"] == "reference"
    assert (out / "summary.md").read_text().startswith("# Win rate")
