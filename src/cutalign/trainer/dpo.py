"""DPO baselines through TRL's `DPOTrainer`: DPO from scores (paper §5.3) and ILF-DPO (§3.2).

Preference pairs are built from canonical examples by pure functions (`score_pairs`,
`refinement_pairs`) and tokenised exactly as the MLE methods tokenise: the prompt is
`template.plain(prompt)` encoded on its own (with BOS, cut from the left to fit `max_length`) and
each response ends with EOS, so every method sees the same prompt tokens. Everything else -- the
loss, the reference model (a frozen copy, or the adapter disabled under LoRA), the metrics -- is
TRL's.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import datasets
from accelerate.utils import is_peft_model
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from cutalign.data.io import unwrap_judged
from cutalign.data.report import DropReport
from cutalign.data.templates import PromptTemplate
from cutalign.data.views import fit_prompt, resolve_bos_id
from cutalign.trainer.base import ensure_pad_token, template_from_config
from cutalign.trainer.config import JudgmentDataArguments, RecipeDefaults
from cutalign.trainer.model_card import write_model_card

logger = logging.getLogger(__name__)

Pair = dict[str, Any]


@dataclass
class JudgmentDPOConfig(JudgmentDataArguments, RecipeDefaults, DPOConfig):
    """TRL's `DPOConfig` with cutalign's shared fields and defaults (template, polarity, max_length, recipe).

    `max_length` keeps cutalign's meaning: the prompt is cut from the left and a pair whose longer
    response cannot fit is dropped, so TRL never truncates. Precision and checkpointing default as
    for every other cutalign method (off unless asked), not as TRL's defaults.
    """

    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations in the backward pass to save memory (default off)."}
    )
    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision (default off, as other methods)."})


# ---------------------------------------------------------------------------------------------- pairs
def _where(example: Mapping[str, Any], index: int) -> str:
    return str(example["id"]) if example.get("id") is not None else f"#{index}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _pair(prompt: Any, chosen: Mapping[str, Any], rejected: Mapping[str, Any], chosen_text: str) -> Pair:
    return {"prompt": prompt, "chosen": chosen_text, "rejected": rejected["completion"],
            "chosen_id": chosen.get("id"), "rejected_id": rejected.get("id")}


def score_pairs(examples: Iterable[Mapping[str, Any]]) -> tuple[list[Pair], DropReport]:
    """All pairs of completions to the same prompt whose scores differ, the higher preferred (paper §5.3).

    Prompts are compared exactly (conversational prompts message by message). Pairs come in data
    order. An example in no pair is counted in the report: `missing_score`, `duplicate_completion`
    (same prompt and response text as an earlier example), `single_completion` (its prompt has no
    other scored completion) or `tied_scores` (every other completion has the same score).
    """
    report = DropReport()
    groups: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    seen: dict[str, set[str]] = {}
    for index, example in enumerate(examples):
        where, score = _where(example, index), example.get("score")
        if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
            report.drop("missing_score", where)
            continue
        key = json.dumps(example["prompt"], sort_keys=True, ensure_ascii=False)
        response = example["completion"].strip()
        if response in seen.setdefault(key, set()):
            report.drop("duplicate_completion", where)
            continue
        seen[key].add(response)
        groups.setdefault(key, []).append((where, example))
    pairs: list[Pair] = []
    for group in groups.values():
        if len(group) == 1:
            report.drop("single_completion", group[0][0])
            continue
        paired = [False] * len(group)
        for i, j in combinations(range(len(group)), 2):
            a, b = group[i][1], group[j][1]
            if a["score"] == b["score"]:
                continue
            chosen, rejected = (a, b) if a["score"] > b["score"] else (b, a)
            pairs.append(_pair(chosen["prompt"], chosen, rejected, chosen["completion"]))
            paired[i] = paired[j] = True
        for (where, _), used in zip(group, paired, strict=True):
            if not used:
                report.drop("tied_scores", where)
    return pairs, report


def refinement_pairs(examples: Iterable[Mapping[str, Any]]) -> tuple[list[Pair], DropReport]:
    """ILF-DPO pairs: the refinement y_hat preferred over the response y, one pair per example.

    Dropped: `missing_refinement` (a negative without one: run `cutalign refine`),
    `positive_without_refinement` (a satisfactory response, nothing to prefer over it) and
    `refinement_equals_response`.
    """
    report = DropReport()
    pairs: list[Pair] = []
    for index, example in enumerate(examples):
        refinement = _text(example.get("refinement"))
        if refinement is None:
            report.drop("positive_without_refinement" if example["label"] else "missing_refinement",
                        _where(example, index))
        elif refinement.strip() == example["completion"].strip():
            report.drop("refinement_equals_response", _where(example, index))
        else:
            pairs.append(_pair(example["prompt"], example, example, refinement))
    return pairs, report


def tokenize_pairs(
    pairs: Sequence[Pair], tokenizer: PreTrainedTokenizerBase, template: PromptTemplate, max_length: int
) -> tuple[datasets.Dataset, DropReport]:
    """`prompt_ids` / `chosen_ids` / `rejected_ids` as TRL's collator reads them, tokenised like the views.

    A pair whose longer response (plus EOS and one prompt token) exceeds `max_length` is dropped
    (`response_too_long`); otherwise the prompt is cut from the left, keeping BOS, to fit.
    """
    bos_id, eos_id = resolve_bos_id(tokenizer), tokenizer.eos_token_id
    texts = [template.plain(p["prompt"]) for p in pairs] + [p[k] for k in ("chosen", "rejected") for p in pairs]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    n = len(pairs)
    prompt_ids, chosen_ids, rejected_ids = ids[:n], ids[n:2 * n], ids[2 * n:]
    report = DropReport()
    rows: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for pair, prompt, chosen, rejected in zip(pairs, prompt_ids, chosen_ids, rejected_ids, strict=True):
        chosen, rejected = [*chosen, eos_id], [*rejected, eos_id]
        longest = max(len(chosen), len(rejected))
        if longest + 1 > max_length:
            report.drop("response_too_long", f"{pair.get('chosen_id')} > {pair.get('rejected_id')}")
            continue
        rows["prompt_ids"].append(fit_prompt(prompt, bos_id, max_length - longest))
        rows["chosen_ids"].append(chosen)
        rows["rejected_ids"].append(rejected)
    features = datasets.Features({key: datasets.List(datasets.Value("int32")) for key in rows})
    return datasets.Dataset.from_dict(rows, features=features), report


# ---------------------------------------------------------------------------------------------- trainers
class JudgmentDPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` on canonical judged examples; subclasses choose how pairs are built.

    Takes what `JudgmentTrainer` takes (a model id or model, canonical train/eval data, an optional
    PEFT config) and exposes the same `drop_report`, `method_name`, `base_model_id` and
    `create_model_card()`. Without PEFT the reference model is a frozen copy of the initial model
    (TRL loads it again from the path when `model` is an id); with PEFT it is the model with the
    adapter disabled, as TRL does.
    """

    method_name = "dpo"
    no_pairs_hint = "no example could be paired"

    @staticmethod
    def build_pairs(examples: Iterable[Mapping[str, Any]]) -> tuple[list[Pair], DropReport]:
        raise NotImplementedError

    def __init__(
        self,
        model: Any,
        args: JudgmentDPOConfig | None = None,
        train_dataset: datasets.Dataset | Sequence[dict] | None = None,
        eval_dataset: datasets.Dataset | Sequence[dict] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        ref_model: Any | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
    ) -> None:
        if args is None:
            args = JudgmentDPOConfig(output_dir=f"{self.method_name}-output")
        if not isinstance(args, JudgmentDPOConfig):
            raise TypeError(f"{type(self).__name__} needs a JudgmentDPOConfig, got {type(args).__name__}")
        self.base_model_id = model if isinstance(model, str) else getattr(model.config, "_name_or_path", None) or None
        if processing_class is None:
            if self.base_model_id is None:
                raise ValueError("processing_class (the tokenizer) is required when the model is not a path or id")
            processing_class = AutoTokenizer.from_pretrained(self.base_model_id)
        ensure_pad_token(processing_class)
        self.template = template_from_config(args, processing_class)
        self.drop_report = DropReport()  # the training data's drops; evaluation's are kept apart
        self.eval_drop_report = DropReport()
        if ref_model is None and peft_config is None and not isinstance(model, str) and not is_peft_model(model) \
                and not args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)  # the policy as it starts
        train_dataset, eval_dataset = unwrap_judged(train_dataset, self.drop_report), unwrap_judged(
            eval_dataset, self.eval_drop_report)  # loaded data's drops reach the model card
        super().__init__(
            model=model, ref_model=ref_model, args=args, train_dataset=_as_dataset(train_dataset),
            eval_dataset=_as_dataset(eval_dataset), processing_class=processing_class, callbacks=callbacks,
            optimizers=optimizers, peft_config=peft_config,
        )

    def _prepare_dataset(self, dataset: datasets.Dataset, processing_class: Any, args: JudgmentDPOConfig,
                         dataset_name: str) -> datasets.Dataset:
        """Canonical examples -> preference pairs -> token ids; every unused example is counted."""
        if "prompt_ids" in dataset.column_names:  # already tokenised
            return dataset
        pairs, dropped = self.build_pairs(dataset)
        tokenised, too_long = tokenize_pairs(pairs, processing_class, self.template, args.max_length)
        dropped.merge(too_long)
        (self.drop_report if dataset_name == "train" else self.eval_drop_report).merge(dropped)
        if args.process_index == 0:
            for line in dropped.lines():
                logger.warning("%s dataset: dropped %s", dataset_name, line)
        if len(tokenised) == 0:
            raise ValueError(f"no preference pairs in the {dataset_name} data ({len(dataset)} examples): "
                             f"{self.no_pairs_hint}; dropped: {dropped.as_dict()}")
        return tokenised

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """cutalign's model card (method, paper, base model, data, results), not TRL's Hub template."""
        if self.is_world_process_zero():
            pairs = len(self.train_dataset) if self.train_dataset is not None else 0
            write_model_card(Path(self.args.output_dir), self, data_summary={"preference_pairs": pairs})


class ScoreDPOTrainer(JudgmentDPOTrainer):
    """DPO from scores: every pair of completions to one prompt with different scores (paper §5.3)."""

    method_name = "dpo"
    no_pairs_hint = ("dpo needs at least two completions with different scores for the same prompt "
                     "(a `score` field, e.g. UltraFeedback's overall_score)")
    build_pairs = staticmethod(score_pairs)


class RefinementDPOTrainer(JudgmentDPOTrainer):
    """ILF-DPO: the refined response y_hat preferred over the judged response y."""

    method_name = "ilf_dpo"
    no_pairs_hint = ("ilf_dpo needs refined responses that differ from the judged ones; generate them with "
                     "`cutalign refine`")
    build_pairs = staticmethod(refinement_pairs)


def _as_dataset(data: datasets.Dataset | Sequence[dict] | None) -> datasets.Dataset | None:
    if data is None or isinstance(data, datasets.Dataset | dict):
        return data
    return datasets.Dataset.from_list(list(data))
