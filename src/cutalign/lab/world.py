"""The lab's synthetic fact world: judged examples that look like online CUT data, and scoring.

The lab and the demo run offline in minutes on a CPU, so they cannot use real instructions or a
real judge. Instead a seeded world of invented countries and people answers questions such as "What is
the capital of Zorvia?" exactly, and :meth:`FactWorld.judge` writes the kind of judgment GPT-4
writes in the paper's online data: ``None`` for a satisfactory response, otherwise a sentence that
names the wrong value and the right one ("the capital of Zorvia is Velmar, not Tarkin"). That is
what CUT's detection step needs: the wrong value is the token the judgment makes likely.

:func:`evaluate_accuracy` measures what a model learned: greedy answers to one question per fact,
counted correct when the gold value comes before any other value of the same attribute.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_NEGATIVE_FRACTION = 0.3

PROFESSIONS = ("baker", "pilot", "sculptor", "astronomer", "weaver", "surgeon", "architect", "poet")
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "th", "st")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("n", "r", "l", "s", "th", "m", "k")
COUNTRY_SUFFIXES = ("ria", "nia", "dor", "mar", "vek", "lia")
LANGUAGE_SUFFIXES = ("nish", "ric", "lese")
MAX_DRAWS = 1000  # attempts at drawing an example unlike the earlier ones (loaders drop exact duplicates)
REFUSALS = (
    "I am not sure about that.",
    "I do not know the answer to this question.",
    "Sorry, I cannot answer that.",
)


@dataclass(frozen=True)
class Attribute:
    """One kind of fact. ``claim`` states it ({s} subject, {v} value); ``form`` dresses the value."""

    name: str
    subject_type: str
    claim: str
    form: str = "{v}"

    def render(self, value: str) -> str:
        """The value as it reads in a sentence: "the Dral", "an astronomer", "Velmar"."""
        article = "an" if value[:1].lower() in "aeiou" else "a"
        return self.form.format(v=value, a=article)


ATTRIBUTES = {
    a.name: a
    for a in (
        Attribute("capital", "country", "the capital of {s} is {v}"),
        Attribute("language", "country", "people in {s} speak {v}"),
        Attribute("currency", "country", "the currency of {s} is {v}", "the {v}"),
        Attribute("profession", "person", "{s} works as {v}", "{a} {v}"),
        Attribute("country", "person", "{s} is from {v}"),
        Attribute("birth_year", "person", "{s} was born in {v}"),
    )
}


@dataclass(frozen=True)
class QuestionKind:
    """Questions about ``attributes`` of one subject; responses use one placeholder per attribute."""

    attributes: tuple[str, ...]
    questions: tuple[str, ...]
    responses: tuple[str, ...]

    @property
    def subject_type(self) -> str:
        return ATTRIBUTES[self.attributes[0]].subject_type


SINGLE_FACT_KINDS = (
    QuestionKind(
        ("capital",),
        ("What is the capital of {s}?", "Which city is the capital of {s}?", "Name the capital of {s}."),
        ("The capital of {s} is {capital}.", "{capital} is the capital of {s}."),
    ),
    QuestionKind(
        ("language",),
        (
            "What language do people speak in {s}?",
            "Which language is spoken in {s}?",
            "Name the language of {s}.",
        ),
        ("People in {s} speak {language}.", "The language of {s} is {language}."),
    ),
    QuestionKind(
        ("currency",),
        ("What is the currency of {s}?", "Which currency is used in {s}?", "Name the currency of {s}."),
        ("The currency of {s} is {currency}.", "{s} uses {currency}."),
    ),
    QuestionKind(
        ("profession",),
        ("What is the profession of {s}?", "What does {s} do for a living?", "What job does {s} have?"),
        ("{s} works as {profession}.", "{s} is {profession}."),
    ),
    QuestionKind(
        ("country",),
        ("Which country is {s} from?", "Where does {s} come from?", "What is the home country of {s}?"),
        ("{s} is from {country}.", "{s} comes from {country}."),
    ),
    QuestionKind(
        ("birth_year",),
        ("In which year was {s} born?", "When was {s} born?", "What is the birth year of {s}?"),
        ("{s} was born in {birth_year}.", "The birth year of {s} is {birth_year}."),
    ),
)
MULTI_FACT_KINDS = (
    QuestionKind(
        ("capital", "language", "currency"),
        ("Tell me about {s}: its capital, language and currency.", "Describe the country {s}."),
        (
            "The capital of {s} is {capital}, its people speak {language}, and it uses {currency}.",
            "{s} is a country whose capital is {capital}; its language is {language} and its currency is {currency}.",
        ),
    ),
    QuestionKind(
        ("capital", "currency"),
        ("What are the capital and the currency of {s}?",),
        ("The capital of {s} is {capital} and its currency is {currency}.",),
    ),
    QuestionKind(
        ("profession", "country", "birth_year"),
        ("Who is {s}?", "Tell me about {s}."),
        (
            "{s} is {profession} from {country}, born in {birth_year}.",
            "Born in {birth_year} in {country}, {s} works as {profession}.",
        ),
    ),
)
QUESTION_KINDS = SINGLE_FACT_KINDS + MULTI_FACT_KINDS

WRONG_OPENERS = (
    "The response is incorrect: {}.",
    "The response contains a factual error: {}.",
    "Incorrect. {}.",
    "The answer is wrong; {}.",
)
PARTIAL_OPENERS = ("The response is almost correct, but {}.", "Most of the response is right, but {}.")
MISSING_OPENERS = (
    "The response does not answer the question: {}.",
    "The response fails to give the answer; {}.",
)
WRONG_DETAILS = ("{claim}, not {wrong}", "it says {wrong}, but {claim}", "{wrong} is wrong because {claim}")


class Fact(NamedTuple):
    subject: str
    attribute: str
    value: str


class EvalQuestion(NamedTuple):
    """A question, its gold value, and the values that count as a wrong answer when they come first."""

    question: str
    gold: str
    wrong_values: tuple[str, ...] = ()


@dataclass
class FactWorld:
    """Invented countries (capital, language, currency) and people (profession, country, birth year)."""

    seed: int
    subjects: dict[str, str]  # name -> "country" | "person"
    values: dict[tuple[str, str], str]  # (subject, attribute) -> value
    pools: dict[str, tuple[str, ...]]  # attribute -> every value it can take
    _patterns: list[tuple[re.Pattern[str], QuestionKind]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for kind in QUESTION_KINDS:
            for question in kind.questions:
                head, tail = question.split("{s}")
                pattern = re.compile(f"^{re.escape(head)}(?P<s>.+?){re.escape(tail)}$")
                self._patterns.append((pattern, kind))

    @property
    def facts(self) -> list[Fact]:
        return [Fact(s, a, v) for (s, a), v in self.values.items()]

    def subjects_of(self, subject_type: str) -> list[str]:
        return [name for name, kind in self.subjects.items() if kind == subject_type]

    def parse(self, question: str) -> tuple[QuestionKind, str]:
        """The question kind and subject of one of this world's questions."""
        for pattern, kind in self._patterns:
            match = pattern.match(question.strip())
            if match and self.subjects.get(match["s"]) == kind.subject_type:
                return kind, match["s"]
        raise ValueError(f"not a question about this world: {question!r}")

    def facts_asked(self, question: str) -> list[Fact]:
        kind, subject = self.parse(question)
        return [Fact(subject, a, self.values[subject, a]) for a in kind.attributes]

    def answer(self, question: str) -> str:
        """The correct response, in the first response wording of the question's kind."""
        kind, subject = self.parse(question)
        return render_response(
            kind.responses[0], subject, {a: self.values[subject, a] for a in kind.attributes}
        )

    def judge(self, question: str, response: str, rng: random.Random | None = None) -> str | None:
        """None if the response states every asked fact and no wrong value; else a judgment naming the mistakes.

        ``rng`` picks among the phrasings; without one the choice is a fixed function of the texts.
        """
        rng = rng or random.Random(f"{question}\n{response}")
        wrong, missing, right = [], [], 0
        for fact in self.facts_asked(question):
            attribute = ATTRIBUTES[fact.attribute]
            claim = attribute.claim.format(s=fact.subject, v=attribute.render(fact.value))
            said = first_mention(response, [v for v in self.pools[fact.attribute] if v != fact.value])
            if said is not None:
                detail = rng.choice(WRONG_DETAILS)
                wrong.append(detail.format(claim=claim, wrong=attribute.render(said)))
            elif first_mention(response, [fact.value]) is None:
                missing.append(claim)
            else:
                right += 1
        if not wrong and not missing:
            return None
        openers = MISSING_OPENERS if not wrong else PARTIAL_OPENERS if right else WRONG_OPENERS
        opener = rng.choice(openers)
        details = "; ".join(wrong + missing)
        if opener.startswith("Incorrect. "):
            details = details[0].upper() + details[1:]
        return opener.format(details)


def render_response(template: str, subject: str, values: dict[str, str]) -> str:
    return template.format(s=subject, **{a: ATTRIBUTES[a].render(v) for a, v in values.items()})


def make_world(n_entities: int = 12, seed: int = 0) -> FactWorld:
    """A world of ``n_entities`` countries and as many people; the same seed gives the same world."""
    if n_entities < 2:
        raise ValueError(
            f"n_entities must be at least 2 (a wrong value needs an alternative), got {n_entities}"
        )
    rng = random.Random(seed)
    names = _NameMaker(rng)
    countries = [names.word(2, COUNTRY_SUFFIXES) for _ in range(n_entities)]
    pools = {
        "capital": tuple(names.word(2, CODAS) for _ in range(n_entities)),
        "language": tuple(names.word(2, LANGUAGE_SUFFIXES) for _ in range(max(2, n_entities // 2))),
        "currency": tuple(names.word(2, CODAS) for _ in range(max(2, n_entities // 2))),
        "profession": PROFESSIONS,
        "country": tuple(countries),
        "birth_year": tuple(str(y) for y in rng.sample(range(1600, 2000), n_entities)),
    }
    people = [f"{names.word(2, ('',))} {names.word(2, CODAS)}" for _ in range(n_entities)]
    values: dict[tuple[str, str], str] = {}
    for attribute, subjects in [
        ("capital", countries),
        ("language", countries),
        ("currency", countries),
        ("profession", people),
        ("country", people),
        ("birth_year", people),
    ]:
        for subject, value in zip(subjects, _spread(pools[attribute], len(subjects), rng), strict=True):
            values[subject, attribute] = value
    subjects = {c: "country" for c in countries} | {p: "person" for p in people}
    return FactWorld(seed=seed, subjects=subjects, values=values, pools=pools)


def _spread(pool: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """``n`` values drawn as evenly as possible from ``pool``, so no value is a good blind guess."""
    values = [pool[i % len(pool)] for i in range(n)]
    rng.shuffle(values)
    return values


class _NameMaker:
    """Invented capitalised words, all distinct, none of them an English word of the templates."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        texts = [t for kind in QUESTION_KINDS for t in kind.questions + kind.responses]
        texts += [*WRONG_OPENERS, *PARTIAL_OPENERS, *MISSING_OPENERS, *WRONG_DETAILS, *REFUSALS]
        self.used = {w.lower() for t in texts for w in re.findall(r"\w+", t)}

    def word(self, syllables: int, endings: Sequence[str]) -> str:
        while True:
            stem = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(syllables))
            word = (stem + self.rng.choice(endings)).capitalize()
            if word.lower() not in self.used:
                self.used.add(word.lower())
                return word


def judged_examples(
    world: FactWorld,
    n: int,
    negative_fraction: float = DEFAULT_NEGATIVE_FRACTION,
    seed: int = 0,
    multi_fact_fraction: float = 0.2,
    refusal_fraction: float = 0.1,
) -> list[dict[str, Any]]:
    """``n`` distinct canonical judged examples, exactly ``round(n * negative_fraction)`` of them negative.

    A negative replaces one or more values with wrong ones (or, with ``refusal_fraction``, declines
    to answer); its judgment comes from :meth:`FactWorld.judge`, its refinement is the same wording
    with the right values, and its score is 1-3 (4-6 when some asked facts are right). Positives
    score 8-10. ``multi_fact_fraction`` of the questions ask two or three facts at once.
    """
    for name, fraction in [
        ("negative_fraction", negative_fraction),
        ("multi_fact_fraction", multi_fact_fraction),
        ("refusal_fraction", refusal_fraction),
    ]:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {fraction}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    n_negative = round(n * negative_fraction)
    positive = [False] * n_negative + [True] * (n - n_negative)
    rng.shuffle(positive)
    examples, seen = [], set()
    for i, is_positive in enumerate(positive):
        for _ in range(MAX_DRAWS):
            example = _judged_example(
                world, rng, f"s{seed}-{i:04d}", is_positive, multi_fact_fraction, refusal_fraction
            )
            key = (example["prompt"], example["completion"], example["judgment"])
            if key not in seen:
                break
        else:
            raise ValueError(
                f"a world of {len(world.subjects)} subjects has too few distinct "
                f"{'positive' if is_positive else 'negative'} examples for n={n}; use more entities"
            )
        seen.add(key)
        examples.append(example)
    return examples


def _judged_example(
    world: FactWorld,
    rng: random.Random,
    example_id: str,
    positive: bool,
    multi_fraction: float,
    refusal_fraction: float,
) -> dict[str, Any]:
    kind = rng.choice(MULTI_FACT_KINDS if rng.random() < multi_fraction else SINGLE_FACT_KINDS)
    subject = rng.choice(world.subjects_of(kind.subject_type))
    question = rng.choice(kind.questions).format(s=subject)
    wording = rng.choice(kind.responses)
    gold = {a: world.values[subject, a] for a in kind.attributes}
    correct = render_response(wording, subject, gold)
    example = {
        "id": example_id,
        "prompt": question,
        "completion": correct,
        "judgment": None,
        "label": positive,
        "score": float(rng.randint(8, 10)),
        "refinement": None,
    }
    if positive:
        return example
    if rng.random() < refusal_fraction:
        completion, partial = rng.choice(REFUSALS), False
    else:
        corrupted = rng.sample(kind.attributes, rng.randint(1, len(kind.attributes)))
        said = {
            a: rng.choice([v for v in world.pools[a] if v != gold[a]]) if a in corrupted else gold[a]
            for a in gold
        }
        completion, partial = render_response(wording, subject, said), len(corrupted) < len(gold)
    judgment = world.judge(question, completion, rng)
    if judgment is None:
        raise RuntimeError(f"internal error: the judge accepted a corrupted response {completion!r}")
    score = rng.randint(4, 6) if partial else rng.randint(1, 3)
    return example | {
        "completion": completion,
        "judgment": judgment,
        "score": float(score),
        "refinement": correct,
    }


def evaluation_set(world: FactWorld) -> list[EvalQuestion]:
    """One question per fact of the world, in the first wording of its single-fact kind.

    The facts are the training facts (a model can only know them from training); what the model
    must do is produce them, from a question it may not have seen in that wording.
    """
    kinds = {kind.attributes[0]: kind for kind in SINGLE_FACT_KINDS}
    return [
        EvalQuestion(kinds[a].questions[0].format(s=s), v, tuple(w for w in world.pools[a] if w != v))
        for s, a, v in world.facts
    ]


def majority_guess_accuracy(questions: Sequence[EvalQuestion]) -> float:
    """Accuracy of always answering each attribute's most common gold value: the bar for "learned facts"."""
    by_pool: dict[frozenset[str], Counter[str]] = {}
    for q in questions:
        by_pool.setdefault(frozenset((q.gold, *q.wrong_values)), Counter())[q.gold] += 1
    return sum(max(c.values()) for c in by_pool.values()) / max(1, len(questions))


def first_mention(text: str, values: Iterable[str]) -> str | None:
    """The value mentioned earliest in ``text`` as a whole word (so "Vel" does not match "Velmar")."""
    hit = mention_span(text, values)
    return None if hit is None else hit[0]


def mention_span(text: str, values: Iterable[str]) -> tuple[str, tuple[int, int]] | None:
    """The earliest whole-word mention in ``text`` of one of ``values``, with its character span."""
    best: tuple[str, tuple[int, int]] | None = None
    for value in values:
        match = re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text)
        if match and (best is None or match.start() < best[1][0]):
            best = (value, match.span())
    return best


def is_correct(response: str, gold: str, wrong_values: Sequence[str] = ()) -> bool:
    """True when ``gold`` is mentioned before any of ``wrong_values`` (in the response's first paragraph).

    >>> is_correct("The capital of Zorvia is Velmar.", "Velmar", ["Tarkin"])
    True
    >>> is_correct("Tarkin, or maybe Velmar.", "Velmar", ["Tarkin"])
    False
    """
    answer = response.strip().split("\n\n")[0]
    return first_mention(answer, [gold, *wrong_values]) == gold


def score_responses(responses: Sequence[str], questions: Sequence[EvalQuestion | tuple[str, str]]) -> list[bool]:
    """Whether each response names its question's gold value before any wrong value."""
    items = [EvalQuestion(*item) for item in questions]
    return [is_correct(r, q.gold, q.wrong_values) for r, q in zip(responses, items, strict=True)]


def answer_questions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[EvalQuestion | tuple[str, str]],
    render_prompt: Callable[[str], str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    do_sample: bool = False,
    seed: int = 0,
) -> list[str]:
    """The model's responses (greedy, or sampled at T=1 from ``seed``: the same call gives the same samples)."""
    import torch

    from cutalign.generation import generate_from_texts

    prompts = [render_prompt(EvalQuestion(*q).question) for q in questions]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return generate_from_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, do_sample=do_sample, progress=False, seed=seed)


def evaluate_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts_with_gold: Sequence[EvalQuestion | tuple[str, str]],
    render_prompt: Callable[[str], str],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> float:
    """Fraction of questions whose greedy response names the gold value before any wrong value.

    ``prompts_with_gold`` holds :class:`EvalQuestion` items (see :func:`evaluation_set`) or plain
    ``(question, gold)`` pairs; ``render_prompt`` turns a question into the model's prompt text,
    e.g. ``ALPACA_PLAIN.format(instruction=q)``.
    """
    if not prompts_with_gold:
        raise ValueError("evaluate_accuracy needs at least one question")
    responses = answer_questions(model, tokenizer, prompts_with_gold, render_prompt,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
    return sum(score_responses(responses, prompts_with_gold)) / len(prompts_with_gold)
