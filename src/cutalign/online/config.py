"""`OnlineConfig`: every setting of the online loop, one flat dataclass (YAML keys = CLI flags).

A run directory remembers the config it started with; a rerun with a different one is refused
(`ConfigChangedError`) because mixing two experiments in one run would make its curves meaningless.
Keys in `OPERATIONAL_KEYS` change how a run is kept, not what it computes, and may change freely.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cutalign.data.schema import DataError

BUILTIN = "builtin"
KEEP_MODELS = ("last", "all")
# Settings that do not change what a run computes: changing them on a rerun is allowed.
OPERATIONAL_KEYS = frozenset({"keep_models"})
CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass
class OnlineConfig:
    """The online loop: generate with the policy, judge, train (CUT by default, LoRA), merge, evaluate."""

    # -- policy and prompts
    model: str = field(default=BUILTIN, metadata={
        "help": "Starting policy: a model dir or hub id. 'builtin' = the tiny model of the built-in fact world "
                "(warm-started with a short SFT so it knows some facts)."})
    prompts: str = field(default=BUILTIN, metadata={
        "help": "Prompt pool: a JSON/JSONL file of records with `prompt` (or `instruction`/`input`) and an "
                "optional `id`. 'builtin' = the fact world's questions."})
    prompts_per_iteration: int = field(default=64, metadata={"help": "Fresh instructions per iteration (N)."})
    reuse_prompts: bool = field(default=False, metadata={
        "help": "Let iterations reuse instructions (each iteration draws N from the whole pool); by default "
                "no instruction is used twice in a run."})
    seed: int = field(default=42, metadata={"help": "Seed of prompt selection, sampling and training."})
    # -- generation
    generator: str = field(default="transformers", metadata={
        "help": "Generation backend for the policy: 'transformers' or 'vllm' (loads the current model)."})
    template: str = field(default="alpaca", metadata={
        "help": "Prompt template of generation and training: 'alpaca' or 'chat'."})
    system_prompt: str | None = field(default=None, metadata={"help": "With template 'chat': a system message."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens generated per response."})
    do_sample: bool = field(default=True, metadata={
        "help": "Sample responses (online exploration) instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    generation_batch_size: int = field(default=16, metadata={
        "help": "Prompts per generation call; also the unit of resumption (a crashed batch is redone)."})
    # -- judging
    judge: str = field(default="demo", metadata={
        "help": "Judge kind: 'demo' (the built-in world's programmatic judge), 'python:module:function', "
                "'openai' (any OpenAI-compatible endpoint) or 'hf' (a local judge model)."})
    judge_model: str | None = field(default=None, metadata={
        "help": "Judge model: the endpoint's model name (openai) or a model dir (hf)."})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible endpoint of the judge."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "Environment variable holding the judge's API key (the key itself is never written)."})
    judge_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Further judge settings (e.g. prompt_file, concurrency, timeout), passed to the judge factory."})
    judge_batch_size: int = field(default=16, metadata={"help": "Completions per judge call (unit of resumption)."})
    # -- training
    method: str = field(default="cut", metadata={"help": "Training method (any of `cutalign methods`)."})
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter and merge it (default) "
                                                           "instead of fine-tuning all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(default=None, metadata={
        "help": "Modules LoRA adapts (default: PEFT's choice for the architecture; 'all-linear' for every "
                "linear layer)."})
    train: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Fields of the method's training config (`cutalign train --method M --help`), e.g. "
                "learning_rate, num_train_epochs, per_device_train_batch_size, positive_ratio, threshold."})
    save_steps: int = field(default=20, metadata={
        "help": "Checkpoint every N optimizer steps, so a killed run resumes training from the newest one."})
    merge_dtype: str = field(default="float32", metadata={"help": "Weights dtype of the merged model."})
    # -- evaluation and housekeeping
    eval: str | None = field(default=None, metadata={
        "help": "Evaluation hook after each merge: a Python callable 'module:function' (called with the model "
                "path, returns a dict of metrics) or a shell command with {model}, {iteration}, {dir} (the iteration's "
                "folder) and {output} placeholders that writes a JSON object of metrics to {output} (or prints "
                "one as its last line)."})
    eval_metric: str = field(default="accuracy", metadata={"help": "The eval metric shown in the table and plot."})
    keep_models: str = field(default="all", metadata={
        "help": "'all' keeps every iteration's merged model; 'last' deletes older ones once the next is done."})

    def __post_init__(self) -> None:
        for name in ("prompts_per_iteration", "max_new_tokens", "generation_batch_size", "judge_batch_size",
                     "save_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.keep_models not in KEEP_MODELS:
            raise ValueError(f"keep_models must be one of {', '.join(KEEP_MODELS)}, got {self.keep_models!r}")
        if self.template not in ("alpaca", "chat"):
            raise ValueError(f"template must be 'alpaca' or 'chat', got {self.template!r}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        if not isinstance(self.train, dict) or not isinstance(self.judge_options, dict):
            raise ValueError("train and judge_options must be mappings of setting -> value")
        reserved = {"output_dir", "resume_from_checkpoint", "save_strategy"} & set(self.train)
        if reserved:
            raise ValueError(f"train: {', '.join(sorted(reserved))} are set by the loop (per iteration)")

    @property
    def is_builtin(self) -> bool:
        return self.model == BUILTIN

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def builtin_preset() -> dict[str, Any]:
    """Settings of the built-in fact world (those of `cutalign demo`): its 750k-parameter base is fully
    fine-tuned (LoRA adds little on a 128-wide model), answers are sampled at T=1, and every iteration
    asks the whole pool (216 questions: each of the 72 facts in its 3 wordings) -- a subset per iteration
    made every method forget the facts it left out (measured: CUT, CUT+ and SFT all lost accuracy).

    The method is CUT+ (`cutalign.trainer.cut_plus`, found with `cutalign lab`): CUT's unlikelihood on
    the flagged tokens, Align-N and Align-P, but no MLE on a negative's unflagged tokens (they include the
    wrong values detection missed) and a KL term to the iteration's starting policy on every unflagged
    token. Measured on this world (3 iterations, 2 cores): plain CUT 70.8 -> 75.0 -> 68.1 -> 63.9% fact
    accuracy; CUT+ 70.8 -> 75.0 -> 73.6 -> 81.9%.
    """
    return {
        "prompts": BUILTIN,
        "judge": "demo",
        "method": "cut_plus",
        "max_new_tokens": 40,
        "temperature": 1.0,
        "prompts_per_iteration": 216,
        "reuse_prompts": True,
        "generation_batch_size": 32,
        "judge_batch_size": 64,
        "use_peft": False,
        "save_steps": 20,
        "eval": "cutalign.online.builtin:evaluate",
        # Keep every positive: the model learns the right values from its own right answers (the
        # official 0.25 x negatives would throw most of them away).
        "train": {"learning_rate": 1e-3, "num_train_epochs": 8, "per_device_train_batch_size": 16,
                  "max_length": 128, "warmup_steps": 0.1, "positive_ratio": None},
    }


# CUT+'s weights in the built-in preset; applied only while the method is CUT+ (`--method cut` on the
# built-in world gets plain CUT, not a config error).
BUILTIN_METHOD_TRAIN = {"cut_plus": {"negative_mle_weight": 0.0, "align_n_weight": 1.0, "kl_weight": 1.0}}


FIELDS = {f.name: f for f in dataclasses.fields(OnlineConfig)}


def resolve_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> OnlineConfig:
    """Defaults <- built-in preset (when no model is given) <- YAML file <- overrides (CLI flags)."""
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(Path(path))
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    train_overrides = overrides.pop("train", None) or {}
    merged = {**values, **overrides}
    if merged.get("model", BUILTIN) == BUILTIN:
        preset = builtin_preset()
        method = merged.get("method", preset["method"])
        train = {**preset.pop("train"), **BUILTIN_METHOD_TRAIN.get(method, {}), **merged.get("train", {})}
        merged = {**preset, **merged, "train": train}
    merged["train"] = {**merged.get("train", {}), **train_overrides}
    try:
        return OnlineConfig(**merged)
    except (TypeError, ValueError) as err:
        where = f"{path}: " if path is not None else ""
        raise ValueError(f"{where}{err}") from err


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(str(path), None, "config", "file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise DataError(str(path), None if line is None else line + 1, "config", f"not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise DataError(str(path), 1, "config", "must be a mapping of setting -> value")
    text_lines = path.read_text(encoding="utf-8").splitlines()
    for key in values:
        if key not in FIELDS:
            line = next((i + 1 for i, t in enumerate(text_lines) if t.startswith(f"{key}:")), None)
            raise DataError(str(path), line, str(key), f"unknown setting; known: {', '.join(FIELDS)}")
    return values


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose value differs (train.* and judge_options.* named one by one), operational keys ignored."""
    changed = []
    for key in sorted(set(old) | set(new)):
        if key in OPERATIONAL_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    return changed


def parse_assignments(items: list[str], option: str) -> dict[str, Any]:
    """`KEY=VALUE` flag values (VALUE read as YAML: numbers, booleans, null, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"{option} {item!r}: value is not valid YAML ({err})") from err
    return out
