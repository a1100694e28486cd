"""`cutalign.refine`: refinement prompts and resumable writing of refined examples."""

from __future__ import annotations

import json

import pytest

from cutalign.data.io import load_judged_dataset
from cutalign.files import ForeignOutputError
from cutalign.generation import GenerationResult, Generator
from cutalign.refine import (
    DEFAULT_REFINEMENT_PROMPT,
    check_prompt_template,
    load_prompt_template,
    refine_examples,
    refinement_request,
)

TEMPLATE = "Fix: {response} | {judgment} | for {instruction}"


def example(id_, label=False, refinement=None, prompt="Name a color."):
    return {"id": id_, "prompt": prompt, "completion": f"answer {id_}", "judgment": None if label else f"bad {id_}",
            "label": label, "score": None, "refinement": refinement}


class FakeModel:
    """A `Generator` that answers each request with a marked copy of it, records every request, can be
    interrupted on a given call and can refuse requests that mention a marker (as an endpoint would)."""

    name = "fake"

    def __init__(self, fail_on_call: int | None = None, refuse: str | None = None) -> None:
        self.requests: list = []
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.refuse = refuse

    def generate(self, prompts, params, *, seeds=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the run is interrupted mid-way
        self.requests.extend(prompts)
        return [GenerationResult(text="", error="too long") if self.refuse and self.refuse in r else
                GenerationResult(text=f"refined <{r}>" if "answer 5" not in r else "   ") for r in prompts]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompt_templates_are_checked_and_loaded_from_files_or_strings(tmp_path):
    assert check_prompt_template(DEFAULT_REFINEMENT_PROMPT) == DEFAULT_REFINEMENT_PROMPT
    assert check_prompt_template("{response} {judgment} {{literal}}")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['answer'\]"):
        check_prompt_template("{answer} {response} {judgment}")
    with pytest.raises(ValueError, match=r"must contain \{judgment\}"):
        check_prompt_template("{instruction} {response}")
    with pytest.raises(ValueError, match="not a valid format string"):
        check_prompt_template("{response} {judgment} {")
    path = tmp_path / "prompt.txt"
    path.write_text(TEMPLATE)
    assert load_prompt_template(str(path)) == TEMPLATE
    assert load_prompt_template(TEMPLATE) == TEMPLATE
    assert load_prompt_template(None) == DEFAULT_REFINEMENT_PROMPT


def test_requests_fill_the_template_and_keep_earlier_chat_turns():
    assert refinement_request(example("1"), TEMPLATE) == "Fix: answer 1 | bad 1 | for Name a color."
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Name a color."}]
    request = refinement_request(example("2", prompt=chat), TEMPLATE)
    assert request[:3] == chat[:3]
    assert request[3] == {"role": "user", "content": "Fix: answer 2 | bad 2 | for Name a color."}


def test_negatives_are_refined_and_the_rest_copied_as_canonical_jsonl(tmp_path):
    data = [example("1"), example("2", label=True), example("3", refinement="kept"), example("5")]
    out = tmp_path / "refined.jsonl"
    model = FakeModel()
    result = refine_examples(data, out, model, prompt_template=TEMPLATE, batch_size=2)
    assert model.requests == ["Fix: answer 1 | bad 1 | for Name a color.", "Fix: answer 5 | bad 5 | for Name a color."]
    written = rows(out)
    assert [r["refinement"] for r in written] == ["refined <Fix: answer 1 | bad 1 | for Name a color.>", None,
                                                  "kept", None]
    assert (result.refined, result.copied, result.empty, result.resumed) == (2, 2, 1, 0)
    loaded, dropped = load_judged_dataset(out)  # the output is valid canonical data
    assert len(loaded) == 4 and not dropped and loaded["label"] == [False, True, False, False]


def test_an_interrupted_run_resumes_without_repeating_generation(tmp_path):
    data = [example(str(i)) for i in range(6)]
    clean = tmp_path / "clean.jsonl"
    refine_examples(data, clean, FakeModel(), prompt_template=TEMPLATE, batch_size=2)

    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        refine_examples(data, out, FakeModel(fail_on_call=2), prompt_template=TEMPLATE, batch_size=2)
    assert [r["id"] for r in rows(out)] == ["0", "1"]
    with out.open("a") as f:
        f.write('{"id": "2", "prompt": "Name a co')  # a line cut off by the crash
    resumed = FakeModel()
    progress: list[int] = []
    result = refine_examples(data, out, resumed, prompt_template=TEMPLATE, batch_size=2, on_batch=progress.append)
    assert [r.split(" |")[0] for r in resumed.requests] == ["Fix: answer 2", "Fix: answer 3", "Fix: answer 4",
                                                          "Fix: answer 5"]
    assert (result.resumed, result.refined) == (2, 4) and progress == [2, 2, 2]
    assert out.read_text() == clean.read_text()
    again = FakeModel()
    assert refine_examples(data, out, again, prompt_template=TEMPLATE).written == 0 and again.calls == 0


def test_an_output_of_other_data_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    refine_examples([example("1")], out, FakeModel(), prompt_template=TEMPLATE)
    with pytest.raises(ForeignOutputError, match=r"out.jsonl:1: .*not in the input"):
        refine_examples([example("2")], out, FakeModel(), prompt_template=TEMPLATE)


def test_refused_requests_are_counted_not_written_and_retried_by_the_next_run(tmp_path):
    assert isinstance(FakeModel(), Generator)
    data = [example("1"), example("2"), example("3")]
    out = tmp_path / "out.jsonl"
    result = refine_examples(data, out, FakeModel(refuse="answer 2"), prompt_template=TEMPLATE,
                             render=lambda r: f"<{r}>")
    assert (result.refined, result.failed, dict(result.errors)) == (2, 1, {"too long": 1})
    assert [r["id"] for r in rows(out)] == ["1", "3"]
    assert rows(out)[0]["refinement"] == "refined <<Fix: answer 1 | bad 1 | for Name a color.>>"
    retry = FakeModel()
    assert refine_examples(data, out, retry, prompt_template=TEMPLATE).refined == 1
    assert [r["id"] for r in rows(out)] == ["1", "3", "2"] and len(retry.requests) == 1
