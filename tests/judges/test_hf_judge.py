"""The hf judge: the AI-judge prompt, batching over any Generator, parsing, and a real tiny model."""

from __future__ import annotations

import pytest

from cutalign.generation.base import GenerationResult, SamplingParams
from cutalign.judges.hf_judge import HFJudge


class ReplayGenerator:
    """A Generator that answers each prompt with a fixed reply chosen by the response text in it."""

    name = "replay"

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.calls: list[list[str]] = []

    def generate(self, prompts, params, *, seeds=None):
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            response = prompt.split("### Response:\n", 1)[1].split("\n\n### ", 1)[0]
            out.append(GenerationResult(text=self.replies[response]))
        return out


def test_prompts_batches_and_parsing():
    generator = ReplayGenerator({"Paris.": "Correct. Yes.", "Rome.": "Wrong city: it is Paris. No.", "Hm.": "I think"})
    judge = HFJudge(generator, batch_size=2)
    judgments = judge.judge(["Capital of France?"] * 3, ["Paris.", "Rome.", "Hm."])
    assert [j.satisfactory for j in judgments] == [True, False, None]
    assert judgments[1].text == "Wrong city: it is Paris." and judgments[2].error == "unparseable"
    assert [len(c) for c in generator.calls] == [2, 1]
    prompt = generator.calls[0][0]
    assert prompt.startswith("Below is an instruction-response pair. Write a judgment to evaluate the quality")
    assert "Then reply with 'Yes.' or 'No.'" in prompt and prompt.endswith("### Judgment:\n")


def test_generation_errors_are_counted_not_parsed():
    class Failing(ReplayGenerator):
        def generate(self, prompts, params, *, seeds=None):
            return [GenerationResult(text="", error="refused") for _ in prompts]

    [judgment] = HFJudge(Failing({})).judge(["q"], ["a"])
    assert judgment.error == "generation_error: refused" and judgment.satisfactory is None


def test_pairwise_prompt():
    class Pairs(ReplayGenerator):
        def generate(self, prompts, params, *, seeds=None):
            return [GenerationResult(text="B" if "### Response A:\nshort" in p else "A") for p in prompts]

    assert [p.winner for p in HFJudge(Pairs({})).judge_pairs(["q", "q"], ["short", "long"], ["long", "short"])] == [
        "b", "a"]


@pytest.mark.shared
def test_a_real_tiny_model_runs_as_judge(tiny_model_dir):
    judge = HFJudge.from_pretrained(str(tiny_model_dir), params=SamplingParams(max_new_tokens=6), batch_size=2)
    judgments = judge.judge(["Name a color.", "Add 2 and 2.", "Say hi."], ["Blue.", "5", "Hi!"])
    assert len(judgments) == 3
    for judgment in judgments:  # random weights: whatever it wrote is parsed or counted, never guessed
        assert judgment.ok or (judgment.error == "unparseable" and judgment.satisfactory is None)
