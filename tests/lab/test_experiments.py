"""The lab runner and report: results.json / report.md after each experiment, resumption, failures, presets."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cutalign.lab.experiments import EXPERIMENTS, Experiment, ExperimentNotAvailable, get_experiment
from cutalign.lab.experiments.context import Preset, Table
from cutalign.lab.experiments.presets import PRESETS, SMOKE_BASE, get_preset
from cutalign.lab.experiments.report import bar_chart, format_cell, line_chart, markdown_table
from cutalign.lab.experiments.runner import PresetMismatchError, run_lab

FAKE = textwrap.dedent('''
    """A stand-in experiment: two units (each counted in calls.txt), a chart, a table, a finding."""
    from cutalign.lab.experiments.context import ExperimentResult, Table
    from cutalign.lab.experiments.report import bar_chart

    def _compute(ctx, key):
        calls = ctx.run_dir / "calls.txt"
        calls.write_text(calls.read_text() + key + "\\n" if calls.exists() else key + "\\n")
        return {"value": 0.25 if key == "a" else 0.75}

    def run(ctx):
        values = {k: ctx.unit(k, lambda _, k=k: _compute(ctx, k))["value"] for k in ("a", "b")}
        figure = bar_chart(ctx.figure_path("bars"), "fake", {k: {"all": (v, 0.1)} for k, v in values.items()}, "%")
        return ExperimentResult(name=ctx.name, title="A fake experiment",
                                tables=[Table("Values", ["unit", "value"], [[k, v] for k, v in values.items()])],
                                figures=[ctx.relative(figure)], findings=[f"b - a = {values['b'] - values['a']:.2f}"])
''')
BROKEN = textwrap.dedent('''
    def run(ctx):
        raise RuntimeError("this experiment is broken")
''')
PEEK = textwrap.dedent('''
    """Sees the report as it stands when it runs: the experiments before it are already in it."""
    from cutalign.lab.experiments.context import ExperimentResult

    def run(ctx):
        report = (ctx.run_dir / "report.md").read_text()
        return ExperimentResult(name=ctx.name, title="peek", data={"report_before": report})
''')


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Experiment]:
    """Registers fake experiment modules (and one that was never written) in the lab's registry."""
    package = tmp_path / "fake_lab_modules"
    package.mkdir()
    for name, text in (("fake_ok", FAKE), ("fake_broken", BROKEN), ("fake_peek", PEEK)):
        (package / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(package))
    entries = {name: Experiment(name, 90 + i, f"{name} title", name)
               for i, name in enumerate(("fake_ok", "fake_broken", "fake_peek", "fake_missing"))}
    for name, entry in entries.items():
        monkeypatch.setitem(EXPERIMENTS, name, entry)
    return entries


@pytest.fixture
def preset() -> Preset:
    return Preset(name="test", base=SMOKE_BASE)


def test_run_writes_results_and_report(tmp_path: Path, fakes, preset: Preset) -> None:
    out = tmp_path / "run"
    results = run_lab(preset, out, ["fake_ok"])
    assert results["failed"] == [] and results["status"] == "done"
    saved = json.loads((out / "results.json").read_text())
    entry = saved["experiments"]["fake_ok"]
    assert saved["preset"]["name"] == "test" and {"python", "torch", "transformers"} <= set(saved["versions"])
    assert entry["status"] == "ok" and entry["seconds"] > 0 and entry["units_computed"] == 2
    assert entry["result"]["tables"][0]["rows"] == [["a", 0.25], ["b", 0.75]]
    report = (out / "report.md").read_text()
    assert "preset `test`" in report and "command: `cutalign lab run test" in report and "machine:" in report
    assert "| a | 0.250 |" in report and "![](fake_ok/bars.png)" in report and "- b - a = 0.50" in report
    assert (out / "fake_ok" / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_resumes_without_computing(tmp_path: Path, fakes, preset: Preset) -> None:
    out = tmp_path / "run"
    run_lab(preset, out, ["fake_ok"])
    again = run_lab(preset, out, ["fake_ok"])
    assert (out / "calls.txt").read_text().split() == ["a", "b"]  # each unit computed once, in all
    assert again["experiments"]["fake_ok"]["units_computed"] == 0
    assert again["experiments"]["fake_ok"]["units_cached"] == 2


def test_failure_is_recorded_and_the_run_goes_on(tmp_path: Path, fakes, preset: Preset) -> None:
    out = tmp_path / "run"
    results = run_lab(preset, out, ["fake_broken", "fake_missing", "fake_ok", "fake_peek"])
    assert results["failed"] == ["fake_broken", "fake_missing"] and results["status"] == "failed"
    saved = json.loads((out / "results.json").read_text())["experiments"]
    assert saved["fake_broken"]["error"] == "RuntimeError: this experiment is broken"
    assert "this experiment is broken" in saved["fake_broken"]["traceback"]
    assert "not written yet" in saved["fake_missing"]["error"]
    assert saved["fake_ok"]["status"] == "ok"
    # report.md is rewritten after each experiment: the last one saw the earlier ones in it
    before = saved["fake_peek"]["result"]["data"]["report_before"]
    assert "this experiment is broken" in before and "A fake experiment" in before
    assert "- failed: fake_broken, fake_missing" in (out / "report.md").read_text()


def test_another_preset_is_refused_unless_forced(tmp_path: Path, fakes, preset: Preset) -> None:
    out = tmp_path / "run"
    run_lab(preset, out, ["fake_ok"])
    other = Preset(name="other", base=SMOKE_BASE, seeds=(0, 1))
    with pytest.raises(PresetMismatchError, match="preset 'test'"):
        run_lab(other, out, ["fake_ok"])
    assert run_lab(other, out, ["fake_ok"], force=True)["preset"]["name"] == "other"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something.txt").write_text("not a lab run")
    with pytest.raises(PresetMismatchError, match="not empty"):
        run_lab(preset, tmp_path / "busy", ["fake_ok"])


def test_names_are_checked_before_anything_runs(tmp_path: Path, fakes) -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        run_lab("huge", tmp_path / "a")
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        run_lab("smoke", tmp_path / "b", ["nope"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ExperimentNotAvailable, match="fake_missing"):
        get_experiment("fake_missing").load()


def test_registry_and_presets() -> None:
    assert [(e.number, e.name) for e in EXPERIMENTS.values()] == list(enumerate(
        ("offline", "online", "rewards", "detection", "ablations", "regimes", "peers", "recipe"), start=1))
    assert EXPERIMENTS["offline"].available()
    assert set(PRESETS) == {"smoke", "quick", "full"} and get_preset("full").seeds == (0, 1, 2)
    assert len(get_preset("quick").seeds) == 1 and get_preset("smoke").base.hidden_size < get_preset("quick").base.hidden_size


def test_markdown_and_charts(tmp_path: Path) -> None:
    assert [format_cell(v) for v in (0.5, 12.0, None, 3, "a|b")] == ["0.500", "12", "—", "3", "a\\|b"]
    text = markdown_table(Table("T", ["m", "x"], [["cut", 0.125]], note="n"))
    assert text.splitlines() == ["**T**", "", "| m | x |", "|---|---|", "| cut | 0.125 |", "", "_n_"]
    bars = bar_chart(tmp_path / "b.png", "t", {"cut": {"all": (50.0, 2.0), "t": (10.0, 1.0)}, "sft": {"all": (60, 0)}},
                     "%")
    lines = line_chart(tmp_path / "l.png", "t", [1, 2], {"cut": [0.1, 0.2], "sft": [0.3, 0.1]}, "k", "acc",
                       errors={"cut": [0.01, 0.02]})
    for path in (bars, lines):
        assert path.read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".*.tmp"))
