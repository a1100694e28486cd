"""`cutalign demo`: the quick start's main job, what judgments add (CUT beside SFT-on-positives), offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cutalign.cli import app


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option("--output_dir", "--output-dir",
                                             help="Where to write the judged samples and both trained models.")]
    = Path("runs/cut-demo"),
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the judged samples (both methods).")] = 8.0,
    samples_per_fact: Annotated[int, typer.Option("--samples_per_fact", "--samples-per-fact",
                                                  help="Answers sampled from the base per fact.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (sampling, data order).")] = 42,
    cache_dir: Annotated[Path | None, typer.Option("--cache_dir", "--cache-dir",
                                                   help="Base model cache (default ~/.cache/cutalign/lab).")] = None,
    small: Annotated[bool, typer.Option("--small", help="Tiny settings for a smoke run (figures mean little).")]
    = False,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for torch; 0 = auto (1 when the machine is "
                                         "busy: oversubscribed threads made steps 10x slower here).")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the figures as JSON.")] = False,
) -> None:
    """CUT vs SFT on the satisfactory samples, from a tiny pretrained base holding wrong beliefs.

    About 2-3 minutes on 2 idle CPU cores the first time (the base is pretrained, then cached).
    """
    import json
    from dataclasses import replace

    from cutalign.demo.run import DemoSettings, run_demo, small_settings

    if samples_per_fact < 1 or epochs <= 0:
        typer.secho("error: --samples_per_fact must be >= 1 and --epochs > 0", fg="red", err=True)
        raise typer.Exit(2)
    settings = small_settings(output_dir, cache_dir) if small else DemoSettings(output_dir=output_dir,
                                                                                cache_dir=cache_dir)
    if not small:
        settings = replace(settings, epochs=epochs, samples_per_fact=samples_per_fact)
    settings = replace(settings, seed=seed, progress=True)
    _set_threads(threads)
    figures = run_demo(settings)
    _print_report(figures)
    if json_out:
        typer.echo(json.dumps({k: v for k, v in figures.items() if k != "detection"} |
                              {"detection": {k: v for k, v in figures["detection"].items() if k != "pieces"}},
                              indent=2))


def _set_threads(threads: int) -> None:
    """Torch's intra-op threads spin while waiting; on a machine other work keeps busy that costs 10x."""
    import os

    import torch

    if threads < 0:
        typer.secho("error: --threads must be >= 0", fg="red", err=True)
        raise typer.Exit(2)
    if threads == 0:
        cores = os.cpu_count() or 1
        threads = 1 if os.getloadavg()[0] >= cores else torch.get_num_threads()
    torch.set_num_threads(threads)


def _print_report(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    base = figures["base"]
    console.print(f"[bold]cutalign demo[/bold]: a tiny base pretrained on a fact world where "
                  f"{figures['targeted_facts']} of {figures['facts']} facts are misconceived "
                  f"({'built now' if base['built_now'] else 'from the cache'}: {base['dir']}).")
    console.print(f"{figures['samples']} answers sampled from it and judged ({figures['negatives']} negative); "
                  "CUT and SFT-on-positives trained from the same base with the same settings.")
    table = Table(title="Greedy accuracy", show_header=True)
    for column in ("facts", "base", "CUT", "SFT on positives"):
        table.add_column(column, justify="right" if column != "facts" else "left")
    for key, name in (("targeted", "targeted (misconceived)"), ("other", "the others"), ("all", "all")):
        table.add_row(name, *(f"{figures[m][key]:.1%}" for m in ("before", "cut", "sft")))
    console.print(table)
    console.print(f"[bold]Verdict[/bold]: {figures['verdict']}")
    detection = figures["detection"]
    if detection.get("example"):
        example = detection["example"]
        marked = "".join(f"[bold red]⟦{escape(t)}⟧[/bold red]" if f and t.strip() else escape(t)
                         for t, f in detection["pieces"])
        console.print("\n[bold]Detection on one negative[/bold] (tokens CUT flags, the set U, are "
                      "[bold red]⟦marked⟧[/bold red]; the judge's gold error: "
                      f"{', '.join(detection['gold']) or 'none'}):")
        console.print(f"  instruction: {escape(example['prompt'])}\n  judgment:    {escape(example['judgment'])}")
        console.print(f"  response:    {marked}")
    times = Table(title="Wall time", show_header=False)
    for phase, seconds in figures["seconds"].items():
        times.add_row(phase, f"{seconds:.1f} s")
    times.add_row("[bold]total[/bold]", f"[bold]{figures['total_seconds']:.1f} s[/bold]")
    console.print(times)
    console.print(f"\nModels (cut/, sft/), judged samples (train.jsonl), figures (demo_results.json): "
                  f"{figures['output_dir']}")
    console.print("Next: `cutalign train --model <hf model> --data <your.jsonl> --output_dir out --use_peft` "
                  "(see README).")
