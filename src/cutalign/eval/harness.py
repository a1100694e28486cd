"""lm-evaluation-harness hand-off: a merged cutalign model is a standard HF directory, so ``lm_eval`` runs on it.

Merge a LoRA run first (``cutalign merge RUN -o OUT`` / :func:`cutalign.models.merge_adapter`), then
the paper's suite (Table 3 of arXiv 2312.14591; few-shot counts as in the Open LLM Leaderboard v1)::

    lm_eval --model hf --model_args pretrained=OUT,dtype=bfloat16 --tasks arc_challenge --num_fewshot 25 \\
        --batch_size auto --output_path evals/arc
    lm_eval --model hf --model_args pretrained=OUT,dtype=bfloat16 --tasks hellaswag --num_fewshot 10 \\
        --batch_size auto --output_path evals/hellaswag
    lm_eval --model hf --model_args pretrained=OUT,dtype=bfloat16 --tasks mmlu --num_fewshot 5 \\
        --batch_size auto --output_path evals/mmlu
    lm_eval --model hf --model_args pretrained=OUT,dtype=bfloat16 --tasks truthfulqa_mc2 --num_fewshot 0 \\
        --batch_size auto --output_path evals/truthfulqa

``cutalign eval harness --model OUT --tasks arc_challenge --num_fewshot 25 --output_dir evals/arc`` runs
the same command and writes ``results.json`` / ``summary.md`` like every other eval (so ``cutalign eval
compare`` reads it). Offline, local tasks: ``--include_path DIR`` with a task YAML over local JSON data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def lm_eval_command(model: str | Path, tasks: Sequence[str], output_path: str | Path, *, num_fewshot: int | None = None,
                    batch_size: str = "auto", device: str | None = None, include_path: str | Path | None = None,
                    limit: int | None = None, dtype: str | None = None) -> list[str]:
    """The ``lm_eval`` argv for a model directory (``--model hf``; no remote code)."""
    executable = shutil.which("lm_eval") or str(Path(sys.executable).with_name("lm_eval"))
    model_args = f"pretrained={model}" + (f",dtype={dtype}" if dtype else "")
    argv = [executable, "--model", "hf", "--model_args", model_args, "--tasks", ",".join(tasks),
            "--batch_size", str(batch_size), "--output_path", str(output_path)]
    if num_fewshot is not None:
        argv += ["--num_fewshot", str(num_fewshot)]
    if device:
        argv += ["--device", device]
    if include_path is not None:
        argv += ["--include_path", str(include_path)]
    if limit is not None:
        argv += ["--limit", str(limit)]
    return argv


def run_lm_eval(argv: Sequence[str], output_path: str | Path, *, timeout: float | None = None) -> dict[str, Any]:
    """Run ``lm_eval`` and return its newest results file's ``results`` as ``scores`` per task metric."""
    if not Path(argv[0]).exists() and shutil.which(argv[0]) is None:
        raise ValueError("lm_eval is not installed: pip install 'cutalign[eval]' (lm-eval>=0.4)")
    env = {**os.environ, "TRUST_REMOTE_CODE": "0"}
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"lm_eval exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    files = sorted(Path(output_path).rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise RuntimeError(f"lm_eval wrote no results_*.json under {output_path}")
    raw = json.loads(files[-1].read_text(encoding="utf-8"))
    scores = {f"{task}/{metric.split(',')[0]}": value for task, metrics in raw.get("results", {}).items()
              for metric, value in metrics.items()
              if isinstance(value, int | float) and "stderr" not in metric and metric != "alias"}
    return {"eval": "harness", "command": list(argv), "results_file": str(files[-1]), "scores": scores,
            "lm_eval_results": raw.get("results", {}), "versions": raw.get("versions", {})}


def harness_summary(results: dict[str, Any], title: str) -> str:
    from cutalign.eval.results import markdown_table

    rows = [[k, f"{v:.4f}"] for k, v in results["scores"].items()]
    return (f"# lm-evaluation-harness: {title}\n\n" + markdown_table(["task/metric", "value"], rows)
            + "\n\nCommand: `" + " ".join(results["command"]) + "`")
