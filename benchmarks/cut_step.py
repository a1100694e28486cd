"""Speed, memory and useful-work figures of one CUT training step: cutalign vs the official formulation.

Run ``python benchmarks/cut_step.py --help``; ``benchmarks/README.md`` explains every column.
Sections: ``steps`` (one forward + backward of four formulations on the same real batch, at each
vocabulary size, each in a fresh subprocess), ``useful-work`` (real / computed token positions over
a whole epoch) and ``two-step`` (two real ``CUTTrainer`` steps vs the naive formulation's memory).
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import _epoch
import _measure as m
import datasets
import torch
import transformers
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cutalign.data.io import read_records
from cutalign.data.sampling import downsample_positives
from cutalign.data.templates import ALPACA_JUDGED, ALPACA_PLAIN
from cutalign.data.views import resolve_bos_id

SHARED = Path(os.environ.get("CUTALIGN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DEFAULT_DATA = SHARED / "data" / "cut-online" / "train-alpaca-sample-iter1.json"
DEFAULT_TOKENIZER = SHARED / "tokenizers" / "llama2"
SECTIONS = ("steps", "useful-work", "two-step", "epoch")
# Opt-in: a ~0.5B model, minutes per step on a CPU.
OPTIONAL_SECTIONS = ("realistic",)
REALISTIC_METHODS = ("cut-fake_positive", "cut-instruction_only", "trl-dpo")
GIB = 2**30
MIB = 2**20
# The full-logit formulations hold three [rows, L, V] fp32 tensors at their peak (logits and their
# log-softmax in forward; in backward the log-softmax output, its gradient and the logits' gradient).
FULL_LOGIT_COPIES = 3

app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


@app.command()
def main(
    data: Annotated[Path, typer.Option(help="Judged data in the official cut-alpaca format.")] = DEFAULT_DATA,
    tokenizer: Annotated[Path, typer.Option(help="Tokenizer folder (the real Llama-2 one).")] = DEFAULT_TOKENIZER,
    batch_size: Annotated[int, typer.Option(help="Examples per step (and per batch in useful-work).")] = 8,
    seed: Annotated[int, typer.Option(help="Picks the step batch (random.Random(seed).sample) and the order.")] = 0,
    max_length: Annotated[int, typer.Option(help="Maximum tokens of context + response.")] = 2048,
    vocab_sizes: Annotated[str, typer.Option(help="Comma-separated vocabulary sizes for the steps.")] = "32000,128256",
    hidden_size: Annotated[int, typer.Option(help="Hidden size of the tiny Llama.")] = 128,
    num_layers: Annotated[int, typer.Option(help="Decoder layers of the tiny Llama.")] = 2,
    num_heads: Annotated[int, typer.Option(help="Attention heads of the tiny Llama.")] = 4,
    methods: Annotated[str, typer.Option(help="Comma-separated step methods.")] = ",".join(m.STEP_METHODS),
    repeats: Annotated[int, typer.Option(help="Timed steps after the warm-up step; the median is reported.")] = 3,
    chunk_size: Annotated[int, typer.Option(help="cutalign's logprob_chunk_size.")] = 1024,
    memory_limit_gib: Annotated[float | None, typer.Option(
        help="Full-logit steps predicted above this many GiB are not run, only predicted. Default: 60% of "
             "the memory available at start (CUDA: 90% of the free GPU memory).")] = None,
    sections: Annotated[str, typer.Option(help="Comma-separated sections to run.")] = ",".join(SECTIONS),
    examples: Annotated[int | None, typer.Option(help="Use only the first N examples of the data (quick runs).")] = None,
    two_step_vocab_size: Annotated[int, typer.Option(help="Vocabulary of the model in the two-step section.")] = 128256,
    epoch_examples: Annotated[int, typer.Option(help="Epoch section: the first N usable examples.")] = 48,
    epoch_max_length: Annotated[int, typer.Option(help="Epoch section: only examples whose views fit.")] = 1024,
    epoch_vocab_size: Annotated[int, typer.Option(help="Epoch section: the tiny model's vocabulary.")] = 32000,
    realistic: Annotated[str, typer.Option(
        help="Realistic section (opt-in: --sections realistic): hidden,layers,heads,vocab,batch,max_length,lora_r "
             "of the random Llama, the batch and LoRA.")] = "1024,14,16,128256,4,256,16",
    device: Annotated[str, typer.Option(help="'cpu', 'cuda' or 'auto'.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Model dtype: float32 or bfloat16.")] = "float32",
    packed_row_length: Annotated[int | None, typer.Option(
        help="cutalign's packed_row_length for the steps (unset: its default; 0: one packed row a pass).")] = None,
    in_process: Annotated[bool, typer.Option(help="Measure in this process (faster; no RSS column).")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write every figure as JSON here.")] = None,
) -> None:
    m.quiet()
    started = time.perf_counter()
    chosen = _choices(sections, SECTIONS + OPTIONAL_SECTIONS, "section")
    step_methods, vocabs = _choices(methods, m.STEP_METHODS, "method"), _ints(vocab_sizes)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    spec = dict(tokenizer=str(tokenizer), data=str(data), examples_limit=examples, batch_size=batch_size,
                max_length=max_length, chunk_size=chunk_size, device=device, dtype=dtype, seed=seed,
                hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, repeats=repeats,
                packed_row_length=packed_row_length)
    tok = m.load_tokenizer(tokenizer)
    too_small = [v for v in [*vocabs, two_step_vocab_size] if v < len(tok)]
    if too_small:
        raise typer.BadParameter(f"vocabulary sizes {too_small} are below the tokenizer's {len(tok)} tokens")
    console = Console(width=260, highlight=False)
    report: dict[str, Any] = {"machine": machine_info(device), "config": spec | {
        "vocab_sizes": vocabs, "methods": step_methods, "two_step_vocab_size": two_step_vocab_size,
        "in_process": in_process}}
    console.print(_machine_line(report["machine"]))
    canonical = m.load_examples(data, examples)
    if "steps" in chosen:
        limit = memory_limit_gib * GIB if memory_limit_gib is not None else default_memory_limit(device)
        report["steps"] = step_section(spec, canonical, tok, vocabs, step_methods, limit, in_process)
        _print_steps(console, report["steps"], repeats)
    if "useful-work" in chosen:
        report["useful_work"] = useful_work_section(spec, canonical, tok)
        _print_useful_work(console, report["useful_work"])
    if "two-step" in chosen:
        _progress(f"two CUTTrainer steps at vocab {two_step_vocab_size}")
        report["two_step"] = _measure_one(dict(spec, method=m.TWO_STEP, vocab_size=two_step_vocab_size), in_process)
        _print_two_step(console, report["two_step"])
    if "epoch" in chosen:
        epoch_spec = dict(spec, max_length=epoch_max_length, vocab_size=epoch_vocab_size)
        report["epoch"] = epoch_section(epoch_spec, canonical, tok, epoch_examples)
        _print_epoch(console, report["epoch"])
    if "realistic" in chosen:
        report["realistic"] = realistic_section(spec, canonical, tok, _ints(realistic), in_process)
        _print_realistic(console, report["realistic"])
    report["wall_time_s"] = time.perf_counter() - started
    console.print(f"\nwall time: {report['wall_time_s']:.0f} s")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- steps
def usable_examples(canonical: Sequence[dict], tok: Any, max_length: int) -> list[tuple[dict, dict]]:
    """``(example, plain + judged views)`` of every example cutalign can train on, in file order."""
    builder = m.view_builder(tok, max_length)
    return [(e, f) for e in canonical if isinstance(f := builder.build(e, ("plain", "judged")), dict)]


def select_batch(canonical: Sequence[dict], tok: Any, spec: dict) -> tuple[list[dict], list[dict]]:
    """``random.Random(seed).sample`` of ``batch_size`` usable examples, kept in file order."""
    usable = usable_examples(canonical, tok, spec["max_length"])
    if len(usable) < spec["batch_size"]:
        raise typer.BadParameter(f"only {len(usable)} usable examples in {spec['data']}, need {spec['batch_size']}")
    picked = sorted(random.Random(spec["seed"]).sample(range(len(usable)), spec["batch_size"]))
    return [usable[i][0] for i in picked], [usable[i][1] for i in picked]


def predicted_peak(method: str, features: Sequence[dict], vocab_size: int, hidden_size: int,
                   calibration: tuple[int, int] | None) -> tuple[int, str] | None:
    """Predicted step peak of a full-logit method and its basis (None for the chunked heads).

    Only the naive formulation and transformers' ``labels=`` loss hold full logits. cutalign's chunked
    log-probs and TRL's trainers (TRL >= 1.x patches a fused LM head: ``[4096 tokens, 32768 vocab]``
    tiles, recomputed in backward) do not, so a logits-sized prediction would wrongly skip them.
    With ``calibration = (vocab, measured peak)`` of the same method on the same batch, the peak grows
    by the vocabulary-proportional tensors: three ``[rows, L, V]`` fp32 copies and the gradients of
    the embedding and the LM head. Without one, three logits copies alone are a lower bound.
    """
    shape = {"naive-official": m.official_shape, "sft": m.sft_shape}.get(method)
    if shape is None:
        return None
    rows, length = shape(features)
    if calibration is None:
        return FULL_LOGIT_COPIES * rows * length * vocab_size * 4, "lower bound"
    measured_vocab, measured_peak = calibration
    per_token = FULL_LOGIT_COPIES * rows * length * 4 + 2 * hidden_size * 4
    return measured_peak + (vocab_size - measured_vocab) * per_token, f"from vocab {measured_vocab}"


def step_section(spec: dict, canonical: Sequence[dict], tok: Any, vocab_sizes: Sequence[int],
                 methods: Sequence[str], memory_limit: float, in_process: bool) -> dict[str, Any]:
    """Every method at every vocabulary (ascending, so larger ones get a calibrated prediction)."""
    batch, features = select_batch(canonical, tok, spec)
    rows, calibration = [], {}
    for vocab_size in sorted(vocab_sizes):
        for method in methods:
            row = {"method": method, "vocab_size": vocab_size}
            prediction = predicted_peak(method, features, vocab_size, spec["hidden_size"], calibration.get(method))
            if prediction is not None:
                row.update(predicted_peak_bytes=prediction[0], prediction_basis=prediction[1])
                if prediction[0] > memory_limit:
                    rows.append(row | {"skipped": f"predicted {prediction[0] / GIB:.1f} GiB > limit "
                                                  f"{memory_limit / GIB:.1f} GiB"})
                    continue
            _progress(f"measuring {method} at vocab {vocab_size}")
            row |= _measure_one(dict(spec, method=method, vocab_size=vocab_size,
                                     example_ids=[e["id"] for e in batch]), in_process)
            calibration[method] = (vocab_size, row["peak_bytes"])
            rows.append(row)
    return {
        "example_ids": [e["id"] for e in batch], "negatives": sum(bool(f["is_negative"]) for f in features),
        "response_tokens": sum(len(f["completion_ids"]) for f in features),
        "official_shape": m.official_shape(features), "sft_shape": m.sft_shape(features),
        "real_positions": real_positions([m.view_builder(tok, spec["max_length"]).build(
            e, ("plain", "judged", "misaligned")) for e in batch]),
        "memory_limit_bytes": memory_limit, "rows": rows,
    }


def real_positions(features: Sequence[dict]) -> dict[str, int]:
    """Non-pad token positions each method's forward passes need on the batch (useful work)."""
    plain = sum(len(f["plain_prompt_ids"]) + len(f["completion_ids"]) for f in features)
    negatives = [f for f in features if f["is_negative"]]
    judged = sum(len(f["judged_prompt_ids"]) + len(f["completion_ids"]) for f in negatives)
    misaligned = sum(len(f["misaligned_prompt_ids"]) + len(f["completion_ids"]) for f in negatives)
    return {"cut-fake_positive": plain + judged + misaligned, "cut-instruction_only": plain + judged,
            "cutalign-sft": plain, "trl-sft": plain, "sft": plain, "naive-official": plain + judged}


def _measure_one(spec: dict, in_process: bool) -> dict[str, Any]:
    """One measurement, in a fresh interpreter unless ``in_process`` (then without RSS figures)."""
    if in_process:
        return m.measure(spec)
    worker = Path(__file__).with_name("_measure.py")
    done = subprocess.run([sys.executable, str(worker), json.dumps(spec)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {spec['method']} (vocab {spec['vocab_size']}) failed with exit code "
                           f"{done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def default_memory_limit(device: str) -> float:
    """60% of the memory available now (the machine may be shared), or 90% of the free GPU memory."""
    if device == "cuda":
        return 0.9 * torch.cuda.mem_get_info()[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 * 0.6
    return 8 * GIB


# ---------------------------------------------------------------------------------------------- useful work
def useful_work_section(spec: dict, canonical: Sequence[dict], tok: Any) -> dict[str, Any]:
    """Real / computed positions over one epoch, all examples and with Align-P downsampled (0.25)."""
    rows = []
    records = official_records(spec["data"], spec["examples_limit"])
    for label, wrap_twice, batch_size, multiple in (
        ("official code: random order, both halves, pad to batch max (x8)", False, spec["batch_size"], 8),
        ("official code before e530277 (2024-01-09): template applied twice", True, spec["batch_size"], 8),
        ("official code as launched: micro-batch 1 per GPU (x8)", False, 1, 8),
    ):
        halves, negative = official_code_lengths(records, tok, spec["max_length"], wrap_twice)
        rows.append(_official_row(label, halves, negative, batch_size, multiple, spec["seed"]))
    features = [f for _, f in usable_examples(canonical, tok, spec["max_length"])]
    halves = [tuple(map(len, m.official_halves(f))) for f in features]
    rows.append(_official_row("official layout on cutalign's examples and token ids", halves,
                              [bool(f["is_negative"]) for f in features], spec["batch_size"], 1, spec["seed"]))
    _progress("counting cutalign's batches over the epoch")
    layouts = (("length-grouped, padded", {"padding_free": False}),
               ("packed, one row a pass (packed_row_length 0)", {"packed_row_length": 0}),
               ("packed, rows by attention cost (default)", {}))
    for layout, overrides in layouts:
        for mode in ("fake_positive", "instruction_only"):
            rows.append({"layout": f"cutalign {mode}, {layout}", **{
                name: cutalign_positions(spec, canonical, tok, mode, overrides, ratio)
                for name, ratio in (("all", None), ("downsampled", 0.25))
            }})
    return {"seed": spec["seed"], "batch_size": spec["batch_size"], "rows": rows}


def official_records(data: str, limit: int | None) -> list[dict[str, Any]]:
    """The raw records as the official script reads them (judge errors included, as negatives)."""
    records = []
    for record in read_records(data):
        row = record.raw
        missing = [k for k in ("instruction", "output", "judgment") if k not in row]
        if missing or not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
            raise ValueError(f"{record.source}:{record.line}: record lacks string field(s) "
                             f"{missing or ['instruction', 'output']}")
        records.append(row)
    return records[:limit] if limit else records


def official_code_lengths(records: Sequence[dict], tok: Any, cutoff: int,
                          wrap_twice: bool) -> tuple[list[tuple[int, int]], list[bool]]:
    """Lengths of both halves per record and polarity, tokenised as ``finetune_unlikelihood.py`` does.

    Negative = a judgment that is not null and no ``score >= 7``. Prompt + response are tokenised
    together, with BOS (the official LlamaTokenizer adds it), left-truncated to ``cutoff``, then EOS.
    ``wrap_twice``: the official prompter before commit e530277 (2024-01-09) formatted the plain template
    around the already formatted prompt; the current official code applies it once.
    """
    bos = resolve_bos_id(tok)
    texts, owners = [], []
    negative = []
    for index, row in enumerate(records):
        instruction = f"{row['instruction']}\n{row['input']}" if row.get("input") else row["instruction"]
        score = row.get("score")
        is_negative = row["judgment"] is not None and not (score is not None and score >= 7)
        prompts = [ALPACA_PLAIN.format(instruction=instruction)]
        if is_negative:
            prompts.insert(0, ALPACA_JUDGED.format(instruction=instruction, judgment=row["judgment"]))
        for prompt in prompts:
            prompt = ALPACA_PLAIN.format(instruction=prompt) if wrap_twice else prompt
            texts.append(prompt + row["output"])
            owners.append(index)
        negative.append(is_negative)
    lengths: list[list[int]] = [[] for _ in records]
    for owner, ids in zip(owners, tok(texts, add_special_tokens=False)["input_ids"], strict=True):
        ids = ([bos] if bos is not None else []) + ids
        ids = ids[-cutoff:]
        lengths[owner].append(len(ids) + int(ids[-1] != tok.eos_token_id))
    return [(pair[0], pair[1] if len(pair) > 1 else 0) for pair in lengths], negative


def downsampled_indices(negative: Sequence[bool], ratio: float, seed: int = 42) -> list[int]:
    """Rows kept by cutalign's (= the official) Align-P downsampling."""
    table = datasets.Dataset.from_dict({"is_negative": list(negative), "row": list(range(len(negative)))})
    kept, _ = downsample_positives(table, positive_ratio=ratio, seed=seed)
    return list(kept["row"])


def official_positions(halves: Sequence[tuple[int, int]], indices: Iterable[int], batch_size: int,
                       multiple: int, seed: int) -> dict[str, int]:
    """Random order; every example runs both halves; each batch padded to its longest half (rounded up)."""
    order = list(indices)
    random.Random(seed).shuffle(order)
    real = computed = 0
    for start in range(0, len(order), batch_size):
        batch = [halves[i] for i in order[start : start + batch_size]]
        width = -(-max(max(pair) for pair in batch) // multiple) * multiple
        real += sum(sum(pair) for pair in batch)
        computed += 2 * len(batch) * width
    return {"examples": len(order), "real": real, "computed": computed}


def cutalign_positions(spec: dict, canonical: Sequence[dict], tok: Any, mode: str, overrides: dict[str, Any],
                       ratio: float | None) -> dict[str, int]:
    """Count what ``CUTTrainer``'s own dataloader (length-grouped sampler, ContextCollator) feeds the model."""
    model = m.build_model(spec, len(tok))  # the step model: the packed layout depends on its shapes
    with tempfile.TemporaryDirectory() as output_dir:
        config = m.cut_config(spec, output_dir, **({"misalign_mode": mode, "positive_ratio": ratio} | overrides))
        trainer = m.new_cut_trainer(model, config, canonical, tok)
        real = computed = 0
        for batch in trainer.get_train_dataloader():
            for block in (batch["grad"], batch.get("nograd")):
                if block is None:
                    continue
                computed += block["input_ids"].numel()
                real += int(block["real_tokens"])
    return {"examples": len(trainer.train_dataset), "real": real, "computed": computed}


def _official_row(label: str, halves: Sequence[tuple[int, int]], negative: Sequence[bool], batch_size: int,
                  multiple: int, seed: int) -> dict[str, Any]:
    kept = downsampled_indices(negative, 0.25)
    return {"layout": label, "all": official_positions(halves, range(len(halves)), batch_size, multiple, seed),
            "downsampled": official_positions(halves, kept, batch_size, multiple, seed)}


# ---------------------------------------------------------------------------------------------- epoch, realistic
def epoch_section(spec: dict, canonical: Sequence[dict], tok: Any, count: int) -> dict[str, Any]:
    """A real CUT epoch (``cutalign.api.train``) vs the official layout over the same first examples."""
    usable = usable_examples(canonical, tok, spec["max_length"])[:count]
    if not usable:
        raise typer.BadParameter(f"no example of {spec['data']} fits --epoch-max-length {spec['max_length']}")
    _progress(f"epoch over {len(usable)} examples (cutalign train x2, official layout)")
    figures = _epoch.epoch_figures(spec, [e for e, _ in usable], [f for _, f in usable])
    return figures | {"max_length": spec["max_length"], "vocab_size": spec["vocab_size"]}


def balanced_batch(canonical: Sequence[dict], tok: Any, spec: dict) -> tuple[list[dict], list[dict]]:
    """Half negatives (rounded up), half positives, each a ``random.Random(seed).sample``, in file order."""
    usable = usable_examples(canonical, tok, spec["max_length"])
    rng = random.Random(spec["seed"])
    negative_count = -(-spec["batch_size"] // 2)
    picked = []
    for wanted, count in ((True, negative_count), (False, spec["batch_size"] - negative_count)):
        pool = [i for i, (_, f) in enumerate(usable) if bool(f["is_negative"]) is wanted]
        if len(pool) < count:
            raise typer.BadParameter(f"only {len(pool)} {'negative' if wanted else 'positive'} examples fit "
                                     f"{spec['max_length']} tokens, need {count}")
        picked += rng.sample(pool, count)
    return [usable[i][0] for i in sorted(picked)], [usable[i][1] for i in sorted(picked)]


def realistic_section(spec: dict, canonical: Sequence[dict], tok: Any, sizes: Sequence[int],
                      in_process: bool) -> dict[str, Any]:
    """CUT (both modes) vs TRL DPO at a realistic size: a random ~0.5B Llama, LoRA for both, short rows."""
    if len(sizes) != 7:
        raise typer.BadParameter("--realistic takes 7 integers: hidden,layers,heads,vocab,batch,max_length,lora_r")
    hidden, layers, heads, vocab, batch_size, max_length, lora_r = sizes
    big = dict(spec, hidden_size=hidden, num_layers=layers, num_heads=heads, batch_size=batch_size,
               max_length=max_length, lora_r=lora_r, repeats=1)
    batch, features = balanced_batch(canonical, tok, big)
    rows = []
    for method in REALISTIC_METHODS:
        _progress(f"realistic size: measuring {method} ({hidden}x{layers}, vocab {vocab}, LoRA r={lora_r})")
        rows.append(_measure_one(dict(big, method=method, vocab_size=vocab, example_ids=[e["id"] for e in batch]),
                                 in_process))
    return {"hidden_size": hidden, "num_layers": layers, "num_heads": heads, "vocab_size": vocab,
            "lora_r": lora_r, "batch_size": batch_size, "max_length": max_length,
            "example_ids": [e["id"] for e in batch], "negatives": sum(bool(f["is_negative"]) for f in features),
            "rows": rows}


# ---------------------------------------------------------------------------------------------- output
def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def _machine_line(info: dict[str, Any]) -> str:
    return (f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['torch_threads']} torch threads, "
            f"device {info['device']}; torch {info['torch']}, transformers {info['transformers']}, "
            f"python {info['python']}")


def _table(title: str, columns: Iterable[str]) -> Table:
    table = Table(title=title, box=box.MARKDOWN, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "layout", "run") else "right")
    return table


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def _print_steps(console: Console, steps: dict[str, Any], repeats: int) -> None:
    rows, shape = steps["official_shape"], steps["sft_shape"]
    console.print(f"\nStep batch: example ids {steps['example_ids']} (negatives: {steps['negatives']}, "
                  f"response tokens: {steps['response_tokens']}); official layout {rows[0]} x {rows[1]}, "
                  f"SFT {shape[0]} x {shape[1]}; memory limit {steps['memory_limit_bytes'] / GIB:.1f} GiB")
    table = _table("One training step (forward + backward)", [
        "vocab", "method", f"time s (median of {repeats})", "peak MiB", "RSS +MiB", "largest tensor",
        "largest MiB", "predicted peak MiB", "positions", "loss", f"time / {m.BASELINE}", f"peak / {m.BASELINE}",
        f"time / {m.DPO}", f"peak / {m.DPO}", "useful"])
    measured = [r for r in steps["rows"] if "skipped" not in r]
    baselines = [{r["vocab_size"]: r for r in measured if r["method"] == name} for name in (m.BASELINE, m.DPO)]
    for row in steps["rows"]:
        predicted = _predicted_cell(row)
        if "skipped" in row:
            table.add_row(str(row["vocab_size"]), row["method"], "not run", row["skipped"], "", "", "", predicted,
                          *[""] * 8)
            continue
        ratios = []
        for baseline in baselines:
            base = baseline.get(row["vocab_size"])
            ratios += [f"{row[key] / base[key]:.2f}x" if base else "-" for key in ("time_s", "peak_bytes")]
        real = row.get("real_positions", steps["real_positions"].get(row["method"]))
        useful = f"{real / row['positions']:.1%}" if row.get("positions") and real else "-"
        table.add_row(
            str(row["vocab_size"]), row["method"], f"{row['time_s']:.2f}", _mib(row["peak_bytes"]),
            _mib(row["rss_increase_bytes"]), "x".join(map(str, row["largest_tensor_shape"])),
            _mib(row["largest_tensor_bytes"]), predicted, f"{row['positions']:,}", f"{row['loss']:.3f}",
            *ratios, useful)
    console.print(table)


def _predicted_cell(row: dict[str, Any]) -> str:
    if "predicted_peak_bytes" not in row:
        return "-"
    sign = ">=" if row["prediction_basis"] == "lower bound" else "~"
    return f"{sign}{_mib(row['predicted_peak_bytes'])}"


def _print_useful_work(console: Console, work: dict[str, Any]) -> None:
    table = _table(f"Useful work over one epoch, batch {work['batch_size']} (real / computed token positions)",
                   ["layout", "examples", "real", "computed", "useful", "examples (Align-P 0.25)", "real ",
                    "computed ", "useful "])
    for row in work["rows"]:
        cells = [row["layout"]]
        for part in (row["all"], row["downsampled"]):
            cells += [str(part["examples"]), f"{part['real']:,}", f"{part['computed']:,}",
                      f"{part['real'] / part['computed']:.1%}"]
        table.add_row(*cells)
    console.print()
    console.print(table)


def _print_two_step(console: Console, run: dict[str, Any]) -> None:
    naive = max(FULL_LOGIT_COPIES * rows * length * run["vocab_size"] * 4 for rows, length in run["official_shapes"])
    console.print(
        f"\nTwo CUTTrainer steps (vocab {run['vocab_size']}, {run['examples_trained']} examples after "
        f"downsampling, {run['time_s']:.1f} s): peak {_mib(run['peak_bytes'])} MiB of tensors "
        f"(including gradients and AdamW state; RSS increase {_mib(run['rss_increase_bytes'])} MiB), largest tensor "
        f"{'x'.join(map(str, run['largest_tensor_shape']))} = {_mib(run['largest_tensor_bytes'])} MiB.\n"
        f"The naive official formulation on the same batches (official layouts {run['official_shapes']}): "
        f"predicted peak {_mib(naive)} MiB for its logits work alone ({naive / run['peak_bytes']:.0f}x).")


def _print_epoch(console: Console, epoch: dict[str, Any]) -> None:
    console.print(
        f"\nOne training epoch over the first {epoch['examples']} usable examples (views <= {epoch['max_length']} "
        f"tokens, {epoch['negatives']} negatives, {epoch['plain_tokens']:,} prompt+response (x+y) tokens), "
        f"vocab {epoch['vocab_size']}, AdamW lr {epoch['learning_rate']:g}")
    table = _table("One epoch: cutalign train vs the official layout",
                   ["run", "steps", "epoch s", "x+y tokens/s", "speed / official", "loss"])
    for row in epoch["rows"]:
        table.add_row(row["run"], str(row["steps"]), f"{row['seconds']:.1f}", f"{row['tokens_per_s']:,.0f}",
                      f"{row['speedup']:.2f}x", f"{row['loss']:.3f}")
    console.print(table)


def _print_realistic(console: Console, real: dict[str, Any]) -> None:
    first = real["rows"][0]
    console.print(
        f"\nRealistic size: random Llama, {first['parameters'] / 1e6:,.0f}M parameters (hidden {real['hidden_size']}, "
        f"{real['num_layers']} layers, vocab {real['vocab_size']}), LoRA r={real['lora_r']} on q/k/v/o for both; "
        f"batch {real['batch_size']} examples {real['example_ids']} ({real['negatives']} negatives), views <= "
        f"{real['max_length']} tokens; time of 1 step after a warm-up step")
    table = _table("CUT vs TRL DPO at a realistic size (forward + backward)",
                   ["method", "time s", "peak MiB", "RSS +MiB", "positions", "trainable", "time / trl-dpo",
                    "peak / trl-dpo"])
    dpo = next((r for r in real["rows"] if r["method"] == m.DPO), None)
    for row in real["rows"]:
        ratios = [f"{row[key] / dpo[key]:.2f}x" if dpo else "-" for key in ("time_s", "peak_bytes")]
        table.add_row(row["method"], f"{row['time_s']:.1f}", _mib(row["peak_bytes"]), _mib(row["rss_increase_bytes"]),
                      f"{row['positions']:,}", f"{row['trainable_parameters']:,}", *ratios)
    console.print(table)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from err


def _choices(text: str, known: Sequence[str], what: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown {what}(s) {unknown or chosen}; choose from {', '.join(known)}")
    return chosen


if __name__ == "__main__":
    app()
