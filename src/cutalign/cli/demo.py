"""`cutalign demo`: the quick start's main job, CUT on the built-in default, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cutalign.cli import app


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where to write the trained model and data.")] = Path("runs/cut-demo"),
    epochs: Annotated[float, typer.Option(help="Passes over the bundled sample.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed (model init, data order).")] = 42,
    json_out: Annotated[bool, typer.Option("--json", help="Also print the figures as JSON.")] = False,
) -> None:
    """Train CUT on a built-in fact world with a tiny model (about a minute on 2 CPU cores)."""
    import json

    from cutalign.demo.run import DemoSettings, run_demo

    figures = run_demo(DemoSettings(output_dir=output_dir, epochs=epochs, seed=seed))
    if json_out:
        typer.echo(json.dumps(figures, indent=2))
