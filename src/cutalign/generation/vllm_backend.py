"""The vLLM backend (optional extra: ``pip install cutalign[vllm]``), for generation at scale on GPUs.

vLLM is imported on first use only; without it, constructing a :class:`VLLMGenerator` raises an
ImportError that names the extra. Prompts are token ids from `encode_prompt` (the training
encoding), so vLLM sees exactly what the transformers backend and training see; each prompt's seed
goes into its own `vllm.SamplingParams`, so sampling is per-prompt reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cutalign.data.templates import render_chat, resolve_template
from cutalign.data.views import encode_prompt
from cutalign.generation.base import GenerationResult, Prompt, SamplingParams

INSTALL_HINT = "the vllm backend needs vLLM: pip install 'cutalign[vllm]' (a CUDA machine)"


def import_vllm() -> Any:
    """The `vllm` module, or an ImportError saying which extra installs it."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return vllm


class VLLMGenerator:
    """A `Generator` over `vllm.LLM`; chat prompts use the model's training template (resolved as in
    `generate`), strings are used as they are."""

    def __init__(
        self,
        model: str,
        *,
        template: str | None = None,
        chat_template: str | None = None,
        system_prompt: str | None = None,
        dtype: str = "auto",
        max_prompt_length: int | None = None,
        **llm_kwargs: Any,
    ) -> None:
        vllm = import_vllm()
        llm_kwargs.setdefault("trust_remote_code", False)
        self.llm = vllm.LLM(model=model, dtype=dtype, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.template = resolve_template(model, self.tokenizer, template=template, chat_template=chat_template,
                                         system_prompt=system_prompt)
        self.name = model
        self.max_prompt_length = max_prompt_length
        self._vllm = vllm

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, seeds: Sequence[int] | None = None,
    ) -> list[GenerationResult]:
        if seeds is None and params.seed is not None:
            seeds = [params.seed + i for i in range(len(prompts))]
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        encoded = [encode_prompt(self.tokenizer, p if isinstance(p, str) else render_chat(self.template, p),
                                 max_length=self.max_prompt_length) for p in prompts]
        sampling = [self._sampling(params, None if seeds is None else seeds[i]) for i in range(len(prompts))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], sampling, use_tqdm=False)
        results = []
        for ids, output in zip(encoded, outputs, strict=True):
            completion = output.outputs[0]
            results.append(GenerationResult(text=completion.text.strip(), prompt_tokens=len(ids),
                                            completion_tokens=len(completion.token_ids),
                                            finish_reason=completion.finish_reason))
        return results

    def _sampling(self, params: SamplingParams, seed: int | None) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens, temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0, stop=list(params.stop) or None, seed=seed,
        )
