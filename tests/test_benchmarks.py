"""Smoke test of benchmarks/cut_step.py: its smallest configuration runs and prints complete tables.

Figures are checked for shape and sign only; timings on a shared CPU say nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cut_step.py"
STEP_METHODS = ("cut-fake_positive", "cut-instruction_only", "cutalign-sft", "trl-sft", "trl-dpo", "naive-official",
                "sft")
STEP_COLUMNS = ["vocab", "method", "time s (median of 1)", "peak MiB", "RSS +MiB", "largest tensor", "largest MiB",
                "predicted peak MiB", "positions", "loss", "time / cutalign-sft", "peak / cutalign-sft", "time / trl-dpo",
                "peak / trl-dpo", "useful"]
EPOCH_COLUMNS = ["run", "steps", "epoch s", "x+y tokens/s", "speed / official", "loss"]
REALISTIC_COLUMNS = ["method", "time s", "peak MiB", "RSS +MiB", "positions", "trainable", "time / trl-dpo",
                     "peak / trl-dpo"]


def markdown_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown table whose header starts with ``first_cell`` (header row included)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\|\s*{re.escape(first_cell)}\s*\|", line))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_smallest_configuration_prints_complete_tables(tmp_path, cut_online_dir, shared_dir):
    figures = tmp_path / "figures.json"
    command = [
        sys.executable, str(SCRIPT), "--data", str(cut_online_dir / "train-alpaca-sample-iter1.json"),
        "--tokenizer", str(shared_dir / "tokenizers" / "llama2"), "--examples", "12", "--batch-size", "2",
        "--max-length", "256", "--vocab-sizes", "32000", "--hidden-size", "16", "--num-layers", "1",
        "--repeats", "1", "--two-step-vocab-size", "32000", "--memory-limit-gib", "4", "--in-process",
        "--epoch-examples", "4", "--epoch-max-length", "256", "--realistic", "32,1,4,32000,2,256,2",
        "--sections", "steps,useful-work,two-step,epoch,realistic", "--json", str(figures),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("machine: ") and "torch threads" in out and "torch 2." in out

    steps = markdown_rows(out, "vocab")
    assert steps[0] == STEP_COLUMNS
    assert [row[1] for row in steps[1:]] == list(STEP_METHODS)
    for row in steps[1:]:
        assert float(row[2]) > 0 and int(row[3].replace(",", "")) > 0 and row[4] == "-", row
        assert all(cell.endswith("x") for cell in row[10:14]) and row[14].endswith("%"), row
    assert [row[10] for row in steps[1:] if row[1] == "cutalign-sft"] == ["1.00x"]
    assert [row[12:14] for row in steps[1:] if row[1] == "trl-dpo"] == [["1.00x", "1.00x"]]
    work = markdown_rows(out, "layout")
    assert len(work) == 1 + 10 and all(cell.endswith("%") for row in work[1:] for cell in (row[4], row[8]))
    assert "Two CUTTrainer steps" in out and "predicted peak" in out
    epoch = markdown_rows(out, "run")
    assert epoch[0] == EPOCH_COLUMNS and [row[0] for row in epoch[1:]] == [
        "cutalign train cut, fake_positive", "cutalign train cut, instruction_only",
        "official layout (both halves, padded, full logits)"]
    assert epoch[-1][4] == "1.00x" and all(float(row[3].replace(",", "")) > 0 for row in epoch[1:])
    realistic = markdown_rows(out, "method")[-4:]  # the last table with a method column
    assert realistic[0] == REALISTIC_COLUMNS and [row[0] for row in realistic[1:]] == [
        "cut-fake_positive", "cut-instruction_only", "trl-dpo"]
    assert realistic[-1][6:] == ["1.00x", "1.00x"] and all(row[5] != "0" for row in realistic[1:])

    report = json.loads(figures.read_text())
    assert set(report) >= {"machine", "config", "steps", "useful_work", "two_step", "epoch", "realistic",
                           "wall_time_s"}
    # The epoch runs train on exactly the chosen examples; the realistic batch has negatives and LoRA.
    assert report["epoch"]["examples"] == 4 and all(row["steps"] == 2 for row in report["epoch"]["rows"])
    assert report["realistic"]["negatives"] >= 1
    assert all(0 < r["trainable_parameters"] < r["parameters"] for r in report["realistic"]["rows"])
    for row in report["steps"]["rows"]:
        assert row["time_s"] > 0 and row["peak_bytes"] > 0 and row["largest_tensor_bytes"] > 0, row
        assert row["positions"] > 0 and row["rss_increase_bytes"] is None
    by_method = {row["method"]: row for row in report["steps"]["rows"]}
    # The full-logit formulations' largest tensor is their [rows, L, V] logits; cutalign's is one chunk.
    rows, length = report["steps"]["official_shape"]
    assert by_method["naive-official"]["largest_tensor_shape"] == [rows * length, 32000]
    # TRL DPO: one pair per example (stand-in refinements), policy + live reference passes.
    dpo = by_method["trl-dpo"]
    assert 0 < dpo["real_positions"] <= dpo["positions"] and dpo["loss"] > 0, dpo
    assert by_method["cut-fake_positive"]["largest_tensor_bytes"] < by_method["naive-official"]["largest_tensor_bytes"]
    for row in report["useful_work"]["rows"]:
        for part in (row["all"], row["downsampled"]):
            assert 0 < part["real"] <= part["computed"] and part["examples"] > 0, row
    # One packed row a pass computes only real positions; the default's rows, never longer than 8192 tokens or
    # the longest sequence, compute no more than padding every sequence to the longest does.
    layouts = {r["layout"]: r for r in report["useful_work"]["rows"]}
    for mode in ("fake_positive", "instruction_only"):
        one_row = layouts[f"cutalign {mode}, packed, one row a pass (packed_row_length 0)"]
        bounded = layouts[f"cutalign {mode}, packed, rows by attention cost (default)"]
        padded = layouts[f"cutalign {mode}, length-grouped, padded"]
        for part in ("all", "downsampled"):
            assert one_row[part]["real"] == one_row[part]["computed"] == bounded[part]["real"] == padded[part]["real"]
            assert bounded[part]["computed"] <= padded[part]["computed"], (bounded, padded)
    two_step = report["two_step"]
    assert two_step["peak_bytes"] > 0 and len(two_step["official_shapes"]) == 2
