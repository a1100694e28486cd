"""inspect on the demo world after `cutalign demo` training: U is the value the judgment calls wrong."""

from __future__ import annotations

import json

import pytest

from cutalign.inspection import InspectConfig, inspect_examples, sweep_thresholds


def _inspect_demo(out, world, only=None):
    """The negatives of the demo's training data with gold spans (``only``: that id), under the trained CUT model.

    One example per forward pass as the demo's own detection does: batching (padding or packing)
    changes the log-probs in the last bits, which can move a token sitting exactly at the threshold."""
    from cutalign.lab.judge import judge_response
    from cutalign.models import load_model

    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    negatives = []
    for record in records:
        spans = judge_response(record["prompt"], record["completion"], world=world).error_spans
        if not record["label"] and spans and only in (None, record["id"]):
            negatives.append(record | {"error_spans": [list(s) for s in spans]})
    model, tokenizer = load_model(out / "cut")
    config = InspectConfig(max_length=128, batch_size=1)  # the demo's CUTConfig
    return inspect_examples(model, tokenizer, negatives, config)


def _flagged(report):
    return [t.text.strip() for t in report.tokens if t.unlikely and t.text.strip()]


@pytest.mark.slow  # pretrains a small lab base and trains CUT and SFT: ~75 s on 2 CPU cores
def test_inspect_flags_what_the_demo_flags(tmp_path):
    from cutalign.demo.run import run_demo, small_settings
    from cutalign.lab.base import beliefs

    settings = small_settings(tmp_path / "demo", cache_dir=tmp_path / "cache")
    figures = run_demo(settings)
    example = figures["detection"]["example"]
    [report] = _inspect_demo(settings.output_dir, beliefs(settings.base).world, only=example["id"])
    assert _flagged(report) == [t.strip() for t in figures["detection"]["flagged"]]


@pytest.mark.slow  # the README's demo: the base's pretraining is cached after the first run (minutes on 2 cores)
def test_after_demo_training_u_is_the_judged_wrong_value(tmp_path):
    from cutalign.demo.run import DemoSettings, run_demo
    from cutalign.lab.base import beliefs

    settings = DemoSettings(output_dir=tmp_path / "demo")
    figures = run_demo(settings)
    reports = _inspect_demo(settings.output_dir, beliefs(settings.base).world)
    example = figures["detection"]["example"]
    report = next(r for r in reports if r.id == example["id"])
    gold = [example["completion"][a:b].strip() for a, b in report.gold_spans]
    flagged = _flagged(report)
    # The judged wrong value is flagged. Exactly it was the claim of the old (random-init) demo; from the
    # pretrained base the subject's name is sometimes flagged beside it (observed 2026-12-02), so
    # exactness is measured over all negatives by the precision below instead.
    assert gold and all(g in flagged for g in gold), (flagged, gold)
    row = sweep_thresholds(reports, [1.1])[0]
    # Over every negative, U is enriched for the gold error tokens well beyond their base rate
    # (measured 2026-12-02 at lambda 1.1: precision 0.28 vs base rate 0.12, recall 0.51).
    base_rate = row.gold_tokens / row.negative_tokens
    assert row.precision > 1.5 * base_rate and row.recall > 0.3, row
