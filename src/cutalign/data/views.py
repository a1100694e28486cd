"""Training views: a canonical example becomes token ids for each context it is trained in.

CUT contrasts the same response under several contexts (cut-method.md §1, §3):

- ``plain``       y | x                  every example (Align-P, and the x-only context of L1)
- ``judged``      y | [x, j-]            negatives (Align-N)
- ``misaligned``  y | [x, j+]            negatives, with a fake positive judgment (paper, Eq. 5)

and the baselines add contexts with their own targets:

- ``hindsight``   y | [x, j]             every example; a positive without judgment gets the fake positive
- ``critique``    j | [x, y]             forward prediction; target = judgment + EOS
- ``refined``     y_hat | x              ILF-MLE; target = refinement + EOS

Why tokenise the response as a continuation of the prompt: the model sees, at inference, the ids
the tokenizer gives the response *after* the rendered prompt. SentencePiece tokenizers (Llama-2) add
a word-start ``▁`` to a text's first piece, so the response tokenised on its own starts ``▁Sure``
where the continuation of ``### Response:\n`` starts ``S``, ``ure``; training on the former teaches
a leading space. So each context's prompt and prompt + target are tokenised (``add_special_tokens=
False``) and the target ids are the joint ids after the prompt's own ids, once those are checked to
be a prefix. Detecting inappropriate tokens compares ``p(y_t | ..., context)`` across contexts, which
needs the response ids identical in every context; every template ends its prompt with a newline or
a fixed role header, so they are. Where a tokenizer merges across the boundary, or contexts disagree,
the response is tokenised on its own (the old method) and the example counted as the notice
``response_tokenised_apart``. Targets end with EOS and are never truncated -- prompts are cut from
the left (keeping BOS) to fit ``max_length``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from datasets import Dataset, Features, List, Value
from datasets.fingerprint import Hasher

from cutalign.data.report import DropReport
from cutalign.data.templates import DEFAULT_FAKE_POSITIVE, PromptTemplate

CONTEXTS = ("plain", "judged", "misaligned", "hindsight", "critique", "refined")
# Contexts whose target is not the response: context -> the canonical field holding the target.
OWN_TARGETS = {"critique": "judgment", "refined": "refinement"}
DROP_COLUMN = "drop_reason"
# The example's id (or "#row" in the canonical data): later drops (downsampling) name it too.
WHERE_COLUMN = "id"
NOTICE_COLUMN = "tokenisation_notice"
# A notice, not a drop: the target ids are the target tokenised on its own (see the module docstring).
APART_NOTICE = "response_tokenised_apart"


def tokenizer_uses_bos(tokenizer: Any) -> bool:
    """Whether sequences for this tokenizer's models start with BOS.

    The tokenizer's own post-processor is not enough: some Llama-2 tokenizer files (the shared one
    included) add no BOS although the model was trained with it. A BOS distinct from EOS is taken
    as "used"; models whose BOS equals EOS (GPT-2 style) or have none do not get one.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    return tokenizer("a")["input_ids"][:1] == [bos] or bos != tokenizer.eos_token_id


def resolve_bos_id(tokenizer: Any, add_bos: bool | None = None) -> int | None:
    """The BOS id to put before prompts (None: no BOS); ``add_bos`` overrides :func:`tokenizer_uses_bos`."""
    if add_bos and tokenizer.bos_token_id is None:
        raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
    uses_bos = tokenizer_uses_bos(tokenizer) if add_bos is None else add_bos
    return tokenizer.bos_token_id if uses_bos else None


def fit_prompt(ids: Sequence[int], bos_id: int | None, max_length: int | None = None) -> list[int]:
    """BOS once at the start (chat templates often render it already), then cut from the left,
    keeping BOS, to at most ``max_length`` tokens."""
    has_bos = bos_id is not None
    body = list(ids[1:] if has_bos and list(ids[:1]) == [bos_id] else ids)
    if max_length is not None:
        keep = max(max_length - int(has_bos), 0)
        body = body[len(body) - keep :] if len(body) > keep else body
    return [bos_id, *body] if has_bos else body


def encode_prompt(
    tokenizer: Any, text: str, *, add_bos: bool | None = None, max_length: int | None = None
) -> list[int]:
    """Token ids of a rendered prompt exactly as training views encode it (for generation)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return fit_prompt(ids, resolve_bos_id(tokenizer, add_bos), max_length)


class ViewBuilder:
    """Turns canonical examples into flat, Arrow-friendly feature dicts (see :meth:`build`).

    ``fake_positive`` is the j+ of the ``misaligned`` context (None: no such context, the official
    code's ``instruction_only`` detection). ``positive_judgment`` stands in for a positive's missing
    judgment in ``hindsight`` and ``critique`` (default: ``fake_positive``, else the paper's text).
    ``add_bos`` overrides :func:`tokenizer_uses_bos`.
    """

    def __init__(
        self,
        tokenizer: Any,
        template: PromptTemplate,
        *,
        max_length: int = 2048,
        fake_positive: str | None = DEFAULT_FAKE_POSITIVE,
        positive_judgment: str | None = None,
        add_bos: bool | None = None,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; every target must end with EOS")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (one prompt token and EOS), got {max_length}")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.fake_positive = fake_positive
        self.positive_judgment = positive_judgment or fake_positive or DEFAULT_FAKE_POSITIVE
        self.bos_id = resolve_bos_id(tokenizer, add_bos)
        self.eos_id = tokenizer.eos_token_id

    @staticmethod
    def feature_keys(contexts: Sequence[str]) -> list[str]:
        """The keys of every feature dict built for ``contexts`` (fixed, so Arrow gets one schema)."""
        keys = ["completion_ids", "is_negative", "length"]
        for ctx in _checked_contexts(contexts):
            keys.append(f"{ctx}_prompt_ids")
            if ctx in OWN_TARGETS:
                keys.append(f"{ctx}_target_ids")
        return keys

    def build(self, example: Mapping[str, Any], contexts: Sequence[str]) -> dict[str, Any] | str:
        """Feature dict of ``example`` for ``contexts``, or the reason it must be dropped.

        Keys: ``completion_ids`` (response + EOS, the shared target), ``is_negative``, ``length``
        (tokens over all contexts), ``<ctx>_prompt_ids`` per context (``[]`` when the context does
        not apply to this example) and ``<ctx>_target_ids`` for contexts with their own target.
        """
        return self.build_with_notice(example, contexts)[0]

    def build_with_notice(
        self, example: Mapping[str, Any], contexts: Sequence[str]
    ) -> tuple[dict[str, Any] | str, str | None]:
        """:meth:`build`, and :data:`APART_NOTICE` when a target had to be tokenised on its own."""
        contexts = _checked_contexts(contexts)
        completion = example["completion"]
        if not completion.strip():
            return "empty_response", None
        is_negative = not example["label"]
        texts = self._context_texts(example, contexts, is_negative)
        if isinstance(texts, str):
            return texts, None
        targets = {ctx: self._target_text(example, ctx) for ctx in contexts if ctx in OWN_TARGETS and ctx in texts}
        shared = [ctx for ctx in texts if ctx not in targets]
        # Without a context that trains on the response, the plain prompt still defines its ids.
        reference = {ctx: texts[ctx] for ctx in shared} or {"plain": self.template.plain(example["prompt"])}
        pairs = [(text, completion) for text in reference.values()]
        pairs += [(texts[ctx], targets[ctx]) for ctx in targets]
        encoded = self._encode_continuations(pairs)
        prompts = {ctx: encoded[i][0] for i, ctx in enumerate(reference) if ctx in texts}
        responses = [ids for _, ids in encoded[: len(reference)]]
        apart = any(ids is None for ids in responses) or any(ids != responses[0] for ids in responses)
        completion_ids = [*(self._encode([completion])[0] if apart else responses[0]), self.eos_id]
        target_ids = {}
        for (prompt_ids, ids), ctx, text in zip(encoded[len(reference) :], targets, targets.values(), strict=True):
            prompts[ctx] = prompt_ids
            apart = apart or ids is None
            target_ids[ctx] = [*(self._encode([text])[0] if ids is None else ids), self.eos_id]
        notice = APART_NOTICE if apart else None

        if len(completion_ids) + 1 > self.max_length:
            return "response_too_long", notice
        features: dict[str, Any] = {"completion_ids": completion_ids, "is_negative": is_negative, "length": 0}
        for ctx in contexts:
            target = target_ids.get(ctx, completion_ids)
            if len(target) + 1 > self.max_length:
                return f"{OWN_TARGETS[ctx]}_too_long", notice
            if ctx in prompts and self._truncation_cuts_judgment(example, ctx, texts[ctx], prompts[ctx], target):
                return "judgment_truncated", notice
            prompt = (
                fit_prompt(prompts[ctx], self.bos_id, self.max_length - len(target)) if ctx in prompts else []
            )
            features[f"{ctx}_prompt_ids"] = prompt
            if ctx in OWN_TARGETS:
                features[f"{ctx}_target_ids"] = target if prompt else []
            features["length"] += (len(prompt) + len(target)) if prompt else 0
        return features, notice

    def _encode_continuations(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int] | None]]:
        """Per (prompt, target): the prompt's own ids, and the target's ids as the tokenizer continues
        the prompt with it -- None when the joint ids do not start with the prompt's ids (a merge
        across the boundary) or nothing is left for the target."""
        ids = self._encode([p for p, _ in pairs] + [p + t for p, t in pairs])
        out = []
        for prompt_ids, joint in zip(ids[: len(pairs)], ids[len(pairs) :], strict=True):
            n = len(prompt_ids)
            faithful = joint[:n] == prompt_ids and len(joint) > n
            out.append((prompt_ids, joint[n:] if faithful else None))
        return out

    def _context_texts(
        self, example: Mapping[str, Any], contexts: Sequence[str], is_negative: bool
    ) -> dict[str, str] | str:
        """Prompt text per applicable context, or a drop reason when a needed field is missing."""
        prompt, judgment = example["prompt"], _text_or_none(example.get("judgment"))
        if is_negative and judgment is None and {"judged", "hindsight", "critique"} & set(contexts):
            return "missing_judgment"
        if "refined" in contexts and _text_or_none(example.get("refinement")) is None:
            return "missing_refinement"
        shown_judgment = judgment if judgment is not None else self.positive_judgment
        texts = {}
        for ctx in contexts:
            if ctx == "plain" or ctx == "refined":
                texts[ctx] = self.template.plain(prompt)
            elif ctx == "judged" and is_negative:
                texts[ctx] = self.template.judged(prompt, shown_judgment)
            elif ctx == "misaligned" and is_negative and self.fake_positive is not None:
                texts[ctx] = self.template.judged(prompt, self.fake_positive)
            elif ctx == "hindsight":
                texts[ctx] = self.template.judged(prompt, shown_judgment)
            elif ctx == "critique":
                texts[ctx] = self.template.critique(prompt, example["completion"])
        return texts

    def _truncation_cuts_judgment(
        self, example: Mapping[str, Any], ctx: str, text: str, prompt_ids: list[int], target: list[int]
    ) -> bool:
        """Whether left truncation would cut into the judgment a context carries.

        Training on such a context is worse than dropping it: a negative whose judgment is gone
        looks like [x] -> y, so CUT would detect nothing and learn the rejected response.
        """
        budget = self.max_length - len(target)
        if ctx not in JUDGMENT_CONTEXTS or len(prompt_ids) <= budget:
            return False
        judgment = self.fake_positive if ctx == "misaligned" else (
            _text_or_none(example.get("judgment")) or self.positive_judgment)
        start = text.rfind(judgment)
        if start < 0:  # the template rewrote the judgment; cannot tell, so be safe
            return True
        kept_from_judgment = len(self._encode([text[start:]])[0]) + int(self.bos_id is not None)
        return kept_from_judgment > budget

    def _target_text(self, example: Mapping[str, Any], ctx: str) -> str:
        text = _text_or_none(example.get(OWN_TARGETS[ctx]))
        return text if text is not None else self.positive_judgment

    def fingerprint(self) -> str:
        """A stable cache key for ``datasets.map``: hashing the tokenizer object costs ~0.5 s per call,
        its serialised vocabulary and the builder's settings a few milliseconds."""
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        vocab = backend.to_str() if backend is not None else sorted(tok.get_vocab().items())
        plain_types = (str, int, float, bool, type(None), tuple)
        template = {k: v for k, v in vars(self.template).items() if isinstance(v, plain_types)}
        settings = (self.max_length, self.fake_positive, self.positive_judgment, self.bos_id, self.eos_id)
        return Hasher.hash((type(self.template).__name__, template, getattr(tok, "chat_template", None),
                            tok.all_special_tokens, settings, vocab))

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


# Bump when build() changes what it produces, so cached views are not reused.
VIEWS_VERSION = 3
# Contexts whose prompt carries a judgment that truncation must not cut.
JUDGMENT_CONTEXTS = ("judged", "misaligned", "hindsight")


def _checked_contexts(contexts: Sequence[str]) -> tuple[str, ...]:
    if isinstance(contexts, str):
        contexts = (contexts,)
    unknown = [c for c in contexts if c not in CONTEXTS]
    if unknown or not contexts:
        raise ValueError(f"unknown or no contexts {unknown or list(contexts)}; choose from {list(CONTEXTS)}")
    return tuple(dict.fromkeys(contexts))


def _text_or_none(value: Any) -> str | None:
    """A judgment/refinement that is null or blank counts as absent."""
    return value if isinstance(value, str) and value.strip() else None


def feature_schema(contexts: Sequence[str]) -> Features:
    """Arrow schema of :meth:`ViewBuilder.build` output, so empty lists never get a null type."""
    schema = {key: List(Value("int32")) for key in ViewBuilder.feature_keys(contexts)}
    schema.update(is_negative=Value("bool"), length=Value("int32"))
    return Features(schema)


def build_dataset(
    dataset_or_list: Dataset | Iterable[Mapping[str, Any]],
    builder: ViewBuilder,
    contexts: Sequence[str],
    *,
    num_proc: int | None = None,
    desc: str = "Building training views",
) -> tuple[Dataset, DropReport]:
    """Map canonical examples to feature rows with ``datasets.map`` (cached); count the dropped ones.

    Dropped examples are recorded per reason in the :class:`DropReport` (with their ids, or
    ``#index`` when they have none) and left out of the returned dataset; responses tokenised apart
    from their prompt are counted there as notices.
    """
    dataset = (
        dataset_or_list if isinstance(dataset_or_list, Dataset) else Dataset.from_list(list(dataset_or_list))
    )
    contexts = _checked_contexts(contexts)
    keys = ViewBuilder.feature_keys(contexts)
    schema = feature_schema(contexts)
    schema[DROP_COLUMN] = Value("string")
    schema[WHERE_COLUMN] = Value("string")
    schema[NOTICE_COLUMN] = Value("string")

    def build_batch(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in schema}
        for row, index in enumerate(indices):
            example = {name: column[row] for name, column in batch.items()}
            built, notice = builder.build_with_notice(example, contexts)
            reason = built if isinstance(built, str) else ""
            out[NOTICE_COLUMN].append(notice or "")
            features = _empty_features(keys) if reason else built
            for key in keys:
                out[key].append(features[key])
            out[DROP_COLUMN].append(reason)
            example_id = example.get("id")
            out[WHERE_COLUMN].append(str(example_id) if example_id is not None else f"#{index}")
        return out

    mapped = dataset.map(
        build_batch,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=schema,
        num_proc=num_proc,
        desc=desc,
        new_fingerprint=Hasher.hash((dataset._fingerprint, contexts, builder.fingerprint(), VIEWS_VERSION)),
    )
    report = DropReport()
    kept = []
    columns = zip(mapped[DROP_COLUMN], mapped[WHERE_COLUMN], mapped[NOTICE_COLUMN], strict=True)
    for index, (reason, where, notice) in enumerate(columns):
        if notice:
            report.notice(notice, where)
        if reason:
            report.drop(reason, where)
        else:
            kept.append(index)
    if len(kept) < len(mapped):
        mapped = mapped.select(kept)
    return mapped.remove_columns([DROP_COLUMN, NOTICE_COLUMN]), report


def _empty_features(keys: Sequence[str]) -> dict[str, Any]:
    return {key: False if key == "is_negative" else 0 if key == "length" else [] for key in keys}
