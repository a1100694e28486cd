"""The synthetic fact world: determinism, judgments that name mistakes, the sample, and scoring."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from cutalign.data.io import load_judged_dataset
from cutalign.data.schema import FIELDS
from cutalign.data.templates import ALPACA_PLAIN
from cutalign.demo.sample import (
    SAMPLE_NEGATIVE_FRACTION,
    SAMPLE_PATH,
    SAMPLE_SIZE,
    load_sample,
    sample_world,
    write_sample,
)
from cutalign.lab.world import (
    QUESTION_KINDS,
    EvalQuestion,
    evaluate_accuracy,
    evaluation_set,
    first_mention,
    is_correct,
    judged_examples,
    majority_guess_accuracy,
    make_world,
    render_response,
    score_responses,
)


def alpaca(question: str) -> str:
    return ALPACA_PLAIN.format(instruction=question)


@pytest.fixture(scope="module")
def world():
    return make_world(8, seed=3)


def test_world_is_a_function_of_its_seed(world) -> None:
    assert make_world(8, seed=3) == world
    assert make_world(8, seed=4).values != world.values
    with pytest.raises(ValueError, match="at least 2"):
        make_world(1)


def test_names_and_values_are_distinct_words(world) -> None:
    # first_mention must never confuse two values, nor a subject with a value
    words = [w for name in world.subjects for w in name.split()]
    words += [v for a, pool in world.pools.items() if a != "country" for v in pool]
    assert len(words) == len(set(words))
    assert all(re.fullmatch(r"[A-Z][a-z]+|\d{4}|[a-z]+", w) for w in words)
    assert len(world.facts) == 6 * 8


def test_every_question_wording_parses_and_its_answer_is_accepted(world) -> None:
    for kind in QUESTION_KINDS:
        subject = world.subjects_of(kind.subject_type)[0]
        for wording in kind.questions:
            question = wording.format(s=subject)
            facts = world.facts_asked(question)
            assert [f.attribute for f in facts] == list(kind.attributes)
            answer = world.answer(question)
            assert all(first_mention(answer, [f.value]) == f.value for f in facts)
            assert world.judge(question, answer) is None
    with pytest.raises(ValueError, match="not a question about this world"):
        world.parse("What is the capital of Atlantis?")


def test_judgment_names_the_wrong_and_the_right_value(world) -> None:
    country = world.subjects_of("country")[0]
    gold = world.values[country, "capital"]
    wrong = next(v for v in world.pools["capital"] if v != gold)
    question = f"What is the capital of {country}?"
    judgment = world.judge(question, f"The capital of {country} is {wrong}.")
    assert judgment is not None
    assert first_mention(judgment, [gold]) == gold and first_mention(judgment, [wrong]) == wrong
    refusal = world.judge(question, "Sorry, I cannot answer that.")
    assert refusal is not None and gold in refusal
    assert refusal.startswith(("The response does not answer", "The response fails"))


def test_partial_multi_fact_judgment_mentions_only_the_mistake(world) -> None:
    person = world.subjects_of("person")[0]
    question = f"Who is {person}?"
    values = {a: world.values[person, a] for a in ("profession", "country", "birth_year")}
    wrong_year = next(y for y in world.pools["birth_year"] if y != values["birth_year"])
    response = render_response(
        "{s} is {profession} from {country}, born in {birth_year}.",
        person,
        values | {"birth_year": wrong_year},
    )
    judgment = world.judge(question, response)
    assert judgment is not None and judgment.startswith(("The response is almost correct", "Most of"))
    assert wrong_year in judgment and values["birth_year"] in judgment
    assert values["profession"] not in judgment  # the right facts are not called mistakes


def test_judged_examples_shape_polarity_and_fields(world) -> None:
    examples = judged_examples(world, 200, negative_fraction=0.3, seed=1)
    assert examples == judged_examples(world, 200, negative_fraction=0.3, seed=1)
    assert [tuple(e) for e in examples] == [FIELDS] * 200
    negatives = [e for e in examples if not e["label"]]
    assert len(negatives) == 60
    assert len({(e["prompt"], e["completion"], e["judgment"]) for e in examples}) == 200
    for e in examples:
        if e["label"]:
            assert e["judgment"] is None and e["refinement"] is None and 8 <= e["score"] <= 10
            assert world.judge(e["prompt"], e["completion"]) is None
        else:
            assert e["judgment"] and 1 <= e["score"] <= 6
            assert world.judge(e["prompt"], e["refinement"]) is None
            said = [
                v
                for f in world.facts_asked(e["prompt"])
                for v in world.pools[f.attribute]
                if v != f.value and first_mention(e["completion"], [v])
            ]
            assert all(v in e["judgment"] for v in said)  # every wrong value is named
    n_facts = Counter(len(world.facts_asked(e["prompt"])) for e in examples)
    assert n_facts[1] > 100 and n_facts[2] + n_facts[3] > 10  # response lengths vary


def test_judged_examples_rejects_bad_arguments(world) -> None:
    with pytest.raises(ValueError, match="negative_fraction"):
        judged_examples(world, 10, negative_fraction=1.5)
    with pytest.raises(ValueError, match="too few distinct positive"):
        judged_examples(make_world(2), 500, negative_fraction=0.0)
    assert all(not e["label"] for e in judged_examples(world, 20, negative_fraction=1.0))


def test_committed_sample_is_what_write_sample_produces(tmp_path) -> None:
    regenerated = write_sample(tmp_path / "sample.jsonl")
    assert regenerated.read_bytes() == SAMPLE_PATH.read_bytes(), "run cutalign.demo.sample.write_sample()"
    assert SAMPLE_PATH.stat().st_size < 200_000


def test_sample_loads_through_the_project_loader_without_drops() -> None:
    dataset, report = load_judged_dataset(SAMPLE_PATH)
    assert not report, report.lines()
    assert len(dataset) == SAMPLE_SIZE == len(load_sample())
    assert sum(not label for label in dataset["label"]) == round(SAMPLE_SIZE * SAMPLE_NEGATIVE_FRACTION)


def test_evaluation_set_covers_every_fact_once() -> None:
    world = sample_world()
    questions = evaluation_set(world)
    assert len(questions) == len(world.facts)
    for q, fact in zip(questions, world.facts, strict=True):
        assert world.facts_asked(q.question) == [fact] and q.gold == fact.value
        assert set(q.wrong_values) == set(world.pools[fact.attribute]) - {fact.value}
    assert 0.05 < majority_guess_accuracy(questions) < 0.2


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Velmar is the capital.", True),
        ("The capital is Tarkin, not Velmar.", False),
        ("The capital is Velmaria.", False),  # whole words only
        ("Velmar.\n\nTarkin is the capital.", True),
        ("Tarkin.\n\nVelmar is the capital.", False),  # only the first paragraph counts
        ("I do not know.", False),
    ],
)
def test_is_correct(response: str, expected: bool) -> None:
    assert is_correct(response, "Velmar", ["Tarkin"]) is expected


def test_score_responses_counts_the_gold_value_only(world) -> None:
    questions = evaluation_set(world)[:10]
    responses = [f"It is {q.wrong_values[0] if i < 3 else q.gold}." for i, q in enumerate(questions)]
    assert sum(score_responses(responses, questions)) == 7
    pairs = [(q.question, q.gold) for q in questions]  # plain pairs: no wrong values to beat
    assert score_responses(["I do not know.", questions[1].gold], pairs[:2]) == [False, True]
    with pytest.raises(ValueError, match="at least one"):
        evaluate_accuracy(None, None, [], str)


def test_evaluate_accuracy_on_a_real_tiny_model_restores_state() -> None:
    from cutalign.lab.models import demo_model_and_tokenizer

    model, tokenizer = demo_model_and_tokenizer()
    questions = [EvalQuestion(q.question, q.gold, q.wrong_values) for q in evaluation_set(sample_world())[:8]]
    accuracy = evaluate_accuracy(model, tokenizer, questions, lambda q: ALPACA_PLAIN.format(instruction=q), 8)
    assert accuracy == 0.0  # an untrained model knows no invented fact
    assert model.training and tokenizer.padding_side == "right"
