"""`cutalign lab list|run`: the registry as the user sees it, and bad input exits 2 naming what is wrong."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cutalign.cli import app
from cutalign.lab.experiments import EXPERIMENTS, Experiment

FAKE = '''
from cutalign.lab.experiments.context import ExperimentResult, Table

def run(ctx):
    return ExperimentResult(name=ctx.name, title="cli fake", tables=[Table("t", ["k"], [[ctx.preset.name]])],
                            findings=["the fake ran"])
'''


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    from cutalign.cli import _register

    _register()
    return CliRunner()


def test_list_names_every_experiment_and_preset(runner):
    result = runner.invoke(app, ["lab", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for entry in EXPERIMENTS.values():
        assert entry.name in result.output
    assert "smoke (1 seed)" in result.output and "full (3 seeds)" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["lab", "run", "huge"], "unknown preset 'huge'"),
    (["lab", "run", "smoke", "--experiments", "offline,nope"], "unknown experiment 'nope'"),
])
def test_bad_preset_or_experiment_exits_2(runner, tmp_path, args, message):
    result = runner.invoke(app, [*args, "--output_dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "results.json").exists()  # nothing started


def test_run_then_another_preset_in_the_same_dir_is_refused(runner, tmp_path, monkeypatch):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "cli_fake.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.setitem(EXPERIMENTS, "cli_fake", Experiment("cli_fake", 99, "cli fake", "cli_fake"))
    out = tmp_path / "run"
    result = runner.invoke(app, ["lab", "run", "smoke", "--output_dir", str(out), "--experiments", "cli_fake"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiments"]["cli_fake"]["result"]["findings"] == ["the fake ran"]
    assert "the fake ran" in result.output and str(out / "report.md") in result.output.replace("\n", "")
    again = runner.invoke(app, ["lab", "run", "quick", "--output_dir", str(out), "--experiments", "cli_fake"])
    assert again.exit_code == 2 and "preset 'smoke'" in again.output and "force" in again.output
