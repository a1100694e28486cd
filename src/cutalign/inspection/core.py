"""Per-token view of CUT's detection: what the trainer computes for one example, token by token.

Why a separate pass and not a re-implementation: the views (:class:`~cutalign.data.views.ViewBuilder`),
the collator, the log-probs (:func:`~cutalign.logprobs.token_logprobs`) and the detection
(:func:`~cutalign.losses.cut_loss` / :func:`~cutalign.losses.cut_detection`) are the trainer's own,
so the U shown here is the U the trainer would train on with the same settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cutalign.data.collator import ContextCollator, block_to_matrices
from cutalign.data.packing import attention_pair_cost, packed_row_length
from cutalign.data.report import DropReport
from cutalign.data.schema import prompt_text
from cutalign.data.templates import DEFAULT_FAKE_POSITIVE, AlpacaTemplate, PromptTemplate
from cutalign.data.views import ViewBuilder
from cutalign.logprobs import packing_unsupported_reason, token_logprobs
from cutalign.losses import LOSS_MODES, CUTAblations, cut_detection, cut_loss

MISALIGN_MODES = ("fake_positive", "instruction_only")


@dataclass(frozen=True)
class InspectConfig:
    """The CUT settings that decide U and its weight (same names and defaults as ``CUTConfig``)."""

    threshold: float = 1.1
    alpha: float = 1.0
    gamma: float = 0.0
    mode: str = "paper"
    misalign_mode: str = "fake_positive"
    fake_positive_text: str = DEFAULT_FAKE_POSITIVE
    max_length: int = 2048
    logprob_chunk_size: int = 1024
    batch_size: int = 8
    ablations: CUTAblations = field(default_factory=CUTAblations)

    def __post_init__(self) -> None:
        if self.misalign_mode not in MISALIGN_MODES:
            raise ValueError(f"misalign_mode must be one of {MISALIGN_MODES}, got {self.misalign_mode!r}")
        if self.mode not in LOSS_MODES:
            raise ValueError(f"mode must be one of {LOSS_MODES}, got {self.mode!r}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0, got {self.threshold}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    @classmethod
    def from_cut_config(cls, args: Any, **overrides: Any) -> InspectConfig:
        """The settings of a ``CUTConfig`` (e.g. a trainer's ``args``), so inspection matches a run."""
        ablations = CUTAblations(no_l1=args.no_l1, no_align_p=args.no_align_p, no_align_n=args.no_align_n,
                                 no_detection=args.no_detection, no_dynamic_weight=args.no_dynamic_weight)
        values = dict(threshold=args.threshold, alpha=args.alpha, gamma=args.gamma, mode=args.mode,
                      misalign_mode=args.misalign_mode, fake_positive_text=args.fake_positive_text,
                      max_length=args.max_length, logprob_chunk_size=args.logprob_chunk_size, ablations=ablations)
        return cls(**{**values, **overrides})


@dataclass
class TokenScore:
    """One response token: its text, character span in the completion and CUT's numbers for it.

    ``logp_judged`` / ``ratio`` / ``weight`` are None for positives (they have no judged context).
    ``ratio`` is p(t|x,j-) / p(t|misaligned); ``weight`` is the unlikelihood weight the token gets
    when it is in U (alpha * p(t|x,j-)^gamma in paper mode). ``start == end`` for EOS.
    """

    index: int
    token_id: int
    text: str
    start: int
    end: int
    logp_plain: float
    logp_judged: float | None
    logp_misaligned: float | None
    ratio: float | None
    unlikely: bool
    weight: float | None

    @property
    def p_plain(self) -> float:
        return math.exp(self.logp_plain)

    @property
    def p_judged(self) -> float | None:
        return None if self.logp_judged is None else math.exp(self.logp_judged)

    @property
    def p_misaligned(self) -> float | None:
        return None if self.logp_misaligned is None else math.exp(self.logp_misaligned)


@dataclass
class TokenReport:
    """One inspected example: its texts, the settings used, and every response token's scores."""

    id: str
    instruction: str
    completion: str
    judgment: str | None
    is_negative: bool
    threshold: float
    misalign_mode: str
    tokens: list[TokenScore]
    gold_spans: list[tuple[int, int]] | None = None
    notice: str | None = None

    @property
    def unlikely_indices(self) -> list[int]:
        return [t.index for t in self.tokens if t.unlikely]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, probabilities included (``--json`` and the HTML page's embedded data)."""
        out = asdict(self)
        for token, row in zip(self.tokens, out["tokens"], strict=True):
            row.update(p_plain=token.p_plain, p_judged=token.p_judged, p_misaligned=token.p_misaligned)
        return out


Progress = Callable[[int], None]


def inspect_examples(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Mapping[str, Any]],
    config: InspectConfig | None = None,
    *,
    template: PromptTemplate | None = None,
    dropped: DropReport | None = None,
    progress: Progress | None = None,
) -> list[TokenReport]:
    """Score every response token of ``examples`` (canonical dicts) as the CUT trainer would.

    ``template`` defaults to Alpaca (the trainer's default; the CLI reads the model's saved one).
    Examples the trainer would drop (empty response, too long, ...) are recorded in ``dropped``
    with their reason. An optional ``error_spans`` key (character spans of the completion) is
    carried to :attr:`TokenReport.gold_spans`. ``progress`` is called with each batch's size.
    """
    config = config or InspectConfig()
    template = template or AlpacaTemplate()
    dropped = dropped if dropped is not None else DropReport()
    fake_positive = config.fake_positive_text if config.misalign_mode == "fake_positive" else None
    builder = ViewBuilder(tokenizer, template, max_length=config.max_length, fake_positive=fake_positive)
    contexts = ("plain", "judged", "misaligned") if fake_positive else ("plain", "judged")
    collator = ContextCollator(pad_token_id=_pad_id(tokenizer), grad_contexts=("plain", "judged"),
                               nograd_contexts=contexts[2:],
                               padding_free=packing_unsupported_reason(model) is None,
                               packed_row_length=packed_row_length(model),
                               attention_pair_cost=attention_pair_cost(getattr(model, "config", None)))
    built: list[tuple[Mapping[str, Any], dict[str, Any], str | None]] = []
    for index, example in enumerate(examples):
        features, notice = builder.build_with_notice(example, contexts)
        where = str(example.get("id")) if example.get("id") is not None else f"#{index}"
        if isinstance(features, str):
            dropped.drop(features, where)
            continue
        if notice:
            dropped.notice(notice, where)
        built.append((example, features, notice))
    reports: list[TokenReport] = []
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for start in range(0, len(built), config.batch_size):
            chunk = built[start : start + config.batch_size]
            scores = _score_batch(model, collator, [f for _, f, _ in chunk], contexts, config)
            for (example, features, notice), rows in zip(chunk, scores, strict=True):
                reports.append(_report(tokenizer, template, example, features, notice, rows, config))
            if progress is not None:
                progress(len(chunk))
    finally:
        model.train(was_training)
    return reports


@torch.no_grad()
def _score_batch(
    model: Any, collator: ContextCollator, features: list[dict[str, Any]], contexts: tuple[str, ...],
    config: InspectConfig,
) -> list[dict[str, list[float] | list[bool] | None]]:
    """The trainer's passes (grad block: plain + judged, nograd block: misaligned) and its detection."""
    batch = collator(features)
    device = next(model.parameters()).device
    batch_size = len(features)
    logps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, names in (("grad", collator.grad_contexts), ("nograd", collator.nograd_contexts)):
        block = batch.get(key)
        if block is None or not names:
            continue
        block = {k: v.to(device) for k, v in block.items()}
        values = token_logprobs(model, block, chunk_size=config.logprob_chunk_size)
        logps.update(block_to_matrices(values, block, names, batch_size))
    plain, mask = logps["plain"]
    length = plain.shape[1]
    judged = _fit(logps.get("judged"), length, plain)
    misaligned = _fit(logps["misaligned"], length, plain) if "misaligned" in logps else None
    is_negative = batch["is_negative"].to(device)
    out = cut_loss(plain, judged, misaligned, mask, is_negative, threshold=config.threshold, alpha=config.alpha,
                   gamma=config.gamma, mode=config.mode, ablations=config.ablations)
    negative_tokens = mask & is_negative[:, None]
    shown_misaligned = plain if misaligned is None else misaligned
    _, weight = cut_detection(torch.where(negative_tokens, judged, 0.0), shown_misaligned, negative_tokens,
                              threshold=config.threshold, alpha=config.alpha, gamma=config.gamma,
                              mode=config.mode, ablations=config.ablations)
    weights = weight if isinstance(weight, torch.Tensor) else torch.full_like(plain, float(weight))
    rows = []
    for b, feature in enumerate(features):
        n = len(feature["completion_ids"])
        negative = bool(feature["is_negative"])
        rows.append({
            "plain": plain[b, :n].tolist(),
            "judged": judged[b, :n].tolist() if negative else None,
            "misaligned": shown_misaligned[b, :n].tolist() if negative else None,
            "unlikely": out.unlikely_mask[b, :n].tolist(),
            "weight": weights[b, :n].tolist() if negative else None,
        })
    return rows


def _report(
    tokenizer: Any, template: PromptTemplate, example: Mapping[str, Any], features: dict[str, Any],
    notice: str | None, rows: dict[str, Any], config: InspectConfig,
) -> TokenReport:
    completion = example["completion"]
    ids = list(features["completion_ids"])
    spans = token_char_spans(tokenizer, template.plain(example["prompt"]), completion, ids, apart=notice is not None)
    tokens = []
    previous_end = 0
    for i, (token_id, (start, end)) in enumerate(zip(ids, spans, strict=True)):
        judged = rows["judged"][i] if rows["judged"] is not None else None
        misaligned = rows["misaligned"][i] if rows["misaligned"] is not None else None
        ratio = math.exp(min(judged - misaligned, 700.0)) if judged is not None and misaligned is not None else None
        text = completion[previous_end:end] if end > previous_end else (
            tokenizer.decode([token_id]) if start == end else "")
        previous_end = max(previous_end, end)
        tokens.append(TokenScore(
            index=i, token_id=int(token_id), text=text, start=start, end=end, logp_plain=rows["plain"][i],
            logp_judged=judged, logp_misaligned=misaligned, ratio=ratio, unlikely=bool(rows["unlikely"][i]),
            weight=rows["weight"][i] if rows["weight"] is not None else None))
    gold = example.get("error_spans")
    return TokenReport(
        id=str(example.get("id")) if example.get("id") is not None else "", instruction=prompt_text(example["prompt"]),
        completion=completion, judgment=example.get("judgment"), is_negative=bool(features["is_negative"]),
        threshold=config.threshold, misalign_mode=config.misalign_mode, tokens=tokens,
        gold_spans=[(int(a), int(b)) for a, b in gold] if gold is not None else None, notice=notice)


def token_char_spans(
    tokenizer: Any, prompt: str, completion: str, completion_ids: Sequence[int], *, apart: bool = False
) -> list[tuple[int, int]]:
    """Character span in ``completion`` of each response id (EOS last: an empty span at the end).

    The ids are the tokenizer's continuation of the rendered prompt (see the views), so their
    offsets come from tokenising ``prompt + completion``; ``apart`` (the views' notice) means they
    were tokenised on their own. Tokenizers without offsets fall back to incremental decoding.
    """
    body = list(completion_ids[:-1])
    n = len(completion)
    if getattr(tokenizer, "is_fast", False):
        text, shift = (completion, 0) if apart else (prompt + completion, len(prompt))
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        skip = 0 if apart else len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if list(encoded["input_ids"][skip:]) == body:
            spans = [(min(max(a - shift, 0), n), min(max(b - shift, 0), n))
                     for a, b in encoded["offset_mapping"][skip:]]
            return [*spans, (n, n)]
    spans, previous = [], 0
    for i in range(len(body)):
        end = min(len(tokenizer.decode(body[: i + 1], skip_special_tokens=True)), n)
        spans.append((previous, max(end, previous)))
        previous = max(end, previous)
    return [*spans, (n, n)]


def _fit(pair: tuple[torch.Tensor, torch.Tensor] | None, length: int, like: torch.Tensor) -> torch.Tensor:
    """A context's ``[B, T_c]`` log-probs right-padded to the plain context's ``T`` (as the CUT trainer)."""
    if pair is None:
        return torch.zeros_like(like)
    values = pair[0]
    return torch.nn.functional.pad(values, (0, length - values.shape[1])) if values.shape[1] < length else values


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    return int(pad)
