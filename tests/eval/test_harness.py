"""lm-evaluation-harness hand-off: the real `lm_eval --model hf` CLI on a tiny model dir and a local task."""

from __future__ import annotations

import json
import textwrap

import pytest

CHOICES = [("Capital of France?", ["Paris", "Rome"], 0), ("2 + 2 =", ["3", "4"], 1), ("Sky colour?", ["blue", "red"], 0)]


@pytest.mark.slow  # lm_eval's imports and dataset build take ~45 s on a 2-core machine
@pytest.mark.shared
def test_lm_eval_reports_a_score_on_a_local_task(tiny_model_dir, tmp_path, cli_ok, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in CHOICES))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(textwrap.dedent(f"""\
        task: cutalign_tiny_mc
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: multiple_choice
        doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
        doc_to_choice: "{{{{choices}}}}"
        doc_to_target: "{{{{answer}}}}"
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """))
    out = tmp_path / "eval"
    cli_ok("eval", "harness", "--model", tiny_model_dir, "--tasks", "cutalign_tiny_mc", "--include_path", tasks,
           "--device", "cpu", "--batch_size", "4", "--output_dir", out)
    results = json.loads((out / "results.json").read_text())
    assert results["eval"] == "harness" and "--model" in results["command"] and "hf" in results["command"]
    accuracy = results["scores"]["cutalign_tiny_mc/acc"]
    assert 0.0 <= accuracy <= 1.0 and accuracy * 3 == pytest.approx(round(accuracy * 3))  # k of 3 questions
    assert "cutalign_tiny_mc/acc" in (out / "summary.md").read_text()
