"""`cutalign eval`: accuracy, rouge, winrate, harness (lm_eval) and compare; each writes results.json + summary.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cutalign.cli import app

eval_app = typer.Typer(help="Measure models: accuracy, rouge, winrate, harness (lm_eval), compare.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")

OutputDir = Annotated[Path, typer.Option("--output_dir", "--output-dir", help="Where results.json and summary.md go.")]
Outputs = Annotated[Path | None, typer.Option(
    "--outputs", help="Model outputs: `cutalign generate` JSONL or AlpacaEval JSON (else --model and --data).")]
Model = Annotated[str | None, typer.Option("--model", help="Generate the outputs first with this model (with --data).")]
Data = Annotated[Path | None, typer.Option("--data", help="Prompts for --model (the generate input format).")]
MaxNew = Annotated[int, typer.Option("--max_new_tokens", "--max-new-tokens", help="Tokens per generated output.")]
Limit = Annotated[int | None, typer.Option("--limit", help="Only the first N prompts (with --model).")]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _bad_input() -> tuple[type[BaseException], ...]:
    from cutalign.data.schema import DataError
    from cutalign.files import ForeignOutputError

    return DataError, ForeignOutputError, ValueError, OSError


def _rows(outputs: Path | None, model: str | None, data: Path | None, output_dir: Path, max_new_tokens: int,
          limit: int | None) -> list[Any]:
    """The outputs to evaluate: read from --outputs, or generated (resumably) by --model into OUTPUT_DIR."""
    from tqdm.auto import tqdm

    from cutalign.eval.outputs import read_outputs
    from cutalign.eval.pipeline import generate_outputs
    from cutalign.generation.prompts import read_prompts

    if (outputs is None) == (model is None):
        raise ValueError("give either --outputs FILE or --model M with --data PROMPTS")
    if outputs is not None:
        return read_outputs(outputs)
    if data is None:
        raise ValueError("--model needs --data (the prompts to answer)")
    total = len(read_prompts(data)[:limit])
    with tqdm(total=total, desc="generating", unit="prompt") as bar:
        rows, summary = generate_outputs(model, data, output_dir / "outputs.jsonl", max_new_tokens=max_new_tokens,
                                         limit=limit, progress=bar.update)
    for line in summary.lines():
        typer.echo(line, err=True)
    return rows


def _finish(output_dir: Path, results: dict[str, Any], summary: str) -> None:
    from cutalign.eval.results import write_results

    write_results(output_dir, results, summary)
    typer.echo(summary)
    typer.echo(f"\nwrote {output_dir / 'results.json'}, {output_dir / 'summary.md'}", err=True)


@eval_app.command("accuracy")
def accuracy_command(
    output_dir: OutputDir, outputs: Outputs = None, model: Model = None, data: Data = None,
    judge: Annotated[str, typer.Option("--judge", help="A python judge: python:MODULE:FUNCTION, FILE.py:FUNCTION "
                                                       "or demo (default: the lab's judge).")] = "python:cutalign.lab.judge:judge_response",
    max_new_tokens: MaxNew = 64, limit: Limit = None,
) -> None:
    """Exact-match accuracy of programmatic tasks (the built-in world, the lab) via a python judge."""
    from tqdm.auto import tqdm

    from cutalign.eval.accuracy import accuracy, accuracy_summary
    from cutalign.judges.python_judge import PythonJudge

    try:
        if not (judge == "demo" or judge.startswith("python:") or ".py:" in judge):
            raise ValueError(f"--judge {judge!r}: accuracy needs a python judge (python:MODULE:FUNCTION or demo)")
        judge_ = PythonJudge.from_spec(judge)
        rows = _rows(outputs, model, data, output_dir, max_new_tokens, limit)
    except _bad_input() as err:
        _fail(str(err))
    with tqdm(total=len(rows), desc="judging", unit="row") as bar:
        results = accuracy(rows, judge_, progress=bar.update)
    _finish(output_dir, results | {"outputs": str(outputs or output_dir / "outputs.jsonl")},
            accuracy_summary(results, str(outputs or model)))


@eval_app.command("rouge")
def rouge_command(
    output_dir: OutputDir, outputs: Outputs = None, model: Model = None, data: Data = None,
    references: Annotated[Path | None, typer.Option(
        "--references", help="Reference file (same formats; matched by id, else instruction). Default: each "
                             "output row's `reference` field.")] = None,
    no_stemmer: Annotated[bool, typer.Option("--no_stemmer", "--no-stemmer", help="Score without Porter stemming.")
                          ] = False,
    max_new_tokens: MaxNew = 256, limit: Limit = None,
) -> None:
    """ROUGE-1/2/L/Lsum of the outputs against references (rouge-score)."""
    from cutalign.data.schema import DataError
    from cutalign.eval.outputs import pair_outputs, read_outputs
    from cutalign.eval.rouge import rouge, rouge_summary

    try:
        rows = _rows(outputs, model, data, output_dir, max_new_tokens, limit)
        if references is not None:
            refs = [ref.output for _, ref in pair_outputs(rows, read_outputs(references))]
        else:
            missing = next((r for r in rows if r.reference is None), None)
            if missing is not None:
                raise DataError(missing.where[0], missing.where[1], "reference", "missing (or pass --references)")
            refs = [r.reference for r in rows]
        results = rouge([r.output for r in rows], refs, use_stemmer=not no_stemmer)
    except _bad_input() as err:
        _fail(str(err))
    _finish(output_dir, results, rouge_summary(results, str(outputs or model)))


@eval_app.command("winrate")
def winrate_command(
    output_dir: OutputDir,
    references: Annotated[Path, typer.Option("--references", help="Reference outputs (e.g. the base model's).")],
    outputs: Outputs = None, model: Model = None, data: Data = None,
    judge: Annotated[str, typer.Option("--judge", help="Pairwise judge: openai (any OpenAI-compatible endpoint, "
                                                       "e.g. `cutalign serve`), or a programmatic python judge "
                                                       "(python:MODULE:FUNCTION, demo: the better verdict wins).")
                       ] = "openai",
    judge_model: Annotated[str | None, typer.Option("--judge_model", "--judge-model", help="Served judge model name.")
                           ] = None,
    base_url: Annotated[str | None, typer.Option("--base_url", "--base-url", help="Judge endpoint, e.g. "
                                                                             "http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[str | None, typer.Option("--api_key_env", "--api-key-env",
                                                    help="Environment variable holding the judge's API key.")] = None,
    generator_name: Annotated[str, typer.Option("--generator", help="Name in the AlpacaEval files.")] = "model",
    reference_name: Annotated[str, typer.Option("--reference_name", "--reference-name",
                                                help="Reference generator name in the AlpacaEval files.")] = "reference",
    n_bootstrap: Annotated[int, typer.Option("--n_bootstrap", "--n-bootstrap", help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Judge requests in flight.")] = 8,
    judge_max_tokens: Annotated[int, typer.Option("--judge_max_tokens", "--judge-max-tokens",
                                                  help="Reply tokens per verdict (the judge answers A, B or tie).")
                                ] = 16,
    max_new_tokens: MaxNew = 256, limit: Limit = None,
) -> None:
    """Win rate of the outputs vs references, judged pairwise in both orders, with bootstrap CI and LC win rate."""
    from tqdm.auto import tqdm

    from cutalign.eval.outputs import alpaca_eval_rows, pair_outputs, read_outputs
    from cutalign.eval.winrate import (
        PointwisePairwise,
        judge_pairs_both_orders,
        winrate_from_verdicts,
        winrate_summary,
    )
    from cutalign.files import atomic_write_json, atomic_write_jsonl
    from cutalign.judges.factory import close_judge, make_judge

    try:
        if n_bootstrap < 10:
            raise ValueError(f"--n_bootstrap must be >= 10, got {n_bootstrap}")
        if judge == "openai":
            from cutalign.judges.openai_judge import OpenAIJudge

            if not judge_model:
                raise ValueError("--judge openai needs --judge_model (the model name the endpoint serves)")
            judge_ = OpenAIJudge(judge_model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
                                 max_tokens=judge_max_tokens)
        else:
            judge_ = make_judge(judge, judge_model=judge_model, base_url=base_url, api_key_env=api_key_env,
                                concurrency=concurrency)
        if not callable(getattr(judge_, "judge_pairs", None)):
            if not (judge == "demo" or judge.startswith("python:")):
                raise ValueError(f"--judge {judge}: this judge has no pairwise mode (judge_pairs); use --judge openai")
            judge_ = PointwisePairwise(judge_)  # a programmatic judge: the better verdict wins
        rows = _rows(outputs, model, data, output_dir, max_new_tokens, limit)
        pairs = pair_outputs(rows, read_outputs(references))
    except _bad_input() as err:
        _fail(str(err))
    try:
        with tqdm(total=len(pairs), desc="judging pairs", unit="pair") as bar:
            verdicts = judge_pairs_both_orders(pairs, judge_, progress=bar.update)
    finally:
        close_judge(judge_)
    results = winrate_from_verdicts(verdicts, n_bootstrap=n_bootstrap, seed=seed) | {
        "judge": getattr(judge_, "name", judge), "outputs": str(outputs or output_dir / "outputs.jsonl"),
        "references": str(references)}
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(output_dir / "verdicts.jsonl", verdicts)
    atomic_write_json(output_dir / "model_outputs.json", alpaca_eval_rows([m for m, _ in pairs], generator_name))
    atomic_write_json(output_dir / "reference_outputs.json", alpaca_eval_rows([r for _, r in pairs], reference_name))
    _finish(output_dir, results, winrate_summary(results, f"{outputs or model} vs {references}"))


@eval_app.command("harness")
def harness_command(
    output_dir: OutputDir,
    model: Annotated[str, typer.Option("--model", help="A (merged) HF model directory.")],
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated lm_eval tasks, e.g. arc_challenge.")],
    num_fewshot: Annotated[int | None, typer.Option("--num_fewshot", "--num-fewshot", help="Few-shot examples.")
                           ] = None,
    batch_size: Annotated[str, typer.Option("--batch_size", "--batch-size", help="lm_eval batch size.")] = "auto",
    device: Annotated[str | None, typer.Option("--device", help="lm_eval device, e.g. cuda:0 or cpu.")] = None,
    include_path: Annotated[Path | None, typer.Option("--include_path", "--include-path",
                                                      help="Folder of local task YAMLs.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Examples per task (smoke runs).")] = None,
) -> None:
    """Run lm-evaluation-harness (`lm_eval --model hf`) on a model directory; its scores into results.json."""
    from cutalign.eval.harness import harness_summary, lm_eval_command, run_lm_eval

    if not Path(model).is_dir():
        _fail(f"--model {model}: not a directory (merge a LoRA run first: cutalign merge RUN -o OUT)")
    argv = lm_eval_command(model, [t.strip() for t in tasks.split(",") if t.strip()], output_dir / "lm_eval",
                           num_fewshot=num_fewshot, batch_size=batch_size, device=device,
                           include_path=include_path, limit=limit)
    typer.echo("running: " + " ".join(argv), err=True)
    try:
        results = run_lm_eval(argv, output_dir / "lm_eval")
    except (ValueError, RuntimeError) as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise typer.Exit(1) from err
    _finish(output_dir, results, harness_summary(results, model))


@eval_app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Eval output directories (or their results.json).")],
    output_dir: OutputDir,
    names: Annotated[str | None, typer.Option("--names", help="Comma-separated run names (default: dir names).")
                     ] = None,
) -> None:
    """One table (summary.md, printed) and a bar chart (compare.png) over several eval outputs."""
    from cutalign.eval.compare import compare_chart, compare_markdown, compare_runs

    try:
        table = compare_runs(runs, names.split(",") if names else None)
    except _bad_input() as err:
        _fail(str(err))
    output_dir.mkdir(parents=True, exist_ok=True)
    compare_chart(table, output_dir / "compare.png")
    _finish(output_dir, table, compare_markdown(table))
