"""The model card: TRL's layout plus data (drops apart from downsampling), curves PNG, metrics, citation."""

from __future__ import annotations

import json

from cutalign.data.report import DropReport
from cutalign.trainer.model_card import CURVES_FILE, plot_training_curves, render_model_card

HISTORY = [{"step": s, "loss": 2.0 / s, "l1": 1.0 / s, "l2": 0.5, "unlikely_fraction": 0.1 * s} for s in (1, 2, 3)]


def report_of_a_run() -> DropReport:
    report = DropReport()
    report.add_source("data/iter1.json")
    for _ in range(47):
        report.drop("judge_error", "iter1.json:3")
    report.drop("response_too_long")
    for _ in range(654):
        report.drop("positive_downsampled")
    report.selection_notes["positive_downsampled"] = "to 0.25 × negatives"
    report.notice("response_tokenised_apart", "id 9")
    return report


def test_card_sections_data_and_citation():
    report = report_of_a_run()
    summary = {"train_examples": 298, "positive": 58, "negative": 240, "dropped": report.drops(),
               "selected_out": report.selections()}
    card = render_model_card(method="cut", base_model="meta-llama/Llama-2-7b-hf", config={"alpha": 0.01},
                             data_summary=summary, results={"train_loss": 1.25}, adapter=True, report=report,
                             curves=CURVES_FILE, model_ref="runs/cut")
    for text in ("library_name: peft", "base_model: meta-llama/Llama-2-7b-hf", "# Model Card for cut",
                 "## Quick start", "AutoPeftModelForCausalLM.from_pretrained(\"runs/cut\")",
                 "cutalign generate --model runs/cut", "### Framework versions", "- Transformers: ",
                 "Sources: `data/iter1.json`", "| `alpha` | `0.01` |", "| `train_loss` | 1.25 |",
                 f"![training curves]({CURVES_FILE})", "@inproceedings{xu2024reasons", "@software{vonwerra2020trl"):
        assert text in card, text
    assert "kept 298 of 1000 (47 judge errors, 1 too long, 654 positives downsampled to 0.25 × negatives)." in card
    dropped, selected = card.index("Dropped (unusable)"), card.index("Left out on purpose")
    assert card.index("| `judge_error` | 47 |") > dropped and card.index("| `positive_downsampled` | 654 |") > selected
    assert "| `response_tokenised_apart` | 1 |" in card
    machine = json.loads(card.split("```json")[1].split("```")[0])
    assert machine["selected_out"] == {"positive_downsampled": 654} and "positive_downsampled" not in machine["dropped"]


def test_training_curves_png(tmp_path):
    path = tmp_path / CURVES_FILE
    assert plot_training_curves([*HISTORY, {"step": 3, "train_loss": 1.0}], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not plot_training_curves([{"step": 1, "eval_loss": 1.0}], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
