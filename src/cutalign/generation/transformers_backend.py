"""Batch generation with the training templates (greedy by default, as the paper's evaluation).

Prompts are encoded exactly as in training (`encode_prompt`), left-padded, and decoded after the
prompt, so what a model saw in training is what it sees here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from cutalign.data.templates import PromptTemplate
from cutalign.data.views import encode_prompt


def load_for_inference(path: str, dtype: str | None = None, device: str | None = None) -> tuple[Any, Any]:
    """A model dir or hub id, or a LoRA adapter dir (loaded on its base model), plus its tokenizer."""
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if dtype and dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def generate_responses(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list[dict[str, str]]],
    template: PromptTemplate,
    **kwargs: Any,
) -> list[str]:
    """Responses for `prompts` rendered with `template.plain` (the inference context)."""
    return generate_from_texts(model, tokenizer, [template.plain(p) for p in prompts], **kwargs)


@torch.no_grad()
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
    max_prompt_length: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Responses for fully rendered prompt texts, encoded as in training, left-padded, in input order."""
    encoded = [encode_prompt(tokenizer, text, max_length=max_prompt_length) for text in prompt_texts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Longest first keeps padding low; results are put back in input order.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    results: list[str] = [""] * len(encoded)
    device = model.device if hasattr(model, "device") else next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    was_training = model.training
    model.eval()
    batches = range(0, len(order), batch_size)
    try:
        for start in tqdm(batches, desc="generating", disable=not progress or len(batches) < 2):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids = encoded[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                attention_mask[row, width - len(ids):] = 1
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id, **sampling,
            )
            for row, i in enumerate(idx):
                results[i] = tokenizer.decode(output[row, width:], skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return results


def write_generations(path: Path, records: Sequence[dict[str, Any]], responses: Sequence[str]) -> None:
    """JSONL of {id, prompt, completion}: the canonical format, ready to be judged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record, response in zip(records, responses, strict=True):
            row = {"id": record.get("id"), "prompt": record["prompt"], "completion": response}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
