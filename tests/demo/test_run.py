"""`cutalign demo`: the quick start's main job writes a real output dir and shows what CUT did."""

from __future__ import annotations

import json

import pytest

from cutalign.demo.run import DemoSettings, run_demo


def test_demo_writes_a_standard_output_dir(tmp_path):
    figures = run_demo(DemoSettings(output_dir=tmp_path, epochs=1))
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "train_results.json",
                 "train.jsonl"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "train_results.json").read_text())["train_loss"] == pytest.approx(
        figures["train_loss"])
    assert figures["last_logged_loss"] < figures["first_logged_loss"]
    assert 0.0 <= figures["accuracy_after"] <= 1.0 and figures["accuracy_before"] < 0.1


@pytest.mark.slow
def test_default_demo_learns_the_facts_and_flags_the_wrong_value(tmp_path, capsys):
    figures = run_demo(DemoSettings(output_dir=tmp_path))
    assert figures["accuracy_before"] < 0.1 and figures["accuracy_after"] > 0.8
    response = next(line for line in capsys.readouterr().out.splitlines() if "response:" in line)
    assert "⟦ Nastailese⟧" in response and response.count("⟦") == 1  # the judged wrong value, only it
