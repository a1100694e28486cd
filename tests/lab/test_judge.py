"""The lab's programmatic judge: verdicts, styles, gold spans, noise rates; arithmetic chains."""

from __future__ import annotations

import random

import pytest

from cutalign.demo.sample import load_sample
from cutalign.judges.base import Judge
from cutalign.lab.judge import STYLES, JudgeSettings, LabJudge, judge_response, load_judge_templates
from cutalign.lab.tasks import make_chains, misconceived_products, parse_chain


@pytest.fixture(scope="module")
def wrong_value_example():
    # "The language of Sesairia is Nastailese." where the truth is Tasunish
    return next(e for e in load_sample() if not e["label"] and "Nastailese" in e["completion"]
                and "Sesairia" in e["prompt"])


def test_sample_judgments_are_the_judges_verdicts():
    for example in load_sample()[:80]:
        judgment = judge_response(example["prompt"], example["completion"])
        assert judgment.ok and judgment.satisfactory is example["label"]
        assert (judgment.text is None) is example["label"]


def test_gold_spans_are_the_wrong_value(wrong_value_example):
    e = wrong_value_example
    judgment = judge_response(e["prompt"], e["completion"])
    assert [e["completion"][a:b] for a, b in judgment.error_spans] == ["Nastailese"]
    assert judgment.score == 0.0 and "Nastailese" in judgment.text and "Tasunish" in judgment.text
    right = judge_response(e["prompt"], e["refinement"])
    assert right.satisfactory and right.error_spans == [] and right.score == 10.0


@pytest.mark.parametrize("style", STYLES)
def test_styles_say_what_they_promise(wrong_value_example, style):
    e = wrong_value_example
    text = judge_response(e["prompt"], e["completion"], settings=JudgeSettings(style=style)).text
    quotes_wrong, gives_right, names_field = "Nastailese" in text, "Tasunish" in text, "Sesairia" in text
    assert (quotes_wrong, gives_right, names_field) == {
        "full": (True, True, True), "explicit": (True, False, True), "located": (False, False, True),
        "corrective": (False, True, True), "vague": (False, False, False)}[style], text


def test_noise_rates_are_rates_and_gold_spans_stay_true(wrong_value_example):
    e = wrong_value_example
    judge = LabJudge(settings=JudgeSettings(style="explicit", false_accept=0.3, false_reject=0.2), seed=1)
    assert isinstance(judge, Judge)
    wrong = judge.judge([e["prompt"]] * 400, [e["completion"]] * 400)
    right = judge.judge([e["prompt"]] * 400, [e["refinement"]] * 400)
    accepted = sum(j.satisfactory for j in wrong) / 400
    rejected = sum(not j.satisfactory for j in right) / 400
    assert 0.22 < accepted < 0.38 and 0.13 < rejected < 0.27
    assert all(len(j.error_spans) == 1 for j in wrong) and all(j.error_spans == [] for j in right)
    moved = judge_response(e["prompt"], e["completion"], settings=JudgeSettings("located", wrong_location=1.0))
    assert "language" not in moved.text and not moved.satisfactory


def test_templates_from_a_file(tmp_path, wrong_value_example):
    path = tmp_path / "styles.yaml"
    path.write_text("terse:\n  opener: ['No: {}.']\n  wrong: ['not {wrong}']\n  missing: ['give {field}']\n")
    templates = load_judge_templates(path)
    e = wrong_value_example
    text = judge_response(e["prompt"], e["completion"], settings=JudgeSettings("terse", templates=templates)).text
    assert text == "No: not Nastailese."
    path.write_text("terse:\n  opener: ['no placeholder']\n  wrong: ['x']\n  missing: ['y']\n")
    with pytest.raises(ValueError, match=r"styles\.yaml: style 'terse': field 'opener'"):
        load_judge_templates(path)


def test_not_a_lab_question_is_unparseable_not_a_guess():
    judgment = judge_response([{"role": "user", "content": "Write a poem."}], "Roses.")
    assert judgment.error == "unparseable" and not judgment.ok


def test_chains_round_trip_and_errors_sit_on_the_wrong_number():
    chains = make_chains(30, n_steps=4, seed=3)
    assert len(set(chains)) == 30 and chains == make_chains(30, n_steps=4, seed=3)
    for chain in chains:
        assert parse_chain(chain.prompt) == chain
        assert judge_response(chain.prompt, chain.answer()).satisfactory
        results = chain.results()
        slip = random.Random(0).randrange(len(results))
        wrong = [r + (1 if i >= slip else 0) for i, r in enumerate(results)]  # one slip, carried on
        completion = chain.answer(wrong)
        judgment = judge_response(chain.prompt, completion, settings=JudgeSettings("explicit"))
        flagged = [completion[a:b] for a, b in judgment.error_spans]
        assert flagged == [str(wrong[slip]), str(wrong[-1])] if slip < len(results) - 1 else [str(wrong[-1])] * 2
    wrong_table = misconceived_products(chains, 0.5, seed=0)
    assert wrong_table and all(v != a * b for (a, _, b), v in wrong_table.items())
