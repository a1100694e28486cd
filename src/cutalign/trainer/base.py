"""`JudgmentTrainer`: what every judgment-based trainer shares.

Model and tokenizer loading (any `AutoModelForCausalLM`, optional PEFT), dataset preparation
through the data layer (templates, truncation, dropping, Align-P downsampling: one code path for
every method), the context collator, per-context log-probs without full logits, metric
logging in TRL's `_metrics` style, and a model card. Subclasses say which contexts they need
(`grad_contexts` / `nograd_contexts`) and implement `compute_method_loss`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

from cutalign.data.collator import ContextCollator, block_to_matrices
from cutalign.data.io import unwrap_judged
from cutalign.data.packing import attention_pair_cost, packed_row_length
from cutalign.data.report import DropReport
from cutalign.data.templates import get_template
from cutalign.data.views import ViewBuilder, build_dataset
from cutalign.files import atomic_write_json
from cutalign.logprobs import is_sharded, packing_unsupported_reason, token_logprobs
from cutalign.models import ensure_pad_token, load_model, load_tokenizer
from cutalign.trainer.config import JudgmentTrainingConfig
from cutalign.trainer.model_card import write_model_card

logger = logging.getLogger(__name__)

RUN_STATE_NAME = "cutalign_state.json"  # in each checkpoint: the loss sum of the run so far
KILL_AT_SAVE_ENV = "CUTALIGN_FAULT_KILL_AT_SAVE"  # tests: SIGKILL while checkpoint-N is being written
ContextLogps = dict[str, tuple[torch.Tensor, torch.Tensor]]


class JudgmentTrainer(Trainer):
    """Base class: subclasses set the contexts and the loss; everything else is shared."""

    method_name: str = "judgment"
    grad_contexts: tuple[str, ...] = ("plain",)
    nograd_contexts: tuple[str, ...] = ()
    # Whether compute_method_loss returns a per-example mean that may be rescaled to the whole
    # accumulation window (exact gradient accumulation); False keeps the Trainer's mean of means.
    per_example_loss: bool = True

    def __init__(
        self,
        model: str | PreTrainedModel | nn.Module,
        args: JudgmentTrainingConfig,
        train_dataset: datasets.Dataset | Sequence[dict] | None = None,
        eval_dataset: datasets.Dataset | Sequence[dict] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
    ) -> None:
        # Seed before the adapter is created, as TRL's trainers do: LoRA's initial weights are random and
        # every method must start from the same adapter.
        set_seed(args.seed)
        model_id = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)
        if isinstance(model, str):
            model, tokenizer = load_model(model, model_init_kwargs=init_kwargs(args.model_init_kwargs))
            processing_class = processing_class if processing_class is not None else tokenizer
        if processing_class is None:
            if model_id is None:
                raise ValueError("processing_class (the tokenizer) is required when the model is not a path or id")
            processing_class = load_tokenizer(model_id)
        ensure_pad_token(processing_class)
        model = prepare_model(model, peft_config, args)
        self.base_model_id = model_id
        self.drop_report = DropReport()  # the training data's drops (model card, CLI summary)
        self.eval_drop_report = DropReport()
        self.template = template_from_config(args, processing_class)
        train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_dataset(v, processing_class, args, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval")
        collator = ContextCollator(
            pad_token_id=processing_class.pad_token_id,
            grad_contexts=self.grad_contexts,
            nograd_contexts=self.nograd_contexts,
            padding_free=self._resolve_padding_free(model, args),
            packed_row_length=packed_row_length(model, args.packed_row_length),
            attention_pair_cost=attention_pair_cost(getattr(model, "config", None)),
        )
        super().__init__(
            model=model, args=args, data_collator=collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks,
            optimizers=optimizers,
        )
        # Our loss is normalised in compute_loss (see _get_num_items_in_batch); the Trainer must
        # neither pass num_items to the model nor divide again.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = self.per_example_loss
        self._metrics: dict[str, defaultdict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._tokens = {"real": 0, "computed": 0}
        self._last_log_time = time.perf_counter()
        self._resumed_loss_sum: float | None = None  # the loss sum of the steps before a resume

    # ------------------------------------------------------------------ data
    def view_contexts(self) -> tuple[str, ...]:
        """Contexts the view builder must produce (may differ from the forward-pass contexts)."""
        return self.grad_contexts + self.nograd_contexts

    def _prepare_dataset(
        self,
        dataset: datasets.Dataset | Sequence[dict] | None,
        tokenizer: PreTrainedTokenizerBase,
        args: JudgmentTrainingConfig,
        name: str,
    ) -> datasets.Dataset | None:
        """Canonical examples -> tokenised views, with every drop counted in `self.drop_report`."""
        if dataset is None:
            return None
        dataset = unwrap_judged(dataset, self.drop_report if name == "train" else self.eval_drop_report)
        if not isinstance(dataset, datasets.Dataset):
            dataset = datasets.Dataset.from_list(list(dataset))
        if "completion_ids" in dataset.column_names:  # already tokenised by the caller
            return dataset
        builder = ViewBuilder(tokenizer, self.template, max_length=args.max_length,
                              fake_positive=args.fake_positive_text)
        with args.main_process_first(desc=f"tokenising {name} dataset"):
            views, dropped = build_dataset(dataset, builder, self.view_contexts(), num_proc=args.dataset_num_proc,
                                           desc=f"Tokenising {name} dataset")
        if name == "train":  # evaluation measures the data as given
            views = self.select_examples(views, args, dropped)
        (self.drop_report if name == "train" else self.eval_drop_report).merge(dropped)
        if args.process_index == 0:
            for line in dropped.lines():
                logger.warning("%s dataset: dropped %s", name, line)
        if len(views) == 0:
            from cutalign.api import NoUsableExamplesError, no_usable_message

            report = self.drop_report if name == "train" else self.eval_drop_report
            raise NoUsableExamplesError(no_usable_message(report, f"tokenising the {name} data"))
        return views

    def select_examples(self, views: datasets.Dataset, args: JudgmentTrainingConfig,
                        dropped: DropReport) -> datasets.Dataset:
        """Method-specific selection after tokenisation (CUT: Align-P downsampling)."""
        return views

    def _set_signature_columns_if_needed(self) -> None:
        # The collator reads our feature columns; nothing should be removed by signature.
        self._signature_columns = None

    def _resolve_padding_free(self, model: nn.Module, args: JudgmentTrainingConfig) -> bool:
        """Pack by default where the model's attention keeps packed sequences apart; else pad, saying why."""
        if args.padding_free is False:
            self.padding_free_reason = "padding_free=false"
            return False
        reason = packing_unsupported_reason(model)
        if reason is not None and args.padding_free:
            raise ValueError(f"padding_free=true, but {reason}; use padding_free=false")
        if reason is not None and args.process_index == 0:
            logger.warning("padded, length-grouped batches instead of packed ones: %s", reason)
        self.padding_free_reason = reason or "packed: the attention keeps packed sequences apart"
        return reason is None

    # ------------------------------------------------------------------ loss
    def context_logps(self, model: nn.Module, inputs: dict[str, Any]) -> ContextLogps:
        """Per-context [B, T] log-probs (and masks) of the targets; no-grad contexts without gradient."""
        batch_size = int(inputs["is_negative"].shape[0])
        out: ContextLogps = {}
        for key, contexts, grad in (("grad", self.grad_contexts, True), ("nograd", self.nograd_contexts, False)):
            block = inputs.get(key)
            if not contexts:
                continue
            if block is None:
                if not is_sharded(model):
                    continue
                # FSDP / ZeRO-3 gather parameters collectively in every forward: a process whose
                # micro-batch has no row for this pass runs an empty one so that the others do not wait.
                block = _empty_block(inputs["grad"])
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                logp = token_logprobs(model, block, chunk_size=self.args.logprob_chunk_size)
            out.update(block_to_matrices(logp, block, contexts, batch_size))
            self._count_tokens(block)
        return out

    def compute_method_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (per-example-mean loss of the micro-batch, metrics to log)."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        loss, metrics = self.compute_method_loss(model, inputs)
        self._record(metrics, "train" if model.training else "eval")
        if self.per_example_loss and num_items_in_batch is not None and model.training:
            # Sum over this micro-batch's examples / examples in the whole accumulation window (all
            # processes), so accumulation and data parallelism give the large-batch gradient exactly.
            loss = loss * inputs["is_negative"].shape[0] / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.args.world_size
        return (loss, None) if return_outputs else loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Examples in the accumulation window (not label tokens): the paper's loss is per example."""
        if not self.per_example_loss or not batch_samples:
            return None
        count = torch.tensor(sum(int(b["is_negative"].shape[0]) for b in batch_samples), device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, metrics = self.compute_method_loss(model, inputs)
        self._record(metrics, "eval")
        return loss.detach(), None, None

    def _record(self, metrics: dict[str, float], mode: str) -> None:
        for key, value in metrics.items():
            self._metrics[mode][key].append(float(value))

    # ------------------------------------------------------------------ logging
    def _count_tokens(self, block: dict[str, torch.Tensor]) -> None:
        self._tokens["computed"] += int(block["input_ids"].numel())
        self._tokens["real"] += int(block["real_tokens"])

    def _pop_metrics(self, mode: str) -> dict[str, float]:
        """Mean of each metric since the last log, averaged over processes (every process logs)."""
        averaged = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        self._metrics[mode].clear()
        if self.args.world_size > 1 and averaged:
            keys = sorted(averaged)  # the same keys on every process: each method logs a fixed set
            values = torch.tensor([averaged[k] for k in keys], device=self.args.device)
            averaged = dict(zip(keys, self.accelerator.reduce(values, reduction="mean").tolist(), strict=True))
        return averaged

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        """Adds the method's averaged metrics (e.g. eval_unlikely_fraction) to what evaluate() returns."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self._pop_metrics("eval").items()})
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "train_loss" in logs and self._resumed_loss_sum is not None:
            logs = {**logs, "train_loss": self._whole_run_loss()}
        if self.model.training:
            logs = {**logs, **self._pop_metrics("train")}
            if self._tokens["computed"]:
                now = time.perf_counter()
                logs["tokens_per_second"] = self._tokens["real"] / max(now - self._last_log_time, 1e-9)
                logs["useful_token_fraction"] = self._tokens["real"] / self._tokens["computed"]
                self._tokens = {"real": 0, "computed": 0}
                self._last_log_time = now
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints and resume
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Also record the run's loss sum so far (before trainer_state.json, which the Trainer writes
        last and which marks a checkpoint complete), so a resumed run reports the whole run's loss."""
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            pending = float(self._tr_loss.item()) if getattr(self, "_tr_loss", None) is not None else 0.0
            atomic_write_json(folder / RUN_STATE_NAME, {
                "global_step": self.state.global_step,
                "loss_sum": (self._resumed_loss_sum or 0.0) + self._total_loss_scalar + pending,
            })
        super()._save_checkpoint(model, trial)

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        # Fault injection for the crash-safety tests: die like a SIGKILL after the weights and optimizer
        # of checkpoint-N are written but before its trainer_state.json.
        if os.environ.get(KILL_AT_SAVE_ENV) == str(self.state.global_step):
            os.kill(os.getpid(), signal.SIGKILL)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / RUN_STATE_NAME
        self._resumed_loss_sum = float(json.loads(path.read_text())["loss_sum"]) if path.is_file() else None

    def _whole_run_loss(self) -> float:
        return ((self._resumed_loss_sum or 0.0) + self._total_loss_scalar) / max(self.state.global_step, 1)

    def _finalize_training(self, trial: Any, num_train_samples: int, start_time: float) -> Any:
        output = super()._finalize_training(trial, num_train_samples, start_time)
        if self._resumed_loss_sum is None:
            return output
        loss = self._whole_run_loss()
        output.metrics["train_loss"] = loss
        return output._replace(training_loss=loss)

    def create_model_card(self, **kwargs: Any) -> None:
        """A model card naming the method, the paper, the base model, the data and the results."""
        if self.is_world_process_zero():
            write_model_card(Path(self.args.output_dir), self, **kwargs)


def _empty_block(like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A one-token row with no target: a forward pass that scores nothing."""
    ids = like["input_ids"][:1, :1]
    empty = like["target_ids"][:0]
    return {"input_ids": ids, "position_ids": torch.zeros_like(ids), "logit_index": empty, "target_ids": empty,
            "example_index": empty, "token_index": empty, "context_index": empty,
            "real_tokens": torch.zeros((), dtype=torch.long)}  # no useful work: `_count_tokens` reads it


def template_from_config(args: JudgmentTrainingConfig, tokenizer: PreTrainedTokenizerBase):
    """The prompt template a config asks for (chat options only apply to the chat template)."""
    if args.template == "chat":
        template = get_template("chat", tokenizer, judgment_placement=args.judgment_placement,
                                system_prompt=args.system_prompt, chat_template=args.chat_template)
        if template.chat_template:  # saved with the tokenizer: the model carries its template (vllm serve too)
            tokenizer.chat_template = template.chat_template
        return template
    return get_template(args.template, tokenizer)


def load_causal_lm(model_id: str, kwargs: dict[str, Any] | str | None) -> PreTrainedModel:
    """The model alone, through the one loader (:func:`cutalign.models.load_model`)."""
    return load_model(model_id, model_init_kwargs=init_kwargs(kwargs))[0]


def init_kwargs(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """`model_init_kwargs` as a dict (a JSON object string from the command line is parsed)."""
    from cutalign.trainer.config import _json_object

    if value is None:
        return {}
    if isinstance(value, str):
        return _json_object("model_init_kwargs", value)
    if not isinstance(value, dict):
        raise ValueError(f"model_init_kwargs must be a JSON object, got {value!r}")
    return dict(value)


def prepare_model(model: nn.Module, peft_config: Any | None, args: JudgmentTrainingConfig) -> nn.Module:
    """Wrap in PEFT when asked, keep gradient checkpointing working with adapters, drop dropout."""
    if args.disable_dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    if peft_config is None:
        return model
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if isinstance(model, PeftModel):
        raise ValueError("the model is already a PeftModel; pass peft_config=None or the base model")
    if getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    elif args.gradient_checkpointing:
        model.enable_input_require_grads()
    from cutalign.models import peft_deprecation_quiet

    with peft_deprecation_quiet():
        return get_peft_model(model, peft_config)
