"""Test judges for `--judge python:FILE:FUNCTION`: the demo judge made slow (so a kill can land in the
middle of judging) and logging every call; and one that fails on some rows."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cutalign.judges.python_judge import demo_judge_function

_DEMO = demo_judge_function()


def slow(prompt: str, completion: str) -> str | None:
    log = os.environ.get("CUTALIGN_TEST_JUDGE_LOG")
    if log:
        with Path(log).open("a", encoding="utf-8") as f:
            f.write(prompt + "\n")
    time.sleep(0.05)
    return _DEMO(prompt, completion)


def flaky(prompt: str, completion: str) -> str | None:
    """Fails on every question about a birth year or a language (about a third of the pool)."""
    if "born" in prompt or "birth" in prompt or "language" in prompt:
        raise RuntimeError("this judge cannot answer that")
    return _DEMO(prompt, completion)
