"""Summaries: polarity counts, drops, token-length percentiles, and the rich table."""

from __future__ import annotations

from rich.console import Console

from cutalign.data.io import to_dataset
from cutalign.data.report import DropReport
from cutalign.data.schema import Located
from cutalign.data.summary import render_summary, summarize


def example(prompt, completion, judgment=None, label=True):
    return {
        "id": None,
        "prompt": prompt,
        "completion": completion,
        "judgment": judgment,
        "label": label,
        "score": None,
        "refinement": None,
    }


def whitespace_tokenizer(texts, add_special_tokens=True):
    """A stand-in whose token count is the word count, so percentiles are known exactly."""
    assert add_special_tokens is False
    return {"input_ids": [text.split() for text in texts]}


def test_counts_from_list_and_dataset_agree():
    examples = [example("q", "a"), example("q", "b", "Wrong.", False), example("q", "c", "Bad.", False)]
    report = DropReport()
    report.drop("judge_error", "f:1")
    expected = {"total": 3, "positive": 1, "negative": 2, "dropped": {"judge_error": 1}}
    assert summarize(examples, report) == expected
    dataset = to_dataset([Located(e, "f", n) for n, e in enumerate(examples)])
    assert summarize(dataset, report) == expected


def test_token_percentiles_are_nearest_rank():
    examples = [example(" ".join(["w"] * n), "x " * (2 * n), "j" if n % 2 else None) for n in range(1, 101)]
    tokens = summarize(examples, DropReport(), tokenizer=whitespace_tokenizer)["tokens"]
    assert tokens["prompt"] == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert tokens["completion"] == {"p50": 100, "p90": 180, "p99": 198, "max": 200}
    assert tokens["judgment"] == {"p50": 1, "p90": 1, "p99": 1, "max": 1}  # null judgments are not counted


def test_conversational_prompts_count_all_message_contents():
    chat = [{"role": "system", "content": "a b"}, {"role": "user", "content": "c"}]
    tokens = summarize([example(chat, "x")], DropReport(), tokenizer=whitespace_tokenizer)["tokens"]
    assert tokens["prompt"]["max"] == 3
    assert tokens["judgment"] == {"p50": None, "p90": None, "p99": None, "max": None}


def test_real_tokenizer_lengths(llama2_tokenizer):
    tokens = summarize([example("Hello world", "Hi")], DropReport(), tokenizer=llama2_tokenizer)["tokens"]
    assert tokens["prompt"]["max"] == len(
        llama2_tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    )
    assert tokens["prompt"]["max"] == 2  # no BOS counted


def test_render_summary_lists_counts_drops_and_tokens():
    report = DropReport()
    report.drop("duplicate")
    report.drop("duplicate")
    summary = summarize([example("a b", "c", "d", False)], report, tokenizer=whitespace_tokenizer)
    console = Console(width=100, record=True)
    console.print(render_summary(summary))
    text = console.export_text()
    for expected in (
        "total",
        "negative",
        "dropped",
        "duplicate",
        "prompt tokens",
        "p50 2  p90 2  p99 2  max 2",
    ):
        assert expected in text
