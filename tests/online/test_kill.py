"""SIGKILL at a random point of a stage, rerun the same command: the same manifests and final weights
as an uninterrupted run, and no judgment asked twice (subprocess tests)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import SLOW_JUDGE, fast_args, manifests, run_cli, weights


@pytest.fixture(scope="module")
def args(policy_dir) -> list[str]:
    return [*fast_args(policy_dir, judge=SLOW_JUDGE, evaluate=False), "--iterations", "2"]


@pytest.fixture(scope="module")
def reference(args, tmp_path_factory) -> Path:
    """One uninterrupted run with the same command."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = run_cli([*args, "--run_dir", str(run_dir)])
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def _kill_and_resume(stage: str, max_delay: float, args: list[str], reference: Path, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "judge_calls.txt"
    monkeypatch.setenv("CUTALIGN_TEST_JUDGE_LOG", str(log))
    seed = random.randrange(1 << 16)  # a random point of the stage; printed on failure
    crash = run_cli([*args, "--run_dir", str(run_dir)], driver=[stage, "1", str(seed), str(max_delay)])
    assert crash.returncode == -9, f"seed {seed}: {crash.stderr[-3000:]}"
    state = json.loads((run_dir / "iter_1" / "manifest.json").read_text())
    assert state["stages"][stage]["status"] == "running", f"seed {seed}"
    judgments = run_dir / "iter_1" / "judgments.jsonl"
    judged_before = {json.loads(line)["prompt"] for line in judgments.read_text().splitlines()
                     if line.endswith("}")} if judgments.is_file() else set()
    rerun = run_cli([*args, "--run_dir", str(run_dir)])
    assert rerun.returncode == 0, f"seed {seed}: {rerun.stderr[-3000:]}"
    assert manifests(run_dir) == manifests(reference), f"seed {seed}"
    final, expected = weights(run_dir / "iter_2" / "merged"), weights(reference / "iter_2" / "merged")
    assert final.keys() == expected.keys()
    assert all(final[k].equal(expected[k]) for k in final), f"seed {seed}: final weights differ"
    calls = log.read_text().splitlines()
    assert all(calls.count(p) == 1 for p in judged_before), f"seed {seed}: a written judgment was asked again"


def test_sigkill_in_training(args, reference, tmp_path, monkeypatch):
    _kill_and_resume("train", 4.0, args, reference, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "max_delay"), [("generate", 0.6), ("judge", 0.5), ("merge", 0.3)])
def test_sigkill_in_stage(stage, max_delay, args, reference, tmp_path, monkeypatch):
    _kill_and_resume(stage, max_delay, args, reference, tmp_path, monkeypatch)
