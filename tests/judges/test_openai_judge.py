"""The openai judge against a real loopback server that injects faults (no mocked HTTP)."""

from __future__ import annotations

import json
import time

import pytest

from cutalign.judges.annotate import judge_file
from cutalign.judges.guard import FailureGuard, JudgeFailureError
from cutalign.judges.openai_judge import OpenAIJudge, resolve_api_key
from fault_server import FaultServer

FAST = {"timeout": 0.3, "backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture
def make_judge():
    judges = []

    def make(server, **kwargs):
        judge = OpenAIJudge("fault-judge", base_url=server.base_url, **{**FAST, **kwargs})
        judges.append(judge)
        return judge

    yield make
    for judge in judges:
        judge.close()


def test_every_fault_is_retried_then_the_reply_is_parsed(make_judge):
    script = ["429", "500", "503", "slow", "malformed", "wrong_shape", "close"]
    with FaultServer(script, slow_seconds=1.0) as server:
        judge = make_judge(server, max_retries=len(script), concurrency=1)
        started = time.monotonic()
        [judgment] = judge.judge(["Name a color."], ["Blue."])
    assert (judgment.satisfactory, judgment.text, judgment.error) == (True, None, None)
    assert server.log == [*script, "ok"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("behaviour", "kind"), [
    ("429", "rate_limited"), ("500", "server_error"), ("slow", "timeout"), ("malformed", "malformed_response"),
    ("wrong_shape", "malformed_response"), ("close", "connection")])
def test_retries_exhausted_give_an_error_of_that_kind(make_judge, behaviour, kind):
    with FaultServer([behaviour] * 3, slow_seconds=0.6) as server:
        [judgment] = make_judge(server, max_retries=2).judge(["q"], ["a"])
    assert judgment.error == kind and judgment.satisfactory is None and judgment.raw
    assert server.log == [behaviour] * 3  # first try + 2 retries, nothing more


def test_client_errors_are_not_retried(make_judge):
    with FaultServer(["400", "400"]) as server:
        [judgment] = make_judge(server, max_retries=5).judge(["q"], ["a"])
    assert judgment.error == "api_error" and server.log == ["400"]


def test_concurrent_batch_keeps_input_order(make_judge):
    completions = [f"answer {i} {'wrong' if i % 3 == 0 else 'right'}" for i in range(12)]
    with FaultServer(["500", "close", "429"]) as server:
        judgments = make_judge(server, max_retries=3, concurrency=4).judge([f"q{i}" for i in range(12)], completions)
    assert [j.satisfactory for j in judgments] == ["wrong" not in c for c in completions]
    assert all(j.error is None for j in judgments)
    assert len(server.log) == 15


def test_judge_pairs_over_http(make_judge):
    with FaultServer(reply=lambda messages: "B") as server:
        preferences = make_judge(server).judge_pairs(["q", "r"], ["x", "y"], ["z", "w"])
    assert [p.winner for p in preferences] == ["b", "b"]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_judge_file_through_faults_loses_no_row_and_counts_every_failure(make_judge, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"q{i}", "completion": f"c{i} {'wrong' * (i % 2)}"})
                              + "\n" for i in range(10)))
    # concurrency 1: row r0 gets 429, 429 (retries exhausted: error), r1 gets 500 then ok, r2 "unparseable" reply...
    replies = iter(["perfect", "", "perfect"] + ["The response is wrong."] * 20)
    script = ["429", "429", "500"]
    out = tmp_path / "out.jsonl"
    with FaultServer(script, reply=lambda m: "perfect" if "wrong" not in m[-1]["content"] else next(replies)) as server:
        judge = make_judge(server, max_retries=1, concurrency=1)
        summary = judge_file(source, out, judge, batch_size=4)
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == [f"r{i}" for i in range(10)]
    by_id = {r["id"]: r for r in rows}
    assert by_id["r0"]["judge"]["error"] == "rate_limited" and by_id["r0"]["judgment"] == "$ERROR$"
    assert by_id["r1"]["label"] is True  # the "wrong" row got the first scripted "perfect"
    assert by_id["r3"]["judge"]["error"] == "unparseable" and by_id["r3"]["judge"]["raw"] == ""
    assert summary.errors == {"rate_limited": 1} and summary.unparseable == 1 and summary.judged == 8
    # Rerun: the transient error is judged again, the unparseable row is not (no --retry_errors)...
    with FaultServer() as server:
        summary = judge_file(source, out, make_judge(server), batch_size=4)
    assert (summary.redone, summary.judged, summary.resumed, summary.unparseable) == (1, 1, 9, 0)
    assert server.log == ["ok"]
    # ... and with retry_errors it is; the successful ones never are.
    with FaultServer() as server:
        summary = judge_file(source, out, make_judge(server), retry_errors=True)
    assert (summary.redone, summary.judged, summary.resumed) == (1, 1, 9) and server.log == ["ok"]
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == [f"r{i}" for i in range(10)]
    assert all("error" not in r["judge"] for r in rows)


def test_judge_outage_stops_the_run_and_a_rerun_resumes(make_judge, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}", "completion": "c"}) + "\n" for i in range(30)))
    out = tmp_path / "out.jsonl"
    with FaultServer(["ok"] * 4 + ["500"] * 40) as server, pytest.raises(JudgeFailureError, match="in a row") as info:
        judge_file(source, out, make_judge(server, max_retries=0, concurrency=2), batch_size=4,
                   guard=FailureGuard(max_consecutive=6))
    summary = info.value.summary
    assert summary.judged == 4 and summary.errors["server_error"] >= 6 and summary.stopped
    assert len(_rows(out)) == summary.judged + summary.failed < 30
    with FaultServer() as server:
        summary = judge_file(source, out, make_judge(server), guard=FailureGuard(max_consecutive=6))
    rows = _rows(out)
    assert sorted(int(r["id"]) for r in rows) == list(range(30)) and all(r["label"] for r in rows)
    assert summary.resumed == 4 and len(server.log) == 26


def test_api_key_comes_from_the_named_env_var_and_is_never_stored(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-secret-123")
    assert resolve_api_key("MY_JUDGE_KEY", None) == "sk-test-secret-123"
    monkeypatch.delenv("MISSING_KEY", raising=False)
    with pytest.raises(ValueError, match="MISSING_KEY is not set"):
        resolve_api_key("MISSING_KEY", "http://127.0.0.1:1/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key(None, "http://127.0.0.1:1/v1") == "EMPTY"  # a local server without auth
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        resolve_api_key(None, None)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "prompt": "q", "completion": "c"}) + "\n")
    with FaultServer() as server:
        judge = OpenAIJudge("fault-judge", base_url=server.base_url, api_key_env="MY_JUDGE_KEY")
        judge_file(source, tmp_path / "out.jsonl", judge)
        judge.close()
    assert "sk-test-secret-123" not in (tmp_path / "out.jsonl").read_text()
    assert "sk-test-secret-123" not in repr(vars(judge))
