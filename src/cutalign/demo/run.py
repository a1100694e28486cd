"""`cutalign demo`: CUT end to end on the built-in fact world, offline, in about a minute on a CPU.

It writes a real output directory (model, tokenizer, model card, train_results.json), the data it
trained on, and prints what changed: greedy accuracy on the world's facts before and after, the
loss, how many tokens the detection flagged, and one negative response with its flagged tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from cutalign.data.templates import ALPACA_PLAIN
from cutalign.demo.sample import load_sample, sample_world
from cutalign.lab.models import demo_model_and_tokenizer
from cutalign.lab.world import evaluate_accuracy, evaluation_set
from cutalign.trainer.config import CUTConfig
from cutalign.trainer.cut_trainer import CUTTrainer

console = Console()


@dataclass
class DemoSettings:
    """Chosen so the tiny model learns the sample's facts in about a minute on 2 CPU cores."""

    output_dir: Path = Path("runs/cut-demo")
    epochs: float = 30.0
    learning_rate: float = 3e-3
    batch_size: int = 16
    max_length: int = 128
    # The official 0.25 x negatives would keep ~36 positives of the 480-example sample; the demo keeps
    # them all so the tiny model sees every fact (set 0.25 to reproduce the official downsampling).
    positive_ratio: float | None = None
    seed: int = 42


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Train CUT on the bundled sample and return the figures it printed."""
    started = time.perf_counter()
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = demo_model_and_tokenizer(seed=settings.seed)
    examples = load_sample()
    data_path = out / "train.jsonl"
    data_path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    questions = evaluation_set(sample_world())

    def accuracy() -> float:
        return evaluate_accuracy(model, tokenizer, questions, lambda q: ALPACA_PLAIN.format(instruction=q))

    before = accuracy()
    config = CUTConfig(
        output_dir=str(out), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, max_length=settings.max_length,
        positive_ratio=settings.positive_ratio, seed=settings.seed, warmup_steps=10, logging_steps=10,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
    )
    console.print(f"[bold]cutalign demo[/bold]: CUT on {len(examples)} judged examples "
                  f"({sum(not e['label'] for e in examples)} negative) of a synthetic fact world -> {out}")
    trainer = CUTTrainer(model, config, train_dataset=examples, processing_class=tokenizer)
    result = trainer.train()
    trainer.save_model()
    trainer.save_metrics("train", result.metrics)
    trainer.create_model_card()
    after = accuracy()
    history = [h for h in trainer.state.log_history if "loss" in h and "unlikely_fraction" in h]
    figures = {
        "accuracy_before": before, "accuracy_after": after, "train_loss": result.training_loss,
        "first_logged_loss": history[0]["loss"] if history else None,
        "last_logged_loss": history[-1]["loss"] if history else None,
        "unlikely_fraction_last": history[-1]["unlikely_fraction"] if history else None,
        "seconds": time.perf_counter() - started, "output_dir": str(out),
    }
    _print_report(figures, trainer, examples)
    return figures


def _print_report(figures: dict[str, Any], trainer: CUTTrainer, examples: list[dict[str, Any]]) -> None:
    table = Table(title="What CUT did", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("greedy accuracy on the world's facts, before", f"{figures['accuracy_before']:.1%}")
    table.add_row("greedy accuracy on the world's facts, after", f"{figures['accuracy_after']:.1%}")
    if figures["first_logged_loss"] is not None:
        table.add_row("CUT loss, first -> last log", f"{figures['first_logged_loss']:.3f} -> {figures['last_logged_loss']:.3f}")
        table.add_row("negative tokens flagged by detection (last log)", f"{figures['unlikely_fraction_last']:.1%}")
    table.add_row("dropped examples", ", ".join(trainer.drop_report.lines()) or "none")
    table.add_row("wall time", f"{figures['seconds']:.0f} s")
    console.print(table)
    example = min((e for e in examples if not e["label"] and e.get("refinement")), key=_words_changed)
    console.print("\n[bold]Detection on one negative[/bold] (tokens CUT flags, the set U, are [bold red]⟦marked⟧[/bold red]):")
    console.print(f"  instruction: {example['prompt']}\n  judgment:    {example['judgment']}")
    console.print(f"  response:    {flagged_response(trainer, example)}")
    console.print(f"\nModel, tokenizer and model card: {figures['output_dir']}  (training data: train.jsonl)")
    console.print("Next: `cutalign train --model <hf model> --data <your.jsonl> --output_dir out --use_peft` "
                  "(see README).")


@torch.no_grad()
def flagged_response(trainer: CUTTrainer, example: dict[str, Any]) -> str:
    """The example's response with the tokens CUT's detection puts in U marked up for the console."""
    from rich.markup import escape

    from cutalign.data.views import ViewBuilder
    from cutalign.losses import cut_loss

    args = trainer.args
    builder = ViewBuilder(trainer.processing_class, trainer.template, max_length=args.max_length,
                          fake_positive=args.fake_positive_text)
    features = builder.build(example, ("plain", "judged", "misaligned"))
    if isinstance(features, str):
        return f"(not shown: {features})"
    model = trainer.model.eval()
    batch = trainer._prepare_inputs(trainer.data_collator([features]))
    logps = trainer.context_logps(model, batch)
    plain, mask = logps["plain"]
    misaligned = logps["misaligned"][0] if "misaligned" in logps else None
    out = cut_loss(plain, logps["judged"][0], misaligned, mask, batch["is_negative"],
                   threshold=args.threshold, alpha=args.alpha, gamma=args.gamma, mode=args.mode)
    tokenizer = trainer.processing_class
    pieces = []
    for token_id, flagged in zip(features["completion_ids"], out.unlikely_mask[0].tolist(), strict=False):
        text = tokenizer.decode([token_id], skip_special_tokens=True)
        pieces.append(f"[bold red]⟦{escape(text)}⟧[/bold red]" if flagged and text.strip() else escape(text))
    return "".join(pieces)


def _words_changed(example: dict[str, Any]) -> int:
    """How many words a negative's refinement changes: 1 makes the clearest detection example."""
    said, right = example["completion"].split(), example["refinement"].split()
    if len(said) != len(right):
        return len(said) + len(right)
    return sum(a != b for a, b in zip(said, right, strict=True)) or len(said) + len(right)
