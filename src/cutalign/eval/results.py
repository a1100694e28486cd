"""Every eval's output directory: ``results.json`` (machine-readable) and ``summary.md`` (for people)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_json, atomic_write_text

RESULTS = "results.json"
SUMMARY = "summary.md"


def write_results(output_dir: str | Path, results: dict[str, Any], summary: str) -> Path:
    """Write both files atomically (a crash leaves the previous ones, never half a file); returns the dir.

    ``results`` must carry ``"eval"`` (the kind: accuracy, rouge, winrate, ...) so that
    :func:`~cutalign.eval.compare.compare_runs` can read any eval's output.
    """
    if "eval" not in results:
        raise ValueError("results need an 'eval' key naming the kind of evaluation")
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / RESULTS, results)
    atomic_write_text(folder / SUMMARY, summary.rstrip() + "\n")
    return folder


def read_results(run: str | Path) -> dict[str, Any]:
    """An eval's ``results.json`` from its directory (or the file itself)."""
    path = Path(run)
    path = path / RESULTS if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"{run}: no {RESULTS} (not a `cutalign eval` output directory)")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(loaded, dict) or "eval" not in loaded:
        raise ValueError(f"{path}: not a `cutalign eval` results file (no 'eval' key)")
    return loaded


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
