"""`cutalign data convert|check`: turn published judgment data into canonical JSONL, and inspect it.

Malformed input exits with code 2 and the file, line and field on stderr, so scripts can tell
bad data (2) from a crash (1); so does an output that cannot be written (the earlier file stays).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from cutalign.cli import app
from cutalign.data.converters import CONVERTERS, convert, load_judged
from cutalign.data.io import write_jsonl
from cutalign.data.report import DropReport
from cutalign.data.schema import EXTRA_FIELDS, DataError, PolarityRule
from cutalign.data.summary import render_summary, summarize

BAD_INPUT = 2
T = TypeVar("T")

data_app = typer.Typer(
    help="Convert judgment data to the canonical format, and check or summarise it.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

FormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="Input format: canonical, cut-alpaca, shepherd, openai-critiques, ultrafeedback.",
    ),
]
ThresholdOption = Annotated[
    float,
    typer.Option(
        "--score_threshold", "--score-threshold", help="A score at or above this makes an unlabelled example positive."
    ),
]
PatternOption = Annotated[
    str | None,
    typer.Option(
        "--positive_pattern",
        "--positive-pattern",
        help="Regex: an unlabelled example whose judgment matches it is positive.",
    ),
]
ExtraFieldsOption = Annotated[
    str,
    typer.Option(
        "--extra_fields",
        "--extra-fields",
        help="Unknown fields in canonical or cut-alpaca rows: 'error' (a misspelled 'judgement' is caught) "
        "or 'ignore'.",
    ),
]
SplitOption = Annotated[str, typer.Option("--split", help="Split to read from a `datasets` source.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(BAD_INPUT)


def _load(
    fmt: str,
    score_threshold: float,
    positive_pattern: str | None,
    extra_fields: str,
    load: Callable[[PolarityRule], T],
) -> T:
    """Check the format and the options, then ``load`` with the rule; bad input exits with code 2."""
    if fmt not in CONVERTERS:
        _fail(f"unknown format {fmt!r}; known formats: {', '.join(sorted(CONVERTERS))}")
    if extra_fields not in EXTRA_FIELDS:
        _fail(f"--extra_fields must be one of {', '.join(EXTRA_FIELDS)}, got {extra_fields!r}")
    try:
        rule = PolarityRule(score_threshold=score_threshold, positive_pattern=positive_pattern)
    except ValueError as err:  # a --positive_pattern that is not a regex
        _fail(str(err))
    try:
        return load(rule)
    except DataError as err:
        _fail(str(err))


def _print_drops(console: Console, report: DropReport) -> None:
    for line in report.lines():
        prefix = "" if line.startswith("notice ") else "dropped "
        console.print(f"{prefix}{line}", highlight=False, soft_wrap=True)


@data_app.command("convert")
def convert_command(
    inputs: Annotated[
        list[str], typer.Argument(help="Input files, folders, saved datasets or `datasets` ids.")
    ],
    fmt: FormatOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Canonical JSONL file to write.")],
    score_threshold: ThresholdOption = 7.0,
    positive_pattern: PatternOption = None,
    extra_fields: ExtraFieldsOption = "error",
    split: SplitOption = "train",
) -> None:
    """Convert INPUTS to canonical JSONL (written atomically), printing totals and per-reason drop counts."""
    examples, report = _load(
        fmt,
        score_threshold,
        positive_pattern,
        extra_fields,
        lambda rule: convert(fmt, inputs, rule, split=split, extra_fields=extra_fields),
    )
    try:
        written = write_jsonl(examples, output)
    except OSError as err:  # read-only folder, disk full: the earlier file, if any, is untouched
        parent = err.filename and str(output).startswith(f"{err.filename}/")  # e.g. a file where a folder must be
        culprit = f" ({err.filename})" if parent else ""
        _fail(f"{output}: cannot write: {err.strerror or err}{culprit}")
    positive = sum(1 for example in examples if example["label"])
    console = Console()
    console.print(
        f"wrote {written} examples to {output} ({positive} positive, {written - positive} negative); "
        f"dropped {report.total}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(report.describe(written), highlight=False, soft_wrap=True)
    _print_drops(console, report)


@data_app.command("check")
def check_command(
    sources: Annotated[list[str], typer.Argument(help="Files, folders, saved datasets or `datasets` ids.")],
    fmt: FormatOption = "canonical",
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", "-t", help="Tokenizer (local path) for token-length percentiles."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    split: SplitOption = "train",
    score_threshold: ThresholdOption = 7.0,
    positive_pattern: PatternOption = None,
    extra_fields: ExtraFieldsOption = "error",
) -> None:
    """Validate SOURCES and summarise them: counts, drops, notices, and (with --tokenizer) token lengths."""
    judged = _load(
        fmt,
        score_threshold,
        positive_pattern,
        extra_fields,
        lambda rule: load_judged(sources, fmt, rule=rule, split=split, extra_fields=extra_fields),
    )
    summary = summarize(judged.dataset, judged.report, tokenizer=_load_tokenizer(tokenizer) if tokenizer else None)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console = Console()
    console.print(render_summary(summary))
    console.print(judged.describe(), highlight=False, soft_wrap=True)
    _print_drops(console, judged.report)


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as err:
        _fail(f"cannot load tokenizer {name!r}: {err}")
