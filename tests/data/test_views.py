"""Training views: token ids per context, on real CUT online data and the real Llama-2 tokenizer."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, List, Value, load_from_disk

from cutalign.data.collator import ContextCollator, block_to_matrices
from cutalign.data.templates import DEFAULT_FAKE_POSITIVE, LLAMA2_CHAT_TEMPLATE, AlpacaTemplate, ChatTemplate
from cutalign.data.views import ViewBuilder, build_dataset, encode_prompt, tokenizer_uses_bos

CUT_CONTEXTS = ("plain", "judged", "misaligned")


def canonical(raw: dict, **overrides) -> dict:
    """A canonical example from a raw cut-online record (input folded in; null judgment = positive)."""
    prompt = raw["instruction"] + ("\n" + raw["input"] if raw["input"] else "")
    example = {
        "id": str(raw["id"]),
        "prompt": prompt,
        "completion": raw["output"],
        "judgment": raw["judgment"],
        "label": raw["judgment"] is None,
        "score": None,
        "refinement": None,
    }
    return {**example, **overrides}


@pytest.fixture(scope="module")
def examples(cut_online_dir):
    raw = json.loads((cut_online_dir / "train-alpaca-sample-iter1.json").read_text())[:60]
    return [canonical(r) for r in raw]


@pytest.fixture(scope="module")
def negatives(examples):
    return [e for e in examples if not e["label"]][:8]


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(params=["alpaca", "chat"])
def template(request, llama2_tokenizer):
    if request.param == "alpaca":
        return AlpacaTemplate()
    return ChatTemplate(llama2_tokenizer, chat_template=LLAMA2_CHAT_TEMPLATE)


def test_response_ids_are_the_prompts_continuation(examples, llama2_tokenizer, template):
    """The response is tokenised as the tokenizer continues the rendered prompt (what the model sees
    at inference), not on its own: for Llama-2 after "### Response:\n" that is `S`,`ure`, not `▁Sure`."""
    builder = ViewBuilder(llama2_tokenizer, template, max_length=4096)
    for example in examples[:20]:
        features, notice = builder.build_with_notice(example, ["plain"])
        prompt_ids = token_ids(llama2_tokenizer, template.plain(example["prompt"]))
        joint = token_ids(llama2_tokenizer, template.plain(example["prompt"]) + example["completion"])
        assert notice is None and joint[: len(prompt_ids)] == prompt_ids
        assert features["completion_ids"] == [*joint[len(prompt_ids) :], llama2_tokenizer.eos_token_id]
        assert features["completion_ids"][:-1] != token_ids(llama2_tokenizer, example["completion"])
        decoded = llama2_tokenizer.decode(features["completion_ids"][:-1])
        assert decoded == example["completion"], "no added leading space"


def test_llama2_response_starts_without_word_start(llama2_tokenizer):
    example = {"id": "1", "prompt": "Say hi", "completion": "Sure! Hi.", "judgment": "Rude.", "label": False}
    ids = ViewBuilder(llama2_tokenizer, AlpacaTemplate()).build(example, CUT_CONTEXTS)["completion_ids"]
    assert llama2_tokenizer.convert_ids_to_tokens(ids[:2]) == ["S", "ure"]


def byte_level_bpe(texts: list[str]):
    """A GPT-2-style byte-level BPE (no prefix space, BOS = EOS), trained offline in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def test_byte_level_bpe_response_ids_are_the_continuation(examples):
    template = AlpacaTemplate()
    texts = [template.judged(e["prompt"], e["judgment"] or "ok") + e["completion"] for e in examples]
    tokenizer = byte_level_bpe(texts)
    builder = ViewBuilder(tokenizer, template, max_length=4096)
    for example in [e for e in examples if not e["label"]][:8]:
        features, notice = builder.build_with_notice(example, CUT_CONTEXTS)
        assert notice is None
        for ctx, text in (("plain", template.plain(example["prompt"])),
                          ("judged", template.judged(example["prompt"], example["judgment"]))):
            joint = token_ids(tokenizer, text + example["completion"])
            assert features[f"{ctx}_prompt_ids"] == joint[: len(features[f"{ctx}_prompt_ids"])]
            assert features["completion_ids"][:-1] == joint[len(features[f"{ctx}_prompt_ids"]) :]
        assert tokenizer.decode(features["completion_ids"][:-1]) == example["completion"]


class _EndsMidWord:
    """A template whose prompt ends inside a word, so the tokenizer merges across the boundary."""

    name = "mid-word"

    def plain(self, prompt):
        return f"{prompt} Sur"

    def judged(self, prompt, judgment):
        return f"{prompt} ({judgment}) Sur"

    def critique(self, prompt, completion):
        return f"{prompt} {completion}"


def test_boundary_merge_falls_back_to_separate_ids_with_a_notice(llama2_tokenizer):
    example = {"id": "m1", "prompt": "Say", "completion": "e thing.", "judgment": "No.", "label": False,
               "score": None, "refinement": None}
    builder = ViewBuilder(llama2_tokenizer, _EndsMidWord())
    features, notice = builder.build_with_notice(example, CUT_CONTEXTS)
    assert notice == "response_tokenised_apart"
    assert features["completion_ids"] == [*token_ids(llama2_tokenizer, "e thing."), llama2_tokenizer.eos_token_id]
    views, report = build_dataset([example], builder, CUT_CONTEXTS)
    assert len(views) == 1 and not report and report.notices == {"response_tokenised_apart": 1}
    assert report.notice_samples["response_tokenised_apart"] == ["m1"]
    assert "tokenisation_notice" not in views.column_names


def test_response_ids_identical_across_contexts(negatives, llama2_tokenizer, template):
    builder = ViewBuilder(llama2_tokenizer, template, max_length=4096)
    contexts = (*CUT_CONTEXTS, "hindsight")
    features = [builder.build(e, contexts) for e in negatives]
    eos = llama2_tokenizer.eos_token_id
    for example, feature in zip(negatives, features, strict=True):
        joint = token_ids(llama2_tokenizer, template.plain(example["prompt"]) + example["completion"])
        n_prompt = len(token_ids(llama2_tokenizer, template.plain(example["prompt"])))
        assert feature["completion_ids"] == [*joint[n_prompt:], eos]
        expected_texts = {
            "plain": template.plain(example["prompt"]),
            "judged": template.judged(example["prompt"], example["judgment"]),
            "misaligned": template.judged(example["prompt"], DEFAULT_FAKE_POSITIVE),
            "hindsight": template.judged(example["prompt"], example["judgment"]),
        }
        for ctx, text in expected_texts.items():
            ids = token_ids(llama2_tokenizer, text)
            assert feature[f"{ctx}_prompt_ids"] == (ids if ids[0] == 1 else [1, *ids]), ctx
            assert feature[f"{ctx}_prompt_ids"][1] != 1, "no double BOS"
    # The rows that the model sees carry exactly the same response ids in every context.
    block = ContextCollator(0, grad_contexts=contexts, nograd_contexts=())(features)["grad"]
    matrices = block_to_matrices(block["target_ids"], block, contexts, len(features))
    reference, reference_mask = matrices["plain"]
    for ctx in contexts[1:]:
        assert matrices[ctx][0].equal(reference) and matrices[ctx][1].equal(reference_mask)


def test_bos_detection_and_override(examples, llama2_tokenizer):
    # The shared tokenizer file adds no BOS by itself, although Llama-2 was trained with one.
    assert llama2_tokenizer("a")["input_ids"][0] != llama2_tokenizer.bos_token_id
    assert tokenizer_uses_bos(llama2_tokenizer)
    with_bos = ViewBuilder(llama2_tokenizer, AlpacaTemplate()).build(examples[0], ["plain"])
    without = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), add_bos=False).build(examples[0], ["plain"])
    assert with_bos["plain_prompt_ids"] == [1, *without["plain_prompt_ids"]]
    assert with_bos["length"] == len(with_bos["plain_prompt_ids"]) + len(with_bos["completion_ids"])
    # Generation encodes the inference prompt the same way, optionally cut from the left keeping BOS.
    text = AlpacaTemplate().plain(examples[0]["prompt"])
    assert encode_prompt(llama2_tokenizer, text) == with_bos["plain_prompt_ids"]
    assert encode_prompt(llama2_tokenizer, text, max_length=4) == [1, *with_bos["plain_prompt_ids"][-3:]]
    assert encode_prompt(llama2_tokenizer, "<s>[INST] hi [/INST]")[:2] == [1, 29961]
    assert encode_prompt(llama2_tokenizer, text, add_bos=False) == without["plain_prompt_ids"]


def test_left_truncation_keeps_bos_and_the_whole_response(negatives, llama2_tokenizer, template):
    example = negatives[0]
    full = ViewBuilder(llama2_tokenizer, template, max_length=4096).build(example, CUT_CONTEXTS)
    n_response = len(full["completion_ids"])
    for ctx in CUT_CONTEXTS:  # cut each context by one token: never into a judgment
        n_prompt = len(full[f"{ctx}_prompt_ids"])
        cut = ViewBuilder(llama2_tokenizer, template, max_length=n_response + n_prompt - 1).build(example, (ctx,))
        assert cut["completion_ids"] == full["completion_ids"]
        assert cut[f"{ctx}_prompt_ids"] == [1, *full[f"{ctx}_prompt_ids"][-(n_prompt - 2) :]]


def test_response_too_long_boundary(negatives, llama2_tokenizer):
    example = negatives[0]
    n_response = len(
        ViewBuilder(llama2_tokenizer, AlpacaTemplate()).build(example, ["plain"])["completion_ids"]
    )
    tight = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=n_response + 1)
    assert tight.build(example, ["plain"])["plain_prompt_ids"] == [1]
    assert tight.build(example, CUT_CONTEXTS) == "judgment_truncated"  # the judgment cannot fit
    too_tight = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=n_response)
    assert too_tight.build(example, CUT_CONTEXTS) == "response_too_long"


def test_contexts_by_polarity(examples, llama2_tokenizer):
    positive = next(e for e in examples if e["label"])
    negative = next(e for e in examples if not e["label"])
    builder = ViewBuilder(llama2_tokenizer, AlpacaTemplate())
    pos, neg = builder.build(positive, CUT_CONTEXTS), builder.build(negative, CUT_CONTEXTS)
    assert set(pos) == set(neg) == set(ViewBuilder.feature_keys(CUT_CONTEXTS))
    assert pos["is_negative"] is False and neg["is_negative"] is True
    assert pos["plain_prompt_ids"] and pos["judged_prompt_ids"] == [] and pos["misaligned_prompt_ids"] == []
    assert all(neg[f"{ctx}_prompt_ids"] for ctx in CUT_CONTEXTS)
    assert "satisfactory" in llama2_tokenizer.decode(neg["misaligned_prompt_ids"])
    no_fake = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), fake_positive=None).build(
        negative, CUT_CONTEXTS
    )
    assert no_fake["misaligned_prompt_ids"] == [] and no_fake["judged_prompt_ids"] == neg["judged_prompt_ids"]
    perfect = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), fake_positive="Perfect!").build(
        negative, CUT_CONTEXTS
    )
    assert llama2_tokenizer.decode(perfect["misaligned_prompt_ids"]).endswith(
        "### Judgment:\nPerfect!\n\n### Response:\n"
    )


def test_baseline_contexts(examples, llama2_tokenizer):
    positive = next(e for e in examples if e["label"])
    negative = next(e for e in examples if not e["label"])
    builder = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), positive_judgment="Good.")
    contexts = ("plain", "hindsight", "critique")
    pos, neg = builder.build(positive, contexts), builder.build(negative, contexts)
    assert "### Judgment:\nGood.\n\n### Response:\n" in llama2_tokenizer.decode(pos["hindsight_prompt_ids"])
    def continuation(prompt_text: str, target: str) -> list[int]:  # own targets continue their prompt too
        n = len(token_ids(llama2_tokenizer, prompt_text))
        return [*token_ids(llama2_tokenizer, prompt_text + target)[n:], 2]

    template = AlpacaTemplate()
    assert pos["critique_target_ids"] == continuation(template.critique(positive["prompt"], positive["completion"]),
                                                      "Good.")
    assert neg["critique_target_ids"] == continuation(template.critique(negative["prompt"], negative["completion"]),
                                                      negative["judgment"])
    assert llama2_tokenizer.decode(neg["critique_target_ids"][:-1]) == negative["judgment"]
    critique_prompt = llama2_tokenizer.decode(neg["critique_prompt_ids"])
    assert critique_prompt.startswith("<s> Below is an instruction-response pair.")
    assert critique_prompt.endswith("### Judgment:\n") and negative["completion"][:50] in critique_prompt
    assert pos["length"] == sum(len(pos[f"{c}_prompt_ids"]) for c in contexts) + 2 * len(
        pos["completion_ids"]
    ) + len(pos["critique_target_ids"])

    assert builder.build(negative, ["plain", "refined"]) == "missing_refinement"
    refined = builder.build({**negative, "refinement": "Better answer."}, ["refined"])
    assert refined["refined_target_ids"] == continuation(template.plain(negative["prompt"]), "Better answer.")
    assert refined["refined_prompt_ids"] == builder.build(negative, ["plain"])["plain_prompt_ids"]


def test_untrusted_fields(examples, llama2_tokenizer):
    negative = next(e for e in examples if not e["label"])
    builder = ViewBuilder(llama2_tokenizer, AlpacaTemplate())
    assert builder.build({**negative, "judgment": None}, CUT_CONTEXTS) == "missing_judgment"
    assert builder.build({**negative, "judgment": "  "}, CUT_CONTEXTS) == "missing_judgment"
    assert builder.build({**negative, "judgment": None}, ["plain", "misaligned"])["misaligned_prompt_ids"]
    assert builder.build({**negative, "completion": "\n"}, CUT_CONTEXTS) == "empty_response"
    long_judgment = {**negative, "judgment": "bad " * 3000}
    assert builder.build(long_judgment, ["critique"]) == "judgment_too_long"
    with pytest.raises(ValueError, match="unknown or no contexts"):
        builder.build(negative, ["plain", "reward"])
    with pytest.raises(ValueError, match="chat template"):
        builder.build({**negative, "prompt": [{"role": "user", "content": "hi"}]}, ["plain"])


def test_build_dataset_counts_drops_and_keeps_one_schema(examples, llama2_tokenizer):
    builder = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=384)
    rows = [*examples, {**examples[1], "id": None, "judgment": None, "label": False}]
    dataset, report = build_dataset(rows, builder, CUT_CONTEXTS, desc="test views")
    expected = [builder.build(e, CUT_CONTEXTS) for e in rows]
    kept = [f for f in expected if not isinstance(f, str)]
    assert len(dataset) == len(kept) and len(dataset) + report.total == len(rows)
    assert report.counts["missing_judgment"] == 1 and report.samples["missing_judgment"] == [
        f"#{len(rows) - 1}"
    ]
    assert report.counts["response_too_long"] == sum(f == "response_too_long" for f in expected) > 0
    assert dataset.column_names == [*ViewBuilder.feature_keys(CUT_CONTEXTS), "id"]
    kept_ids = [str(e["id"]) if e["id"] is not None else f"#{i}"
                for i, (e, f) in enumerate(zip(rows, expected, strict=True)) if not isinstance(f, str)]
    assert dataset.to_list() == [{**f, "id": i} for f, i in zip(kept, kept_ids, strict=True)]

    positives = [e for e, f in zip(rows, expected, strict=True) if e["label"] and not isinstance(f, str)][:5]
    positives_only, report = build_dataset(positives, builder, CUT_CONTEXTS)
    assert not report and positives_only.features["judged_prompt_ids"] == List(Value("int32"))
    assert positives_only["judged_prompt_ids"] == [[]] * 5


def test_build_dataset_reuses_the_datasets_cache(examples, llama2_tokenizer, tmp_path):
    Dataset.from_list(examples[:6]).save_to_disk(str(tmp_path))
    canonical_rows = load_from_disk(str(tmp_path))  # file-backed, so map writes cache files
    builder = ViewBuilder(llama2_tokenizer, AlpacaTemplate())
    first, _ = build_dataset(canonical_rows, builder, CUT_CONTEXTS)
    builder.build(examples[0], CUT_CONTEXTS)  # using the tokenizer must not change the fingerprint
    second, _ = build_dataset(canonical_rows, builder, CUT_CONTEXTS)
    assert first.cache_files and first.cache_files == second.cache_files
    assert second.to_list() == first.to_list()


def test_truncation_that_would_cut_the_judgment_drops_the_example(llama2_tokenizer):
    """A negative whose judgment is cut looks like [x] -> y: CUT would learn the rejected response."""
    from cutalign.data.templates import AlpacaTemplate

    judgment = "The response is too short and misses the wavelength dependence."
    example = {"id": "1", "prompt": "Explain why the sky is blue in one long paragraph, with physics.",
               "completion": "Because of Rayleigh scattering of sunlight.", "judgment": judgment,
               "label": False, "score": None, "refinement": None}
    contexts = ("plain", "judged", "misaligned")
    # Find the shortest max_length that keeps the judgment whole; one token less must drop.
    lengths = range(20, 80)
    kept = [n for n in lengths if not isinstance(
        ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=n).build(example, contexts), str)]
    shortest = kept[0]
    built = ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=shortest).build(example, contexts)
    assert judgment in llama2_tokenizer.decode(built["judged_prompt_ids"])
    assert len(built["judged_prompt_ids"]) + len(built["completion_ids"]) <= shortest
    assert ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=shortest - 1).build(example, contexts) == (
        "judgment_truncated")
    # The plain context alone may be cut freely: no judgment in it.
    assert not isinstance(
        ViewBuilder(llama2_tokenizer, AlpacaTemplate(), max_length=shortest - 1).build(example, ("plain",)), str)
