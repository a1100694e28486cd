"""Training configurations: `TrainingArguments` dataclasses with help metadata.

`JudgmentDataArguments` (templates, truncation, polarity) and `RecipeDefaults` are mixins shared by
every method, the DPO config included (`cutalign.trainer.dpo.JudgmentDPOConfig`, which must extend
TRL's `DPOConfig`). `JudgmentTrainingConfig` adds what the `JudgmentTrainer` methods share (Align-P
downsampling, log-prob chunking); `CUTConfig` adds the CUT loss, `MLEConfig` / `SFTConfig` the
maximum-likelihood baselines. Every field is a `--field_name` flag of `cutalign train` and a key of
its YAML config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from cutalign.data.templates import DEFAULT_FAKE_POSITIVE

TEMPLATES = ("alpaca", "chat")
JUDGMENT_PLACEMENTS = ("user", "system")
LOSS_MODES = ("paper", "official")
MISALIGN_MODES = ("fake_positive", "instruction_only")
SECRET_KEY_PARTS = ("secret", "password", "passwd", "api_key", "apikey", "access_key", "credential")
# Token-named settings that are vocabulary, not credentials.
NOT_SECRETS = frozenset({"pad_token", "eos_token", "bos_token", "unk_token", "sep_token", "cls_token",
                         "mask_token", "max_new_token", "ignore_token"})


def is_secret_key(key: str) -> bool:
    """Whether a setting's name says it holds a credential (token, key, password)."""
    key = key.lower()
    if key in NOT_SECRETS:
        return False
    return key in ("token", "key") or key.endswith(("_token", "_key")) or any(p in key for p in SECRET_KEY_PARTS)


def without_secrets(value: Any) -> Any:
    """``value`` with every secret-named key removed, at any depth (dicts and lists)."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, list | tuple):
        return type(value)(without_secrets(v) for v in value)
    return value


@dataclass
class JudgmentDataArguments:
    """Fields every method shares, whatever its trainer (a `Trainer` subclass or TRL's `DPOTrainer`).

    A plain dataclass mixin so that the MLE-style configs and the DPO config (which must extend TRL's
    `DPOConfig`) read the same YAML keys with the same defaults: how a prompt is rendered, how
    polarity is derived, the length budget and model loading.
    """

    # -- templates
    template: str = field(
        default="alpaca",
        metadata={"help": "Prompt template: 'alpaca' (the paper's templates) or 'chat' (the tokenizer's chat template).",
                  "choices": list(TEMPLATES)},
    )
    judgment_placement: str = field(
        default="user",
        metadata={"help": "With template='chat': put the judgment in the user turn or in a system turn.",
                  "choices": list(JUDGMENT_PLACEMENTS)},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "With template='chat': an optional system message for every context."}
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "With template='chat': a built-in chat template (llama2, chatml, zephyr) or a Jinja file, for "
                          "tokenizers without one; saved with the model's tokenizer."},
    )
    # -- data
    max_length: int = field(
        default=2048,
        metadata={"help": "Maximum tokens of context + response. Contexts are truncated from the left; an example "
                          "whose response alone cannot fit is dropped and counted."},
    )
    score_threshold: float = field(
        default=7.0,
        metadata={"help": "Polarity rule when an example has no `label`: null judgment or score >= this is positive."},
    )
    positive_pattern: str | None = field(
        default=None,
        metadata={"help": "Optional regex: judgments matching it (e.g. '^perfect') are positive when no label is set."},
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for tokenising the dataset (datasets.map num_proc)."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for AutoModelForCausalLM.from_pretrained when `model` is a string "
                          "(a JSON object on the command line, e.g. '{\"revision\": \"main\"}')."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an output_dir that already holds another run (its checkpoints are removed). "
                          "Without it such a directory is refused unless the run resumes."},
    )

    def __getstate__(self) -> dict[str, Any]:
        """What pickling saves (``training_args.bin`` in the output dir and every checkpoint): no
        secrets. ``hub_token`` and ``model_init_kwargs.token`` are set to None / removed; the rest
        loads back as usual."""
        state = dict(self.__dict__)
        for key, value in state.items():
            if is_secret_key(key) and isinstance(value, str):
                state[key] = None
        if isinstance(state.get("model_init_kwargs"), dict):
            state["model_init_kwargs"] = without_secrets(state["model_init_kwargs"])
        return state

    def __copy__(self) -> Any:  # copies keep their secrets; only what is pickled to disk loses them
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __post_init__(self) -> None:
        _check_choice("template", self.template, TEMPLATES)
        _check_choice("judgment_placement", self.judgment_placement, JUDGMENT_PLACEMENTS)
        if isinstance(self.model_init_kwargs, str):  # from the command line: a JSON object
            self.model_init_kwargs = _json_object("model_init_kwargs", self.model_init_kwargs)
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        parent = getattr(super(), "__post_init__", None)  # the TrainingArguments side, when mixed in
        if parent is not None:
            parent()


@dataclass
class RecipeDefaults:
    """`TrainingArguments` defaults of the official CUT recipe, shared so every method starts alike."""

    learning_rate: float = field(default=4e-4, metadata={"help": "Peak learning rate (official LoRA recipe: 4e-4)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    seed: int = field(default=42, metadata={"help": "Random seed (official runs: 42)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps."})


@dataclass
class JudgmentTrainingConfig(JudgmentDataArguments, RecipeDefaults, TrainingArguments):
    """Data handling shared by CUT and the MLE-style baselines.

    Defaults differ from `TrainingArguments` where the official CUT recipe says so (learning rate
    4e-4 with cosine decay, seed 42) and where judgment data needs it (length-grouped batches, no
    column removal since the collator reads our own columns).
    """

    fake_positive_text: str = field(
        default=DEFAULT_FAKE_POSITIVE,
        metadata={"help": "The fake positive judgment j+ of the misaligned context [x, j+] (paper Table 1)."},
    )
    positive_ratio: float | None = field(
        default=0.25,
        metadata={"help": "Keep at most int(positive_ratio * #negatives) positives (seeded random subset), as the "
                          "official code. Set to a negative value or null to keep all positives."},
    )
    # -- compute
    ddp_broadcast_buffers: bool | None = field(
        default=False,
        metadata={"help": "Kept False: the no-gradient pass runs only on processes whose micro-batch has negatives, "
                          "and DDP's buffer broadcast in forward would then wait forever for the others."},
    )
    padding_free: bool | None = field(
        default=None,
        metadata={"help": "Pack each forward pass's sequences into one row with restarting position_ids instead of "
                          "padding. Unset (default): packed when a one-off check shows the model's attention keeps "
                          "packed sequences apart (sdpa, eager, flash_attention_2 in transformers 5 for models that "
                          "build masks from position_ids), else padded and length-grouped with the reason logged; "
                          "true: packed or an error; false: padded."},
    )
    packed_row_length: int | None = field(
        default=None,
        metadata={"help": "Longest packed row, in tokens. Unset (default): with flash attention one row per forward "
                          "pass (its varlen kernel costs each sequence alone); with sdpa / eager, whose masked "
                          "attention costs the square of a row's length, the row count that costs least for this "
                          "model's shapes (several rows for small models, one for large ones; rows <= 8192 "
                          "tokens), filled first-fit decreasing. 0: always one row; N: rows of at most "
                          "max(N, longest) tokens."},
    )
    logprob_chunk_size: int = field(
        default=1024,
        metadata={"help": "Response positions projected through the LM head at once; the [tokens, vocab] logits of "
                          "one chunk are the largest tensor the loss ever holds."},
    )
    disable_dropout: bool = field(
        default=False, metadata={"help": "Set every dropout probability of the model to 0."}
    )
    # -- TrainingArguments defaults that differ
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator reads cutalign's own feature columns."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "Batch sampling: 'group_by_length' (default, keeps padding low), 'random' or 'sequential'."},
    )
    length_column_name: str = field(default="length", metadata={"help": "Column with each example's token count."})

    def __post_init__(self) -> None:
        if self.packed_row_length is not None and self.packed_row_length < 0:
            raise ValueError(f"packed_row_length must be unset, 0 or positive; got {self.packed_row_length}")
        if self.logprob_chunk_size < 1:
            raise ValueError(f"logprob_chunk_size must be positive, got {self.logprob_chunk_size}")
        if self.positive_ratio is not None and self.positive_ratio < 0:
            self.positive_ratio = None
        if not self.fake_positive_text.strip():
            raise ValueError("fake_positive_text must not be empty")
        if not self.use_cpu and not _has_accelerator():
            # Without it, accelerate treats `torchrun` CPU processes as not distributed: every
            # process would train alone on the full data instead of forming a gloo DDP group.
            self.use_cpu = True
        super().__post_init__()


@dataclass
class CUTConfig(JudgmentTrainingConfig):
    """Contrastive Unlikelihood Training (arXiv 2312.14591): the loss and its ablations.

    `mode='paper'` follows the paper's equations (per-example normalisation, focal weight
    alpha * p(t|x,j-)^gamma); `mode='official'` reproduces the official code's reduction.
    """

    threshold: float = field(
        default=1.1,
        metadata={"help": "Detection threshold lambda: token t is inappropriate when p(t|x,j-) > lambda * "
                          "p(t|misaligned). Paper: 1.1 online, 1.2 offline."},
    )
    alpha: float = field(
        default=1.0, metadata={"help": "Unlikelihood weight (official `weight_unlike`: 1.0 online, 0.5 offline)."}
    )
    gamma: float = field(
        default=0.0,
        metadata={"help": "Focal exponent of the dynamic weight alpha * p(t|x,j-)^gamma (paper grid 0.25-2; 0 = "
                          "constant weight as in the official code)."},
    )
    mode: str = field(
        default="paper",
        metadata={"help": "Loss reduction: 'paper' (per-example, L1 + L2) or 'official' (official code).",
                  "choices": list(LOSS_MODES)},
    )
    misalign_mode: str = field(
        default="fake_positive",
        metadata={"help": "Misaligned context for detection: 'fake_positive' ([x, j+], paper Eq. 5; one extra "
                          "no-grad pass) or 'instruction_only' (bare x, as the official code).",
                  "choices": list(MISALIGN_MODES)},
    )
    no_l1: bool = field(default=False, metadata={"help": "Ablation: drop L1 (the unlikelihood part)."})
    no_align_p: bool = field(default=False, metadata={"help": "Ablation: drop the Align-P part of L2."})
    no_align_n: bool = field(default=False, metadata={"help": "Ablation: drop the Align-N part of L2."})
    no_detection: bool = field(
        default=False, metadata={"help": "Ablation: unlikelihood on every response token of negatives."}
    )
    no_dynamic_weight: bool = field(
        default=False, metadata={"help": "Ablation: constant weight alpha instead of alpha * p^gamma."}
    )

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, LOSS_MODES)
        _check_choice("misalign_mode", self.misalign_mode, MISALIGN_MODES)
        if self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if self.mode == "official" and self.gamma != 0:
            raise ValueError(f"gamma must be 0 with mode='official' (the official weight is constant), got {self.gamma}")
        if self.alpha < 0 or self.gamma < 0:
            raise ValueError(f"alpha and gamma must be >= 0, got alpha={self.alpha}, gamma={self.gamma}")
        super().__post_init__()


@dataclass
class MLEConfig(JudgmentTrainingConfig):
    """Maximum-likelihood baselines (hindsight, forward prediction, ILF-MLE): per example, the sum over its
    contexts of the mean NLL of each context's target tokens; the loss is the mean over examples."""

    positive_ratio: float | None = field(
        default=None,
        metadata={"help": "Align-P downsampling as in CUT: keep at most int(positive_ratio * #negatives) positives "
                          "(seeded). Default null keeps every example; set 0.25 to train on CUT's examples."},
    )


@dataclass
class SFTConfig(MLEConfig):
    """Supervised fine-tuning on y | x of the satisfactory (positive) examples."""

    sft_include_negatives: bool = field(
        default=False,
        metadata={"help": "Also train on negative examples' responses (plain SFT on all data). By default they are "
                          "excluded and counted as dropped (negative_excluded)."},
    )


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def _json_object(name: str, text: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} must be a JSON object, got {text!r} ({err.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {text!r}")
    return value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
