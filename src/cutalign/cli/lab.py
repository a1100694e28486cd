"""`cutalign lab run|list`: the judgment lab's experiments (issue 11), a thin body over `run_lab`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cutalign.cli import app

BAD_INPUT = 2

lab_app = typer.Typer(help="The judgment lab: check every claim of learning from judgments, with ground truth.",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")


@lab_app.command("run")
def run(
    preset: Annotated[str, typer.Argument(help="smoke (< 2 min, mechanics only), quick (<= 20 min, 1 seed) or "
                                               "full (<= 2 h, 3 seeds).")],
    output_dir: Annotated[Path, typer.Option("--output_dir", "--output-dir",
                                             help="Run folder: results.json, report.md, PNGs, cached units.")],
    experiments: Annotated[str | None, typer.Option("--experiments", help="Comma-separated names (default: all; "
                                                    "see `cutalign lab list`).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Reuse an output_dir started with another preset.")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache_dir", "--cache-dir",
                                                   help="Base model cache (default ~/.cache/cutalign/lab).")] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for torch; 0 = auto (1 on a busy "
                                         "machine).")] = 0,
) -> None:
    """Run a preset's experiments; rerunning the same command resumes a killed run."""
    import shlex
    import sys

    from cutalign.cli.demo import _set_threads
    from cutalign.lab.experiments.runner import PresetMismatchError, run_lab

    names = [n.strip() for n in experiments.split(",") if n.strip()] if experiments else None
    _set_threads(threads)
    command = "cutalign " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        results = run_lab(preset, output_dir, names, cache_dir, progress=True, force=force, command=command)
    except (PresetMismatchError, ValueError) as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(BAD_INPUT) from None
    _print_summary(results)
    if results["failed"]:
        raise typer.Exit(1)


@lab_app.command("list")
def list_experiments() -> None:
    """The registered experiments and presets, and which experiment modules exist yet."""
    from rich.console import Console
    from rich.table import Table

    from cutalign.lab.experiments import EXPERIMENTS
    from cutalign.lab.experiments.presets import PRESETS

    table = Table(title="Experiments")
    for column in ("#", "name", "title", "module"):
        table.add_column(column)
    for e in EXPERIMENTS.values():
        table.add_row(str(e.number), e.name, e.title, "available" if e.available() else "[red]not written yet[/red]")
    console = Console()
    console.print(table)
    console.print("Presets: " + ", ".join(f"{p.name} ({len(p.seeds)} seed{'s' if len(p.seeds) > 1 else ''})"
                                          for p in PRESETS.values()))


def _print_summary(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"cutalign lab: preset {results['preset']['name']}")
    for column in ("experiment", "status", "seconds", "units computed", "units cached", "first finding / error"):
        table.add_column(column)
    for name, e in results["experiments"].items():
        detail = e.get("error", "") if e["status"] != "ok" else next(iter(e["result"]["findings"]), "")
        table.add_row(name, e["status"] if e["status"] == "ok" else f"[red]{e['status']}[/red]",
                      f"{e['seconds']:.1f}", str(e.get("units_computed", "")), str(e.get("units_cached", "")),
                      detail, end_section=False)
    console.print(table)
    for name in results["failed"]:
        console.print(f"[red]failed[/red] {name}: {results['experiments'][name]['error']}")
    console.print(f"Report: {results['report_path']}")
