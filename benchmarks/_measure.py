"""One measured training step (or a short CUTTrainer run): time, peak memory, largest tensor.

``cut_step.py`` runs :func:`measure` in a fresh subprocess per measurement (``python _measure.py
'<spec json>'``, one JSON line back) or in-process. Every method trains the same tiny Llama on the
same real examples, so the figures differ only by how each formulation computes the loss:

- ``cut-fake_positive`` / ``cut-instruction_only``: ``CUTTrainer.training_step`` on one collated
  batch (chunked log-probs, ``cut_loss`` paper mode);
- ``naive-official``: the official code's layout and reduction with full ``[rows, L, V]`` logits;
- ``sft``: ``model(input_ids, attention_mask, labels=...)`` as transformers computes it;
- ``trl-dpo``: ``trl.DPOTrainer.training_step`` (via cutalign's ``ilf_dpo`` trainer, a ``DPOTrainer``
  subclass that only builds the pairs) with a live frozen reference model; see :func:`stand_in_refinements`;
- ``two-step``: two real ``CUTTrainer`` optimizer steps on the whole data file.

Memory: peak bytes of live tensors allocated during the step (:class:`LiveTensorTracker`; on CUDA
``torch.cuda.max_memory_allocated``) and, in a fresh process on Linux, the RSS increase.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import resource
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from accelerate.utils import send_to_device
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback

from cutalign.data.collator import block_to_matrices
from cutalign.data.converters import convert
from cutalign.data.schema import PolarityRule
from cutalign.data.templates import get_template
from cutalign.data.views import ViewBuilder
from cutalign.demo.assets import tiny_causal_lm
from cutalign.logprobs import naive_token_logprobs
from cutalign.losses import cut_loss
from cutalign.trainer.base import ensure_pad_token
from cutalign.trainer.config import CUTConfig
from cutalign.trainer.cut_trainer import CUTTrainer

STEP_METHODS = ("cut-fake_positive", "cut-instruction_only", "cutalign-sft", "trl-sft", "trl-dpo", "naive-official",
                "sft")
# The row every time / memory ratio is relative to: the same chunked log-probs, MLE only.
BASELINE = "cutalign-sft"
# The second reference: what a user would run instead of CUT on the same examples.
DPO = "trl-dpo"
TWO_STEP = "two-step"
IGNORE_INDEX = -100
Features = Mapping[str, Any]


class LiveTensorTracker(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated while active, and the largest single one.

    Every op output whose storage is not one of the op's inputs (views and in-place results are)
    is a new allocation; a weakref finalizer subtracts it when the storage is freed. This counts
    exactly the tensors the step creates -- activations, logits, gradients, optimizer state --
    and nothing of the allocator's caching, the process's other memory or other processes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.largest = 0
        self.largest_shape: list[int] = []
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {_storage_key(t) for t in tree_leaves((args, kwargs)) if _is_dense(t)}
        for tensor in tree_leaves(out):
            if _is_dense(tensor) and _storage_key(tensor) not in inputs:
                self._allocated(tensor)
        return out

    def _allocated(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        if size > self.largest:
            self.largest, self.largest_shape = size, list(tensor.shape)
        weakref.finalize(storage, self._freed, key)

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


def _is_dense(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.layout == torch.strided and value.device.type != "meta"


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


class MemoryProbe:
    """A :class:`LiveTensorTracker` plus, on CUDA, the allocator's peak above the starting point."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.tracker = LiveTensorTracker()
        self.cuda_peak: int | None = None
        self._cuda_start = 0

    def __enter__(self) -> MemoryProbe:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._cuda_start = torch.cuda.memory_allocated(self.device)
        self.tracker.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracker.__exit__(*exc)
        if self.device.type == "cuda":
            _sync(self.device)
            self.cuda_peak = torch.cuda.max_memory_allocated(self.device) - self._cuda_start

    def figures(self, rss_before: int | None) -> dict[str, Any]:
        """Peak (CUDA allocator on GPU, live tensors elsewhere), RSS increase, largest tensor."""
        cuda = self.cuda_peak is not None
        return {
            "peak_bytes": self.cuda_peak if cuda else self.tracker.peak,
            "peak_source": "cuda max_memory_allocated" if cuda else "live tensors",
            "rss_increase_bytes": None if rss_before is None else max(_max_rss() - rss_before, 0),
            "largest_tensor_bytes": self.tracker.largest,
            "largest_tensor_shape": self.tracker.largest_shape,
        }


# ---------------------------------------------------------------------------------------------- data
def quiet() -> None:
    """No progress bars or trainer warnings in the benchmark's output (drops are reported in its tables)."""
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # e.g. "Writing model shards" when the epoch run saves
    logging.getLogger("cutalign").setLevel(logging.ERROR)


@functools.cache
def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer with a pad token, loaded once per process (in-process runs reuse it)."""
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ensure_pad_token(tokenizer)
    return tokenizer


def load_examples(data_path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Canonical examples of a ``cut-alpaca`` file (judge errors etc. dropped), the first ``limit``."""
    examples, _ = convert("cut-alpaca", [data_path], PolarityRule())
    return examples[:limit] if limit else examples


def view_builder(tokenizer: PreTrainedTokenizerBase, max_length: int) -> ViewBuilder:
    """The views ``CUTTrainer`` builds with its defaults (Alpaca template, the paper's j+)."""
    return ViewBuilder(tokenizer, get_template("alpaca", tokenizer), max_length=max_length)


def official_halves(feature: Features) -> tuple[list[int], list[int]]:
    """The official layout's two sequences of an example: Align-P ``y|x`` or Align-N ``y|[x,j-]``,
    then the bare-x sequence for a negative and nothing (an all-pad half) for a positive."""
    completion = list(feature["completion_ids"])
    plain = [*feature["plain_prompt_ids"], *completion]
    if not feature["is_negative"]:
        return plain, []
    return [*feature["judged_prompt_ids"], *completion], plain


def official_shape(features: Sequence[Features]) -> tuple[int, int]:
    """``(rows, L)`` of the official layout: both halves of every example, padded to the longest."""
    longest = max(len(seq) for f in features for seq in official_halves(f))
    return 2 * len(features), longest


def sft_shape(features: Sequence[Features]) -> tuple[int, int]:
    """``(rows, L)`` of an SFT batch: the ``y|x`` sequences padded to the longest."""
    return len(features), max(len(f["plain_prompt_ids"]) + len(f["completion_ids"]) for f in features)


# ---------------------------------------------------------------------------------------------- steps
def official_block(features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
    """The official code's batch as one collator-style block: first halves, then second halves.

    Context 0 is the first half of every example, context 1 the second half (negatives only);
    positives' second halves are all pad with a zero attention mask, as in the official collator.
    """
    rows, width = official_shape(features)
    halves = [official_halves(f)[half] for half in (0, 1) for f in features]
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, width), dtype=torch.long)
    keys = ("logit_index", "target_ids", "example_index", "token_index", "context_index")
    index: dict[str, list[int]] = {key: [] for key in keys}
    for row, seq in enumerate(halves):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
        if not seq:
            continue
        example, context = row % len(features), row // len(features)
        target = features[example]["completion_ids"]
        first = row * width + len(seq) - len(target) - 1
        index["logit_index"].extend(range(first, first + len(target)))
        index["target_ids"].extend(target)
        index["example_index"].extend([example] * len(target))
        index["token_index"].extend(range(len(target)))
        index["context_index"].extend([context] * len(target))
    block = {"input_ids": input_ids, "attention_mask": attention_mask,
             "position_ids": torch.arange(width).expand(rows, width).clone()}
    return block | {key: torch.tensor(values, dtype=torch.long) for key, values in index.items()}


def naive_official_step(model: PreTrainedModel, features: Sequence[Features], pad_id: int,
                        device: torch.device, threshold: float = 1.1) -> Callable[[], float]:
    """Full logits over the official layout, then the official reduction (``cut_loss(mode="official")``)."""
    block = send_to_device(official_block(features, pad_id), device)
    is_negative = torch.tensor([bool(f["is_negative"]) for f in features], device=device)
    width = max(len(f["completion_ids"]) for f in features)

    def step() -> float:
        logp = naive_token_logprobs(model, block)
        halves = block_to_matrices(logp, block, ("first", "second"), len(features))
        first, mask = halves["first"]
        second = torch.nn.functional.pad(halves["second"][0], (0, width - halves["second"][0].shape[1]))
        plain = torch.where(is_negative[:, None], second, first)  # bare x: 2nd half of negatives
        loss = cut_loss(plain, first, None, mask, is_negative, threshold=threshold, mode="official").loss
        loss.backward()
        return float(loss.detach())

    return step


def sft_step(model: PreTrainedModel, features: Sequence[Features], pad_id: int,
             device: torch.device) -> Callable[[], float]:
    """Plain SFT on ``y|x``: transformers' own ``labels=`` loss over full logits."""
    rows, width = sft_shape(features)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    labels = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((rows, width), dtype=torch.long)
    for row, f in enumerate(features):
        prompt, completion = list(f["plain_prompt_ids"]), list(f["completion_ids"])
        seq = prompt + completion
        input_ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(prompt) : len(seq)] = torch.tensor(completion)
        attention_mask[row, : len(seq)] = 1
    inputs = send_to_device({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}, device)

    def step() -> float:
        loss = model(**inputs, use_cache=False).loss
        loss.backward()
        return float(loss.detach())

    return step


def cut_config(spec: Mapping[str, Any], output_dir: str, **overrides: Any) -> CUTConfig:
    """``CUTConfig`` defaults (seed 42, the official one, for downsampling and sampling), quiet, no saving."""
    args = dict(
        output_dir=output_dir, per_device_train_batch_size=spec["batch_size"], max_length=spec["max_length"],
        logprob_chunk_size=spec["chunk_size"], use_cpu=spec["device"] == "cpu", report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, packed_row_length=spec.get("packed_row_length"),
    )
    return CUTConfig(**(args | overrides))


def lora_config(spec: Mapping[str, Any]) -> Any | None:
    """LoRA on every attention projection when ``spec["lora_r"]`` is set (the realistic-size rows)."""
    if not spec.get("lora_r"):
        return None
    from peft import LoraConfig

    return LoraConfig(r=spec["lora_r"], lora_alpha=2 * spec["lora_r"], lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def new_cut_trainer(model: PreTrainedModel, config: CUTConfig, examples: Sequence[Features],
                    tokenizer: PreTrainedTokenizerBase, peft_config: Any | None = None) -> CUTTrainer:
    """A ``CUTTrainer`` that prints nothing (``tokenizer`` from :func:`load_tokenizer`: it has a pad token)."""
    trainer = CUTTrainer(model, config, train_dataset=list(examples), processing_class=tokenizer,
                         peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    return trainer


def cut_step(model: PreTrainedModel, examples: Sequence[Features], tokenizer: PreTrainedTokenizerBase,
             spec: Mapping[str, Any], output_dir: str) -> tuple[Callable[[], float], int]:
    """``CUTTrainer.training_step`` (forward + backward) on the whole batch, collated by the trainer,
    and the token positions its forward passes compute."""
    mode = spec["method"].removeprefix("cut-")
    config = cut_config(spec, output_dir, misalign_mode=mode, positive_ratio=None)
    trainer = new_cut_trainer(model, config, examples, tokenizer, lora_config(spec))
    views = trainer.train_dataset
    if len(views) != len(examples):
        raise RuntimeError(f"CUTTrainer dropped examples of the batch: {trainer.drop_report.as_dict()}")
    inputs = send_to_device(trainer.data_collator([views[i] for i in range(len(views))]), model.device)
    positions = sum(inputs[key]["input_ids"].numel() for key in ("grad", "nograd") if key in inputs)
    return (lambda: float(trainer.training_step(trainer.model, inputs))), positions


def cutalign_sft_step(model: PreTrainedModel, examples: Sequence[Features], tokenizer: PreTrainedTokenizerBase,
                      spec: Mapping[str, Any], output_dir: str) -> tuple[Callable[[], float], int]:
    """cutalign's ``SFTTrainer.training_step`` on ``y|x`` of all 8 examples (negatives included), the same
    collator and chunked log-probs as CUT: what CUT costs structurally over MLE."""
    from cutalign.trainer.config import SFTConfig
    from cutalign.trainer.mle_trainer import SFTTrainer

    config = SFTConfig(**_trainer_args(spec, output_dir), sft_include_negatives=True, positive_ratio=None,
                       packed_row_length=spec.get("packed_row_length"), logprob_chunk_size=spec["chunk_size"])
    trainer = SFTTrainer(model, config, train_dataset=list(examples), processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    views = trainer.train_dataset
    if len(views) != len(examples):
        raise RuntimeError(f"SFTTrainer dropped examples of the batch: {trainer.drop_report.as_dict()}")
    inputs = send_to_device(trainer.data_collator([views[i] for i in range(len(views))]), model.device)
    return (lambda: float(trainer.training_step(model, inputs))), inputs["grad"]["input_ids"].numel()


def trl_sft_step(model: PreTrainedModel, features: Sequence[Features], tokenizer: PreTrainedTokenizerBase,
                 spec: Mapping[str, Any], output_dir: str) -> tuple[Callable[[], float], int]:
    """``trl.SFTTrainer.training_step`` on the same ``y|x`` token ids (prompt-completion, completion-only
    loss, TRL's own collator: right padding to the batch's longest row; TRL's fused, tiled LM head)."""
    import trl

    rows = [{"input_ids": [*f["plain_prompt_ids"], *f["completion_ids"]],
             "completion_mask": [0] * len(f["plain_prompt_ids"]) + [1] * len(f["completion_ids"])} for f in features]
    args = trl.SFTConfig(**_trainer_args(spec, output_dir), max_length=None, completion_only_loss=True,
                         packing=False)
    trainer = trl.SFTTrainer(model, args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step alone needs it
    inputs = send_to_device(trainer.data_collator(rows), model.device)
    return (lambda: float(trainer.training_step(model, inputs))), inputs["input_ids"].numel()


def stand_in_refinements(examples: Sequence[Features], features: Sequence[Features]) -> list[dict[str, Any]]:
    """The examples with a stand-in ``refinement``: the batch's other response closest in token length.

    ``ilf_dpo`` pairs each example's response y with its refinement y_hat (same prompt, y_hat chosen);
    ``dpo`` pairs completions of one prompt by score. iter1 has neither a refinement (``i_ans``) nor a
    ``score``, and no other iteration file repeats one of its instructions, so neither builds a pair.
    The stand-in keeps ``ilf_dpo``'s pairs -- one per example, the example's own prompt and response,
    a second real response of about the same length -- so a DPO step computes what it would on real
    refinements; only the preference's meaning is lost, which a step's cost does not depend on.
    """
    lengths = [len(f["completion_ids"]) for f in features]
    out = []
    for i, example in enumerate(examples):
        other = min((j for j in range(len(examples)) if j != i), key=lambda j: (abs(lengths[j] - lengths[i]), j))
        out.append(dict(example, refinement=examples[other]["completion"], stand_in_from=examples[other]["id"]))
    return out


def trl_dpo_step(model: PreTrainedModel, examples: Sequence[Features], features: Sequence[Features],
                 tokenizer: PreTrainedTokenizerBase, spec: Mapping[str, Any],
                 output_dir: str) -> tuple[Callable[[], float], int, int]:
    """``trl.DPOTrainer.training_step`` on ``ilf_dpo``'s pairs of the batch (stand-in refinements), live
    reference model (a frozen copy, forward under no-grad each step), TRL's collator and loss.

    Returns the step, the positions computed (policy + reference passes) and the real ones among them.
    """
    from cutalign.trainer.dpo import JudgmentDPOConfig, RefinementDPOTrainer

    config = JudgmentDPOConfig(**_trainer_args(spec, output_dir), max_length=spec["max_length"],
                               precompute_ref_log_probs=False)
    peft_config = lora_config(spec)  # with LoRA the reference is the base model, adapters disabled
    trainer = RefinementDPOTrainer(model, config, train_dataset=stand_in_refinements(examples, features),
                                   processing_class=tokenizer, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    if (trainer.ref_model is None and peft_config is None) or len(trainer.train_dataset) != len(examples):
        raise RuntimeError(f"expected {len(examples)} pairs and a reference model: {trainer.drop_report.as_dict()}")
    trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step alone needs it
    pairs = trainer.train_dataset
    inputs = send_to_device(trainer.data_collator([pairs[i] for i in range(len(pairs))]), model.device)
    computed, real = 2 * inputs["input_ids"].numel(), 2 * int(inputs["attention_mask"].sum())
    return (lambda: float(trainer.training_step(trainer.model, inputs))), computed, real


def _trainer_args(spec: Mapping[str, Any], output_dir: str) -> dict[str, Any]:
    return dict(output_dir=output_dir, per_device_train_batch_size=spec["batch_size"], use_cpu=spec["device"] == "cpu",
                report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True)


# ---------------------------------------------------------------------------------------------- runs
def build_model(spec: Mapping[str, Any], vocab_size: int) -> PreTrainedModel:
    """The tiny random Llama every method trains (same seed, so the same weights for each)."""
    model = tiny_causal_lm(vocab_size, "llama", hidden_size=spec["hidden_size"], num_layers=spec["num_layers"],
                           num_heads=spec["num_heads"], seed=spec["seed"],
                           max_position_embeddings=max(spec["max_length"], 2048))
    return model.to(device=spec["device"], dtype=getattr(torch, spec["dtype"]))


def measure(spec: Mapping[str, Any], fresh_process: bool = False) -> dict[str, Any]:
    """Run ``spec["method"]`` and return its figures (see the module docstring)."""
    tokenizer = load_tokenizer(spec["tokenizer"])
    examples = load_examples(spec["data"], spec.get("examples_limit"))
    model = build_model(spec, spec["vocab_size"])
    with tempfile.TemporaryDirectory() as output_dir:
        if spec["method"] == TWO_STEP:
            return _two_steps(model, examples, tokenizer, spec, output_dir, fresh_process)
        by_id = {e["id"]: e for e in examples}
        batch = [by_id[i] for i in spec["example_ids"]]
        return _one_step(model, batch, tokenizer, spec, output_dir, fresh_process)


def _one_step(model: PreTrainedModel, batch: Sequence[Features], tokenizer: PreTrainedTokenizerBase,
              spec: Mapping[str, Any], output_dir: str, fresh_process: bool) -> dict[str, Any]:
    step, positions, *real = _step_for(model, batch, tokenizer, spec, output_dir)
    model.train()
    rss_before = _current_rss()
    # The first step is the warm-up and the memory measurement: tensor bytes do not depend on
    # warm-up effects (kernel caches, lazy init), time does.
    device = torch.device(spec["device"])
    probe, loss, _ = _run(step, model, device, track=True)
    times = []
    for _ in range(spec["repeats"]):
        _, loss, seconds = _run(step, model, device, track=False)
        times.append(seconds)
    return {
        "method": spec["method"], "vocab_size": spec["vocab_size"], "loss": loss, "positions": positions,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "time_s": statistics.median(times), "times_s": times, **probe.figures(rss_before if fresh_process else None),
        **({"real_positions": real[0]} if real else {}),
    }


def _step_for(model: PreTrainedModel, batch: Sequence[Features], tokenizer: PreTrainedTokenizerBase,
              spec: Mapping[str, Any], output_dir: str) -> tuple[Any, ...]:
    """The step closure of ``spec["method"]``, the token positions its forward passes compute and, where
    the batch is not the examples' own (DPO pairs), the real positions among them."""
    method, device, pad_id = spec["method"], torch.device(spec["device"]), tokenizer.pad_token_id
    if method in ("cut-fake_positive", "cut-instruction_only"):
        return cut_step(model, batch, tokenizer, spec, output_dir)
    if method == "cutalign-sft":
        return cutalign_sft_step(model, batch, tokenizer, spec, output_dir)
    builder = view_builder(tokenizer, spec["max_length"])
    features = [builder.build(e, ("plain", "judged")) for e in batch]
    if method == "trl-sft":
        return trl_sft_step(model, features, tokenizer, spec, output_dir)
    if method == "trl-dpo":
        return trl_dpo_step(model, batch, features, tokenizer, spec, output_dir)
    if method == "naive-official":
        return naive_official_step(model, features, pad_id, device), math.prod(official_shape(features))
    if method == "sft":
        return sft_step(model, features, pad_id, device), math.prod(sft_shape(features))
    raise ValueError(f"unknown method {method!r}; choose from {(*STEP_METHODS, TWO_STEP)}")


def _run(step: Callable[[], float], model: PreTrainedModel, device: torch.device,
         track: bool) -> tuple[MemoryProbe | None, float, float]:
    model.zero_grad(set_to_none=True)
    _sync(device)
    probe = MemoryProbe(device) if track else None
    start = time.perf_counter()
    if probe is not None:
        with probe:
            loss = step()
    else:
        loss = step()
    _sync(device)
    return probe, loss, time.perf_counter() - start


def _two_steps(model: PreTrainedModel, examples: Sequence[Features], tokenizer: PreTrainedTokenizerBase,
               spec: Mapping[str, Any], output_dir: str, fresh_process: bool) -> dict[str, Any]:
    """Two real optimizer steps of ``CUTTrainer`` (AdamW, Align-P downsampling, length grouping)."""
    config = cut_config(spec, output_dir, max_steps=2, misalign_mode="fake_positive")
    trainer = new_cut_trainer(model, config, examples, tokenizer)
    collate, shapes = trainer.data_collator, []

    def recording_collator(features: Sequence[Features]) -> dict[str, Any]:
        shapes.append(official_shape(features))
        return collate(features)

    trainer.data_collator = recording_collator
    device = torch.device(spec["device"])
    rss_before = _current_rss()
    probe = MemoryProbe(device)
    start = time.perf_counter()
    with probe:
        result = trainer.train()
    seconds = time.perf_counter() - start
    # The dataloader may collate one batch ahead; the first two are the ones trained on.
    return {
        "method": TWO_STEP, "vocab_size": spec["vocab_size"], "loss": result.training_loss, "time_s": seconds,
        "examples_trained": len(trainer.train_dataset), "official_shapes": shapes[:2],
        **probe.figures(rss_before if fresh_process else None),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _current_rss() -> int | None:
    """Resident set size now (Linux ``/proc``), or None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * resource.getpagesize()


def _max_rss() -> int:
    """The process's peak RSS so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    quiet()
    print(json.dumps(measure(json.loads(sys.argv[1]), fresh_process=True)))
