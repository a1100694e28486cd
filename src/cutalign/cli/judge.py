"""`cutalign judge` (annotate rows with a judge, resumably) and `cutalign train-judge` (an AI judge)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cutalign.cli import app

BAD_INPUT = 2
JUDGE_FAILED = 1


@app.command()
def judge(
    input_path: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="Rows to judge: id, prompt, completion.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Judged canonical JSONL (appended to on resume).")],
    judge_kind: Annotated[str, typer.Option(
        "--judge", help="openai | hf | demo | python:MODULE:FUNCTION | python:FILE.py:FUNCTION")] = "openai",
    base_url: Annotated[str | None, typer.Option(
        "--base_url", "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")] = None,
    judge_model: Annotated[str | None, typer.Option(
        "--judge_model", "--judge-model", help="Model name at the endpoint (--judge openai).")] = None,
    api_key_env: Annotated[str | None, typer.Option(
        "--api_key_env", "--api-key-env",
        help="Environment variable holding the API key (default OPENAI_API_KEY; optional with --base_url).")] = None,
    prompt_template: Annotated[Path | None, typer.Option(
        "--prompt_template", "--prompt-template",
        help="Judge prompt file: YAML/JSON with 'system' and 'user', or a text file (the user turn); fields "
             "{instruction} {response}. Default: the paper's annotation prompt.")] = None,
    fold_system: Annotated[bool, typer.Option(
        "--fold_system", "--fold-system",
        help="Send the system prompt at the start of the user turn (models served without a system role, "
             "e.g. `cutalign serve` of an Alpaca-template model).")] = False,
    model: Annotated[str | None, typer.Option(
        "--model", help="Judge model dir, adapter dir or hub id (--judge hf).")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once (--judge openai).")] = 8,
    max_retries: Annotated[int, typer.Option(
        "--max_retries", "--max-retries", help="Retries per request on 429/5xx/timeouts/connection errors.")] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds per request before it is retried.")] = 60.0,
    batch_size: Annotated[int, typer.Option(
        "--batch_size", "--batch-size", help="Rows judged, then written, together.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(
        "--max_new_tokens", "--max-new-tokens",
        help="Longest judgment in tokens (max_tokens of each request with --judge openai).")] = 512,
    dtype: Annotated[str | None, typer.Option(help="Model dtype (--judge hf).")] = None,
    backend: Annotated[str, typer.Option(
        help="Generation backend of --judge hf: transformers, or vllm (pip install cutalign[vllm]).")] = "transformers",
    retry_errors: Annotated[bool, typer.Option(
        "--retry_errors", "--retry-errors",
        help="Also judge again rows the judge answered unusably (unparseable, refused). Rows with transient "
             "errors are always judged again; successful judgments never.")] = False,
    max_consecutive_failures: Annotated[int, typer.Option(
        "--max_consecutive_failures", "--max-consecutive-failures",
        help="Stop after this many failed rows in a row (0: never).")] = 10,
    max_error_rate: Annotated[float, typer.Option(
        "--max_error_rate", "--max-error-rate",
        help="Stop when more than this fraction of rows fail after 20 rows (1: never).")] = 0.5,
) -> None:
    """Judge every (prompt, completion) row of IN.jsonl into canonical judged rows.

    Resumable: rerun the same command after a crash, Ctrl-C or a judge outage and only the rows
    not yet written (or written with a transient error) are judged.
    """
    from rich.console import Console
    from tqdm.auto import tqdm

    from cutalign.data.schema import DataError
    from cutalign.files import ForeignOutputError
    from cutalign.judges.annotate import judge_file, read_judge_inputs
    from cutalign.judges.factory import close_judge, make_judge
    from cutalign.judges.guard import FailureGuard, JudgeFailureError

    console = Console(stderr=True)
    try:
        total = len(read_judge_inputs(input_path))
        guard = FailureGuard(max_consecutive=max_consecutive_failures, max_error_rate=max_error_rate)
        judge_ = make_judge(judge_kind, model=model, judge_model=judge_model, base_url=base_url,
                            api_key_env=api_key_env, prompt_template=prompt_template, concurrency=concurrency,
                            timeout=timeout, max_retries=max_retries, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, dtype=dtype, fold_system=fold_system,
                            backend=backend)
    except (DataError, ValueError, OSError) as err:
        _fail(str(err))
    try:
        with tqdm(total=total, desc="judging", unit="row") as bar:
            summary = judge_file(input_path, output, judge_, batch_size=batch_size, retry_errors=retry_errors,
                                 guard=guard, progress=bar.update)
    except JudgeFailureError as err:
        _print_summary(console, err.summary)  # type: ignore[attr-defined]
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(JUDGE_FAILED) from err
    except (DataError, ForeignOutputError, ValueError) as err:
        _fail(str(err))
    finally:
        close_judge(judge_)
    _print_summary(console, summary)


def _print_summary(console: Any, summary: Any) -> None:
    errors = ", ".join(f"{kind} {n}" for kind, n in summary.errors.most_common()) or "none"
    console.print(
        f"{summary.output}: {summary.total} rows; {summary.resumed} already judged, {summary.redone} judged again; "
        f"this run: {summary.judged} judged ({summary.satisfactory} satisfactory, {summary.unsatisfactory} not), "
        f"{summary.unparseable} unparseable, errors: {errors}", highlight=False, soft_wrap=True)
    if summary.failed and not summary.stopped:
        console.print(f"{summary.failed} rows failed (judgment \"$ERROR$\", dropped by the loaders as judge_error); "
                      "a rerun judges the transient ones again, --retry_errors all of them", highlight=False)


@dataclass
class TrainJudgeArguments:
    """What the judge learns from and how it is checked; the model, LoRA and trainer flags follow."""

    data: list[str] = field(default_factory=list, metadata={"help": "Judged data (files, folders, datasets ids)."})
    method: str = field(default="judge", metadata={"help": "Always 'judge' (lets a `cutalign train` YAML be reused)."})
    data_format: str = field(default="canonical", metadata={"help": "Format of --data (canonical or a converter)."})
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Held-out fraction (seeded by --seed) for the agreement in judge_eval.json."})
    judge_max_new_tokens: int = field(default=256, metadata={"help": "Judgment length when evaluating the judge."})
    judge_batch_size: int = field(default=8, metadata={"help": "Prompts per generate() call when evaluating."})


_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command("train-judge", context_settings=_CONTEXT, add_help_option=False)
def train_judge_command(ctx: typer.Context) -> None:
    """Fine-tune an AI judge (judgment + Yes./No.) on judged data; `--help` lists every flag."""
    from trl import ModelConfig, TrlParser

    from cutalign.cli.train import (
        _init_kwargs,
        _normalise_argv,
        _peft_config,
        _read_yaml,
        parse_training_argv,
    )
    from cutalign.trainer.config import MLEConfig

    argv = _normalise_argv(list(ctx.args))
    parser = TrlParser((TrainJudgeArguments, MLEConfig, ModelConfig), prog="cutalign train-judge")
    run_args, config, model_args = parse_training_argv(
        parser, argv, _read_yaml(argv), output_dir_help="where the judge model and judge_eval.json go")
    if not model_args.model_name_or_path or not run_args.data:
        _fail("train-judge needs --model and --data")
    if run_args.method != "judge":
        _fail(f"train-judge trains method 'judge', not {run_args.method!r}; use `cutalign train` for that")
    from cutalign.data.schema import DataError
    from cutalign.judges.training import train_judge

    try:
        config.model_init_kwargs = _init_kwargs(config.model_init_kwargs, model_args)
        report = train_judge(run_args.data[0] if len(run_args.data) == 1 else run_args.data,
                             model=model_args.model_name_or_path, config=config,
                             peft_config=_peft_config(model_args), data_format=run_args.data_format,
                             eval_fraction=run_args.eval_fraction, eval_max_new_tokens=run_args.judge_max_new_tokens,
                             eval_batch_size=run_args.judge_batch_size,
                             run_config={"run": asdict(run_args), "model": asdict(model_args)})
    except (DataError, ValueError, TypeError, OSError) as err:
        _fail(str(err))
    _print_train_report(report)


def _print_train_report(report: dict[str, Any]) -> None:
    from cutalign.judges.training import EVAL_FILE

    train = report["train"]
    typer.echo(f"judge written to {report['output_dir']} (train_loss {train.get('train_loss', float('nan')):.4f}, "
               f"{train['train_examples']} examples, {train['dropped_examples']} dropped)", err=True)
    evaluation = report["eval"]
    if evaluation is not None:
        failed = sum(evaluation["failed"].values())
        typer.echo(f"held-out agreement: {evaluation['agreeing']}/{evaluation['examples']} = "
                   f"{evaluation['agreement']:.3f} (always the majority label: {evaluation['majority_baseline']:.3f}; "
                   f"{failed} verdicts unreadable); see {Path(report['output_dir']) / EVAL_FILE}", err=True)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(BAD_INPUT)
