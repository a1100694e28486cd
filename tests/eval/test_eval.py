"""cutalign eval: ROUGE equals rouge-score, lab accuracy, win-rate statistics, compare, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cutalign.eval.outputs import OutputRow, read_outputs
from cutalign.eval.winrate import fit_logistic, judge_pairs_both_orders, winrate_from_verdicts
from cutalign.judges.base import Preference

PREDICTIONS = ["the cat sat on the mat", "a quick brown fox jumps\nover the lazy dog", "rain is falling today"]
REFERENCES = ["the cat was sitting on the mat", "the quick brown fox jumped\nover a lazy dog", "sunny skies today"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _app():
    from cutalign.cli import _register, app

    _register()
    return app


def test_rouge_equals_rouge_score(tmp_path, cli_ok):
    from rouge_score import rouge_scorer

    rows = [{"id": str(i), "prompt": f"summarise {i}", "completion": p, "reference": r}
            for i, (p, r) in enumerate(zip(PREDICTIONS, REFERENCES, strict=True))]
    outputs = _jsonl(tmp_path / "out.jsonl", rows)
    cli_ok("eval", "rouge", "--outputs", outputs, "--output_dir", tmp_path / "r")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    expected = [scorer.score(r, p) for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert results["scores"][kind] == pytest.approx(np.mean([e[kind].fmeasure for e in expected]), abs=1e-12)
    assert results["scores"]["rougeLsum"] != results["scores"]["rougeL"]  # newlines split sentences for Lsum
    assert "| rouge1 |" in (tmp_path / "r" / "summary.md").read_text()


def test_accuracy_with_the_lab_judge(tmp_path, cli_ok):
    from cutalign.lab.world import evaluation_set, make_world

    questions = evaluation_set(make_world(12, 0))[:10]
    rows = [{"id": str(i), "prompt": q.question, "completion": f"{q.gold if i % 2 == 0 else q.wrong_values[0]}."}
            for i, q in enumerate(questions)]
    rows.append({"id": "x", "prompt": "Write a poem about the sea.", "completion": "Waves."})  # not a lab question
    outputs = _jsonl(tmp_path / "out.jsonl", rows)
    result = cli_ok("eval", "accuracy", "--outputs", outputs, "--output_dir", tmp_path / "a")
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert (results["scored"], results["correct"], results["scores"]["accuracy"]) == (10, 5, 0.5)
    assert results["unscored"] == {"unparseable": 1}
    assert "50.0% (5/10)" in result.stdout


class LengthJudge:
    """Prefers the longer response (a strong length bias); equal lengths tie."""

    name = "longer"

    def judge_pairs(self, prompts, a, b):
        return [Preference("a" if len(x) > len(y) else "b" if len(y) > len(x) else "tie") for x, y in zip(a, b, strict=True)]


class FirstJudge:
    """Always prefers the first position: pure position bias."""

    name = "first"

    def judge_pairs(self, prompts, a, b):
        return [Preference("a") for _ in prompts]


def _pairs(n, model_lengths):
    rows = []
    for i in range(n):
        model = OutputRow(str(i), f"q{i}", "x" * model_lengths[i], None, None, ("m", i))
        ref = OutputRow(str(i), f"q{i}", "y" * 20, None, None, ("r", i))
        rows.append((model, ref))
    return rows


def test_both_orders_cancel_position_bias():
    verdicts = judge_pairs_both_orders(_pairs(6, [10, 30, 40, 5, 20, 50]), FirstJudge(), batch_size=4)
    result = winrate_from_verdicts(verdicts, n_bootstrap=200)
    assert (result["ties"], result["wins"], result["losses"]) == (6, 0, 0)
    assert result["scores"]["win_rate"] == 0.5


def test_win_rate_interval_and_length_control():
    lengths = [40] * 30 + [5] * 10  # longer in 30 of 40 pairs: a length-biased judge gives 75%
    verdicts = judge_pairs_both_orders(_pairs(40, lengths), LengthJudge())
    result = winrate_from_verdicts(verdicts, n_bootstrap=500, seed=3)
    assert (result["wins"], result["losses"], result["ties"], result["errors"]) == (30, 10, 0, 0)
    assert result["scores"]["win_rate"] == 0.75
    low, high = result["win_rate_ci"]
    assert low < 0.75 < high and high - low < 0.4
    assert result == winrate_from_verdicts(verdicts, n_bootstrap=500, seed=3)  # seeded
    assert result["length_slope"] > 5  # the judge's length preference is what the regression finds
    assert result["scores"]["lc_win_rate"] < result["scores"]["win_rate"]
    errors = [*verdicts, {"winner": None, "error": "unparseable", "model_length": 1, "reference_length": 1}]
    assert winrate_from_verdicts(errors, n_bootstrap=100)["errors"] == 1


def test_logistic_fit_recovers_coefficients():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 4000)
    y = (rng.uniform(size=x.size) < 1 / (1 + np.exp(-(0.5 + 2.0 * x)))).astype(float)
    intercept, slope = fit_logistic(x, y)
    assert intercept == pytest.approx(0.5, abs=0.15) and slope == pytest.approx(2.0, abs=0.3)


def test_compare_table_and_chart(tmp_path, cli_ok):
    from cutalign.eval.results import write_results

    write_results(tmp_path / "base", {"eval": "accuracy", "scores": {"accuracy": 0.25}}, "# base")
    write_results(tmp_path / "cut", {"eval": "accuracy", "scores": {"accuracy": 0.75}}, "# cut")
    result = cli_ok("eval", "compare", tmp_path / "base", tmp_path / "cut", "--output_dir", tmp_path / "c")
    assert "| base | accuracy | 0.2500 |" in result.stdout and "| cut | accuracy | 0.7500 |" in result.stdout
    assert (tmp_path / "c" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_exit_2(tmp_path):
    runner = CliRunner()
    app = _app()
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p"}])
    result = runner.invoke(app, ["eval", "rouge", "--outputs", str(bad), "--output_dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"{bad}:2: field 'completion'" in result.output
    ok = _jsonl(tmp_path / "ok.jsonl", [{"prompt": "p", "completion": "c"}])
    result = runner.invoke(app, ["eval", "rouge", "--outputs", str(ok), "--output_dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "field 'reference'" in result.output
    result = runner.invoke(app, ["eval", "compare", str(tmp_path), "--output_dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no results.json" in result.output
    result = runner.invoke(app, ["eval", "accuracy", "--outputs", str(ok), "--output_dir", str(tmp_path / "o"),
                                 "--judge", "openai"])
    assert result.exit_code == 2 and "python judge" in result.output


def test_alpaca_eval_files_read_back(tmp_path):
    from cutalign.eval.outputs import alpaca_eval_rows, pair_outputs

    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "Say hi", "output": "hi", "generator": "m"}]))
    rows = read_outputs(path)
    assert alpaca_eval_rows(rows, "x") == [{"instruction": "Say hi", "output": "hi", "generator": "m"}]
    assert pair_outputs(rows, rows)[0][1].output == "hi"  # no ids: matched by instruction


def test_winrate_with_the_lab_judge_through_the_cli(tmp_path, cli_ok):
    from cutalign.lab.world import evaluation_set, make_world

    questions = evaluation_set(make_world(12, 0))[:8]
    # The model is right on questions 0-5, the reference on 0-1 only: 4 wins, 2 ties (both right), 2 ties (both wrong).
    model = _jsonl(tmp_path / "m.jsonl", [{"id": str(i), "prompt": q.question,
                                           "completion": f"{q.gold if i < 6 else q.wrong_values[0]}."}
                                          for i, q in enumerate(questions)])
    refs = _jsonl(tmp_path / "r.jsonl", [{"id": str(i), "prompt": q.question,
                                          "completion": f"{q.gold if i < 2 else q.wrong_values[0]}."}
                                         for i, q in enumerate(questions)])
    result = cli_ok("eval", "winrate", "--outputs", model, "--references", refs, "--judge",
                    "python:cutalign.lab.judge:judge_response", "--n_bootstrap", "300", "--output_dir", tmp_path / "w")
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert (results["wins"], results["ties"], results["losses"], results["errors"]) == (4, 4, 0, 0)
    assert results["scores"]["win_rate"] == 0.75
    assert "| 75.0% [" in result.stdout
