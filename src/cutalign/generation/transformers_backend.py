"""The transformers backend: batched, length-sorted, KV-cached generation with left padding.

Prompts are encoded exactly as in training (`encode_prompt`: the same BOS and tokenisation as the
training views), so what a model saw in training is what it sees here. Sampling uses one
`torch.Generator` per prompt (a logits processor draws each row's token with its own generator), so a
seeded prompt gets the same sample whatever batch it lands in.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from cutalign.data.templates import PromptTemplate, render_chat
from cutalign.data.views import encode_prompt
from cutalign.generation.base import GenerationResult, OnText, Prompt, SamplingParams


def load_for_inference(path: str, dtype: str | None = None, device: str | None = None) -> tuple[Any, Any]:
    """A model dir or hub id, or a LoRA adapter dir (loaded on its base model), plus its tokenizer, on
    CUDA when available (through the one loader, `cutalign.models.load_model`)."""
    from cutalign.models import load_model

    return load_model(path, dtype=dtype or "auto", device=device or "auto")


class TransformersGenerator:
    """A `Generator` over a loaded transformers model; chat prompts use the model's training template."""

    def __init__(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        template: PromptTemplate | None = None,
        *,
        name: str | None = None,
        batch_size: int = 8,
        max_prompt_length: int | None = None,
        progress: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        from cutalign.data.templates import AlpacaTemplate

        self.model = model
        self.tokenizer = tokenizer
        self.template = template if template is not None else AlpacaTemplate()
        self.name = name or str(getattr(model, "name_or_path", None) or "model")
        self.batch_size = batch_size
        self.max_prompt_length = max_prompt_length
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)

    @classmethod
    def from_pretrained(
        cls, path: str, *, dtype: str | None = None, device: str | None = None, template: str | None = None,
        chat_template: str | None = None, system_prompt: str | None = None, name: str | None = None,
        batch_size: int = 8, max_prompt_length: int | None = None, progress: bool = False,
    ) -> TransformersGenerator:
        """Load a model dir, merged checkpoint or adapter with the template it was trained with."""
        from cutalign.data.templates import resolve_template

        model, tokenizer = load_for_inference(path, dtype=dtype, device=device)
        prompt_template = resolve_template(path, tokenizer, template=template, chat_template=chat_template,
                                           system_prompt=system_prompt)
        return cls(model, tokenizer, prompt_template, name=name or str(path), batch_size=batch_size,
                   max_prompt_length=max_prompt_length, progress=progress)

    @property
    def max_context(self) -> int | None:
        """Positions the model can attend to (prompt + completion), when its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def render(self, prompt: Prompt) -> str:
        """A string is already a prompt text; chat messages are rendered with the training template."""
        return prompt if isinstance(prompt, str) else render_chat(self.template, prompt)

    def encode(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, self.render(prompt), max_length=self.max_prompt_length)

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, seeds: Sequence[int] | None = None,
        on_text: OnText | None = None,
    ) -> list[GenerationResult]:
        """One result per prompt in input order; `on_text(i, delta)` streams each prompt's new text."""
        encoded = [self.encode(p) for p in prompts]
        seeds = _resolve_seeds(params, len(encoded), seeds)
        # Longest first keeps padding low; results go back in input order.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[GenerationResult | None] = [None] * len(encoded)
        starts = range(0, len(order), self.batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in tqdm(starts, desc="generating", disable=not self.progress or len(starts) < 2):
                idx = order[start:start + self.batch_size]
                batch = self._generate_batch([encoded[i] for i in idx], params, [seeds[i] for i in idx],
                                             None if on_text is None else _remap(on_text, idx))
                for i, result in zip(idx, batch, strict=True):
                    results[i] = result
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, encoded: list[list[int]], params: SamplingParams, seeds: list[int],
                        on_text: OnText | None) -> list[GenerationResult]:
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        device = _device(self.model)
        config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids), use_cache=True)
        extra: dict[str, Any] = {}
        if params.do_sample:
            extra["logits_processor"] = LogitsProcessorList([_RowSampler(seeds, params.temperature, params.top_p)])
        if params.stop:
            extra.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        streamer = _BatchStreamer(self, len(encoded), params.stop, on_text) if on_text is not None else None
        output = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                     generation_config=config, streamer=streamer, **extra)
        return [self._result(output[row, width:].tolist(), len(encoded[row]), params)
                for row in range(len(encoded))]

    def _result(self, new_ids: list[int], prompt_tokens: int, params: SamplingParams) -> GenerationResult:
        ended = next((k for k, t in enumerate(new_ids) if t in self.eos_ids), None)
        kept = new_ids if ended is None else new_ids[:ended]
        text, stopped = cut_at_stop(self.tokenizer.decode(kept, skip_special_tokens=True).strip(), params.stop)
        finish = "stop" if ended is not None or stopped else "length"
        completion_tokens = len(kept) + (ended is not None)
        return GenerationResult(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                finish_reason=finish)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string (excluded), and whether one was found."""
    cut = min((pos for pos in (text.find(s) for s in stop if s) if pos >= 0), default=-1)
    return (text[:cut].rstrip(), True) if cut >= 0 else (text, False)


class _RowSampler(LogitsProcessor):
    """Samples each row's next token with that row's own generator, then leaves only it for greedy
    selection: per-prompt reproducible sampling inside HF's batched, cached `generate`."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.seeds = list(seeds)
        self.generators: list[torch.Generator] | None = None
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1 else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        scores = scores / self.temperature
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        chosen = torch.cat([torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(self.generators)])
        only = torch.full_like(scores, float("-inf"))
        only[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return only


class _BatchStreamer(BaseStreamer):
    """HF streamer for a whole batch: decodes each row's new tokens and reports visible text deltas.

    Leading/trailing whitespace and a possible partial stop string are held back, so the streamed
    pieces concatenate to exactly the non-streamed result text.
    """

    def __init__(self, generator: TransformersGenerator, rows: int, stop: Sequence[str], on_text: OnText) -> None:
        self.tokenizer, self.eos_ids = generator.tokenizer, generator.eos_ids
        self.stop, self.on_text = tuple(s for s in stop if s), on_text
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [""] * rows
        self.done = [False] * rows
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompt ids
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.tokens), -1)[:, -1].tolist()):
            if self.done[row]:
                continue
            if token in self.eos_ids:
                self._emit(row, final=True)
                continue
            self.tokens[row].append(token)
            self._emit(row, final=False)

    def end(self) -> None:
        for row in range(len(self.tokens)):
            if not self.done[row]:
                self._emit(row, final=True)

    def _emit(self, row: int, final: bool) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True).lstrip()
        text, stopped = cut_at_stop(text, self.stop)
        final = final or stopped
        if final:
            text = text.rstrip()
            self.done[row] = True
        else:
            text = text.rstrip().rstrip("\ufffd")
            text = text[:max(len(text) - self.holdback, 0)]
        if text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
            self.on_text(row, text[len(self.sent[row]):])
            self.sent[row] = text


def _remap(on_text: OnText, idx: Sequence[int]) -> OnText:
    return lambda row, delta: on_text(idx[row], delta)


def _resolve_seeds(params: SamplingParams, n: int, seeds: Sequence[int] | None) -> list[int]:
    if seeds is not None:
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} prompts")
        return [int(s) for s in seeds]
    base = params.seed if params.seed is not None else secrets.randbits(31)
    return [base + i for i in range(n)]


def _eos_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The tokenizer's EOS (what training appended) plus any the model's generation config adds."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if not ids:
        raise ValueError("the tokenizer and model define no eos_token_id; generation could not stop")
    return ids


def _device(model: Any) -> torch.device:
    return model.device if hasattr(model, "device") else next(model.parameters()).device


def generate_responses(
    model: Any, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], template: PromptTemplate,
    **kwargs: Any,
) -> list[str]:
    """Responses for `prompts` rendered with `template.plain` (the inference context)."""
    return generate_from_texts(model, tokenizer, [template.plain(p) for p in prompts], **kwargs)


def generate_from_texts(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt_texts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    max_prompt_length: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Responses for fully rendered prompt texts (a shortcut over :class:`TransformersGenerator`)."""
    generator = TransformersGenerator(model, tokenizer, batch_size=batch_size, max_prompt_length=max_prompt_length,
                                      progress=progress)
    params = SamplingParams(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                            top_p=top_p, seed=seed)
    return [r.text for r in generator.generate(list(prompt_texts), params)]
