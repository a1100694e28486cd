"""The openai judge against a real `cutalign serve` process of a tiny model, through the official client."""

from __future__ import annotations

import json
import threading

import pytest

from cutalign.judges.annotate import judge_file
from cutalign.judges.openai_judge import OpenAIJudge
from cutalign.judges.prompts import ANNOTATION_SYSTEM_PROMPT, ChatPrompt

# The tiny model is served with the Alpaca template (one user message): the paper's prompt, folded.
FOLDED = ChatPrompt().folded()


def _source(tmp_path, n):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"g{i}", "prompt": f"Name color {i}.", "completion": f"Blue {i}."}) + "\n"
                            for i in range(n)))
    return path


def _check_complete(out, n):
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"g{i}" for i in range(n)]  # every id once, none missing
    return rows


@pytest.mark.shared
def test_openai_judge_over_a_served_tiny_model(served_tiny_model, tmp_path):
    judge = OpenAIJudge(served_tiny_model.model, base_url=served_tiny_model.base_url,
                        api_key_env=served_tiny_model.api_key_env, concurrency=4, max_tokens=4, timeout=60, prompt=FOLDED)
    try:
        summary = judge_file(_source(tmp_path, 4), tmp_path / "out.jsonl", judge, batch_size=4)
    finally:
        judge.close()
    rows = _check_complete(tmp_path / "out.jsonl", 4)
    assert FOLDED.messages("x", "y")[0]["content"].startswith(ANNOTATION_SYSTEM_PROMPT)
    # A random tiny model writes arbitrary text: each reply is a judgment, or counted unparseable (empty).
    assert summary.judged + summary.unparseable == 4 and not summary.errors
    for row in rows:
        assert row["judge"] == {"kind": "openai", "model": "tiny", "base_url": served_tiny_model.base_url} or \
            row["judge"]["error"] == "unparseable"


@pytest.mark.slow  # kills and restarts the server: ~15-30 s on a busy 2-core machine
@pytest.mark.shared
def test_server_killed_mid_run_and_restarted_the_run_finishes_with_every_id_once(served_tiny_model, tmp_path):
    n = 24
    judge = OpenAIJudge(served_tiny_model.model, base_url=served_tiny_model.base_url,
                        api_key_env=served_tiny_model.api_key_env, concurrency=2, max_tokens=8, timeout=30, prompt=FOLDED,
                        max_retries=30, backoff=0.25, max_backoff=4.0)
    out = tmp_path / "out.jsonl"
    pid_before = served_tiny_model.process.pid
    restarted = threading.Event()

    def crash_after_first_rows(done: int) -> None:
        if not restarted.is_set() and done >= 4:
            restarted.set()
            threading.Thread(target=served_tiny_model.restart, daemon=True).start()  # SIGKILL, then start again

    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done += count
        crash_after_first_rows(done)

    source = _source(tmp_path, n)
    try:
        summary = judge_file(source, out, judge, batch_size=2, progress=progress)
        assert restarted.is_set() and served_tiny_model.process.pid != pid_before  # it really was killed
        _check_complete(out, n)  # every id once, even if the restart outlasted the retries...
        assert summary.judged + summary.unparseable + summary.errors["connection"] == n
        assert set(summary.errors) <= {"connection"}
        rerun = judge_file(source, out, judge, batch_size=2)  # ... whose rows the rerun then judges
    finally:
        judge.close()
    _check_complete(out, n)
    assert rerun.redone == summary.errors["connection"] and rerun.judged + rerun.unparseable == rerun.redone
    assert not rerun.errors
