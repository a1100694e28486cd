"""`cutalign inspect`: CUT's detection token by token (HTML page, Figure-2 PNG, terminal view, JSON, sweep)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cutalign.cli import app

# Settings read from the model's saved cutalign_config.yaml when the flag is not given.
SAVED_KEYS = ("threshold", "alpha", "gamma", "mode", "misalign_mode", "fake_positive_text", "max_length")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


@app.command("inspect")
def inspect_command(
    model: Annotated[str, typer.Option("--model", help="Model dir, adapter dir or hub id.")],
    data: Annotated[Path, typer.Option("--data", help="Judged data (canonical JSON/JSONL; an optional "
                                                      "`error_spans` field gives gold wrong spans).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output stem: writes OUT.html, OUT.png and OUT.json.")] = None,
    ids: Annotated[list[str] | None, typer.Option("--ids", help="Example ids to inspect (repeat or comma-separate).")
                   ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Without --ids: the first N examples (--sweep: all).")] = 8,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Detection lambda (default: the model's training value, else 1.1).")] = None,
    misalign_mode: Annotated[str | None, typer.Option(
        "--misalign_mode", "--misalign-mode", help="fake_positive or instruction_only (default: as trained).")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="Unlikelihood weight (default: as trained).")] = None,
    gamma: Annotated[float | None, typer.Option("--gamma", help="Focal exponent (default: as trained).")] = None,
    data_format: Annotated[str, typer.Option("--data_format", "--data-format",
                                             help="Format of --data (canonical or a converter).")] = "canonical",
    template: Annotated[str | None, typer.Option("--template", help="'alpaca' or 'chat' (default: as trained).")
                        ] = None,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", help="Comma-separated thresholds, e.g. 1.0,1.1,1.2,1.5,2: |U| (and P/R/F1 with gold spans) "
                        "per threshold over every example of --data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports (or the sweep) as JSON on stdout.")
                       ] = False,
    table: Annotated[bool, typer.Option("--table", help="Terminal view: also every token's numbers.")] = False,
    batch_size: Annotated[int, typer.Option("--batch_size", "--batch-size", help="Examples per forward pass.")] = 8,
    dtype: Annotated[str, typer.Option("--dtype", help="Model dtype.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, ...")] = "auto",
) -> None:
    """Show, for each example, every response token's p(t|x), p(t|x,j-), p(t|misaligned), ratio, U and weight."""
    from rich.console import Console
    from tqdm.auto import tqdm

    from cutalign.data.schema import DataError
    from cutalign.data.templates import resolve_template, saved_run_config
    from cutalign.inspection.core import InspectConfig, inspect_examples
    from cutalign.inspection.data import load_inspect_examples
    from cutalign.inspection.sweep import parse_thresholds
    from cutalign.models import load_model

    wanted = [i.strip() for value in ids or [] for i in value.split(",") if i.strip()]
    try:
        thresholds = parse_thresholds(sweep) if sweep is not None else None
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        saved, _ = saved_run_config(model) if Path(model).exists() else ({}, None)
        settings: dict[str, Any] = {k: saved[k] for k in SAVED_KEYS if saved.get(k) is not None}
        explicit = {"threshold": threshold, "misalign_mode": misalign_mode, "alpha": alpha, "gamma": gamma}
        settings.update({k: v for k, v in explicit.items() if v is not None})
        config = InspectConfig(batch_size=batch_size, **settings)
        examples, report = load_inspect_examples(data, data_format=data_format, ids=wanted,
                                                 limit=None if thresholds else limit)
        if not examples:
            raise ValueError(f"{data}: no usable example ({report.describe(0)})")
        lm, tokenizer = load_model(model, dtype=dtype, device=device)
        prompt_template = resolve_template(model, tokenizer, template=template)
    except (DataError, ValueError, OSError) as err:
        _fail(str(err))
    with tqdm(total=len(examples), desc="inspecting", unit="example") as bar:
        reports = inspect_examples(lm, tokenizer, examples, config, template=prompt_template, dropped=report,
                                   progress=bar.update)
    console = Console(stderr=True)
    for line in report.lines():
        console.print(f"dropped {line}", highlight=False)
    if thresholds is not None:
        _show_sweep(reports, thresholds, config, output, as_json, console)
        return
    _write_outputs(reports, output, console)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reports], ensure_ascii=False))
    else:
        from cutalign.inspection.terminal import report_panel

        out = Console()
        for r in reports:
            out.print(report_panel(r, table=table))


def _write_outputs(reports: list, output: Path | None, console: Any) -> None:
    if output is None:
        return
    from cutalign.files import atomic_write_json, atomic_write_text
    from cutalign.inspection.figure import render_figure
    from cutalign.inspection.html import render_html

    stem = output.with_suffix("") if output.suffix in (".html", ".png", ".json") else output
    stem.parent.mkdir(parents=True, exist_ok=True)
    html_path, png_path, json_path = (stem.with_name(stem.name + ext) for ext in (".html", ".png", ".json"))
    atomic_write_text(html_path, render_html(reports, title=f"cutalign inspect: {stem.name}"))
    atomic_write_json(json_path, [r.to_dict() for r in reports])
    written = [html_path, json_path]
    if any(r.is_negative for r in reports):
        render_figure(reports, png_path)
        written.append(png_path)
    else:
        console.print("no negative among the inspected examples: no PNG (it compares the two judged contexts)")
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)


def _show_sweep(reports: list, thresholds: list[float], config: Any, output: Path | None, as_json: bool,
                console: Any) -> None:
    from rich.console import Console

    from cutalign.files import atomic_write_json
    from cutalign.inspection.sweep import sweep_thresholds
    from cutalign.inspection.terminal import sweep_table

    rows = sweep_thresholds(reports, thresholds, config)
    payload = {"examples": len(reports), "misalign_mode": config.misalign_mode, "rows": [r.to_dict() for r in rows]}
    if output is not None:
        path = output if output.suffix == ".json" else output.with_name(output.name + ".sweep.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, payload)
        console.print(f"wrote {path}", highlight=False)
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        Console().print(sweep_table(rows))
