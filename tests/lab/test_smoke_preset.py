"""The smoke preset end to end through the CLI (what CI runs): every registered experiment runs and reports.

Smoke is mechanics only (its base is tiny and knows little): this checks that each experiment of
`cutalign lab run smoke` finishes with tables and figures, that report.md holds a section per
experiment, and that the same command again computes nothing (every unit comes from its cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cutalign.lab.experiments import EXPERIMENTS


def _lab(out: Path, cache: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cutalign", "lab", "run", "smoke", "--output_dir", str(out),
               "--cache_dir", str(cache), "--threads", "2"]
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, dict]:
    root = tmp_path_factory.mktemp("smoke")
    first = _lab(root / "run", root / "cache")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return root, first, json.loads((root / "run" / "results.json").read_text())


def test_every_experiment_ran_with_tables_and_figures(smoke_run):
    root, _, results = smoke_run
    assert results["status"] == "done" and list(results["experiments"]) == list(EXPERIMENTS)
    for name, entry in results["experiments"].items():
        assert entry["status"] == "ok", (name, entry.get("error"))
        assert entry["result"]["tables"] and all(t["rows"] for t in entry["result"]["tables"]), name
        for figure in entry["result"]["figures"]:
            assert (root / "run" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (name, figure)
    report = (root / "run" / "report.md").read_text()
    for entry in EXPERIMENTS.values():
        assert f"## {entry.number}. " in report, entry.name


def test_the_same_command_again_computes_nothing(smoke_run):
    root, _, first = smoke_run
    again = _lab(root / "run", root / "cache")
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads((root / "run" / "results.json").read_text())
    for name, entry in results["experiments"].items():
        assert entry["units_computed"] == 0, name
        assert entry["units_cached"] == first["experiments"][name]["units_computed"] + \
            first["experiments"][name].get("units_cached", 0), name
        assert entry["result"]["tables"] == first["experiments"][name]["result"]["tables"], name
