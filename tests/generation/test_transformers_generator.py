"""`TransformersGenerator`: batching, order, seeds, streaming and stop strings on a real tiny model."""

from __future__ import annotations

import pytest

from cutalign.data.templates import ChatTemplate
from cutalign.generation import SamplingParams, TransformersGenerator, generate_from_texts, prompt_seeds

PROMPTS = ["Hi", "A much longer prompt with many more words in it than the others", "Name a color.",
           "Two words"]


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return TransformersGenerator.from_pretrained(str(tiny_model_dir), device="cpu", batch_size=3)


def test_batched_greedy_equals_one_by_one_in_input_order(generator):
    params = SamplingParams(max_new_tokens=6)
    batched = generator.generate(PROMPTS, params)
    alone = [generator.generate([p], params)[0] for p in PROMPTS]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert len({r.text for r in batched}) > 1  # different prompts, different answers
    for prompt, result in zip(PROMPTS, batched, strict=True):
        assert result.prompt_tokens == len(generator.encode(prompt))
        assert result.completion_tokens == 6 and result.finish_reason == "length"
    assert generate_from_texts(generator.model, generator.tokenizer, PROMPTS, max_new_tokens=6,
                               progress=False) == [r.text for r in batched]


def test_sampling_seeds_belong_to_prompts_not_batches(generator):
    params = SamplingParams(max_new_tokens=5, do_sample=True, temperature=1.5, seed=11)
    seeds = prompt_seeds(11, ["a", "b", "c", "d"])
    first = [r.text for r in generator.generate(PROMPTS, params, seeds=seeds)]
    reordered = generator.generate(PROMPTS[::-1], params, seeds=seeds[::-1])
    assert [r.text for r in reordered][::-1] == first
    assert generator.generate([PROMPTS[2]], params, seeds=[seeds[2]])[0].text == first[2]
    other = generator.generate(PROMPTS[:2], params, seeds=prompt_seeds(12, ["a", "b"]))
    assert [r.text for r in other] != first[:2]
    with pytest.raises(ValueError, match="2 seeds for 4 prompts"):
        generator.generate(PROMPTS, params, seeds=[1, 2])


def test_streamed_pieces_add_up_to_the_result(generator):
    pieces: dict[int, list[str]] = {}
    params = SamplingParams(max_new_tokens=10, do_sample=True, seed=3)
    results = generator.generate(PROMPTS, params, on_text=lambda i, d: pieces.setdefault(i, []).append(d))
    assert ["".join(pieces.get(i, [])) for i in range(len(PROMPTS))] == [r.text for r in results]
    assert max(len(p) for p in pieces.values()) > 1


def test_stop_strings_end_the_text_before_them(generator):
    full = generator.generate(["Name a color."], SamplingParams(max_new_tokens=12))[0].text
    stop = full.split()[1][:2]
    pieces: list[str] = []
    result = generator.generate(["Name a color."], SamplingParams(max_new_tokens=12, stop=(stop,)),
                                on_text=lambda i, d: pieces.append(d))[0]
    assert result.text == full[:full.index(stop)].rstrip() and result.finish_reason == "stop"
    assert "".join(pieces) == result.text


def test_chat_prompts_use_the_training_template(tiny_model_dir):
    chat = TransformersGenerator.from_pretrained(str(tiny_model_dir), device="cpu", chat_template="llama2",
                                                 system_prompt="Be brief.")
    assert isinstance(chat.template, ChatTemplate)
    messages = [{"role": "user", "content": "Name a color."}]
    assert chat.render(messages) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nName a color. [/INST]"
    params = SamplingParams(max_new_tokens=5)
    assert chat.generate([messages], params)[0].text == chat.generate([chat.render(messages)], params)[0].text
    alpaca = TransformersGenerator.from_pretrained(str(tiny_model_dir), device="cpu")
    with pytest.raises(ValueError, match="Alpaca template, which renders a single user message"):
        alpaca.generate([[{"role": "system", "content": "x"}, *messages]], params)


def test_sampling_params_are_checked():
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
