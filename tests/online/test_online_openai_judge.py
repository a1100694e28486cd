"""The loop with the `openai` judge against a real `cutalign serve` on loopback (official openai client)."""

from __future__ import annotations

import json

import pytest
from helpers import fast_args


@pytest.mark.slow
def test_one_iteration_judged_by_a_served_model(cli_ok, served_tiny_model, policy_dir, tmp_path):
    run_dir = tmp_path / "run"
    server = served_tiny_model
    cli_ok("online", *fast_args(policy_dir, judge="openai", evaluate=False), "--judge_model", server.model,
           "--base_url", server.base_url, "--api_key_env", server.api_key_env, "--judge_options", "concurrency=4",
           "--judge_options", "timeout=120",
           # the served tiny model uses the Alpaca template: no system turn (the paper's prompt is folded in);
           # its judgments are noise, kept short so that judged contexts fit the fast settings' max_length
           "--judge_options", "fold_system=true", "--judge_options", "max_new_tokens=4", "--run_dir", run_dir, "--iterations", 1, "--no_progress")
    manifest = json.loads((run_dir / "iter_1" / "manifest.json").read_text())
    assert manifest["stages"]["merge"]["status"] == "done"
    counts = manifest["counts"]
    assert counts["judged"] == counts["prompts"] == 8
    rows = [json.loads(line) for line in (run_dir / "iter_1" / "judgments.jsonl").read_text().splitlines()]
    assert {r["judge"]["model"] for r in rows} == {server.model}
    assert counts["judge_errors"] == sum(r["judge"].get("error") is not None for r in rows)
    assert counts["trained_on"] + sum(v for k, v in manifest["drops"].items() if k != "judge_error") \
        == counts["judged"] - counts["judge_errors"]
    assert server.api_key not in (run_dir / "manifest.json").read_text()
