"""The lab's programmatic judge: exact verdicts, judgment text in a chosen style, gold error spans.

Unlike an LLM judge it knows which characters of a response are wrong, so the lab can score CUT's
detection token by token. The same verdict can be written in several styles, because what a
judgment says decides what CUT can learn from it:

- ``full`` (the demo's data): names the wrong value and the right one;
- ``explicit``: quotes the wrong value only;
- ``located``: names the field that is wrong ("the capital of Zorvia"), not the value;
- ``corrective``: gives the right value only;
- ``vague``: "The response is wrong.";
- any style read from a templates file (:func:`load_judge_templates`).

:class:`JudgeSettings` adds judge noise: false accepts, false rejects and wrong locations. The gold
``error_spans`` of a :class:`~cutalign.judges.base.Judgment` are always the truth, whatever the
noisy judge wrote, so a run can tell judge errors from model errors.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cutalign.judges.base import Judgment, Prompt
from cutalign.lab.tasks import chain_findings, parse_chain
from cutalign.lab.world import ATTRIBUTES, FactWorld, make_world, mention_span

BUILTIN_STYLES: dict[str, dict[str, tuple[str, ...]]] = {
    "explicit": {
        "opener": ("The response is incorrect: {}.", "The response contains an error: {}."),
        "wrong": ("it says {wrong}, which is wrong for {field}", "{wrong} is not right for {field}"),
        "missing": ("it does not give {field}",),
    },
    "located": {
        "opener": ("The response is incorrect: {}.", "The response contains an error: {}."),
        "wrong": ("{field} is wrong", "it gets {field} wrong"),
        "missing": ("it does not give {field}",),
    },
    "corrective": {
        "opener": ("The response is incorrect: {}.", "Not quite: {}."),
        "wrong": ("{claim}", "in fact {claim}"),
        "missing": ("{claim}",),
    },
    "vague": {"opener": ("{}.",), "wrong": ("The response is wrong",), "missing": ("The response is wrong",)},
}
STYLES = ("full", *BUILTIN_STYLES)
SCORE_SCALE = 10.0


class Finding(NamedTuple):
    """One checked field of a response: where it is and whether it is right."""

    field: str  # how a judgment names it: "the capital of Zorvia", "step 2"
    claim: str  # the true statement: "the capital of Zorvia is Velmar"
    right: str
    said: str | None  # the value the response gave, None when it gave none
    span: tuple[int, int] | None  # character span of `said` in the response

    @property
    def ok(self) -> bool:
        return self.said == self.right


@dataclass(frozen=True)
class JudgeSettings:
    """Style and noise of the programmatic judge. Rates are probabilities per judged response."""

    style: str = "full"
    false_accept: float = 0.0  # a wrong response judged satisfactory
    false_reject: float = 0.0  # a right response judged wrong (a right field named as the error)
    wrong_location: float = 0.0  # a wrong response whose judgment names another field
    templates: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("false_accept", "false_reject", "wrong_location"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.style not in STYLES and self.style not in self.templates:
            known = ", ".join([*STYLES, *self.templates])
            raise ValueError(f"unknown judgment style {self.style!r}; known styles: {known}")


def load_judge_templates(path: str | Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """Judgment styles from a YAML/JSON file: ``{style: {opener: [...], wrong: [...], missing: [...]}}``.

    ``opener`` holds "{}" (the joined details); ``wrong`` / ``missing`` may use {field}, {wrong},
    {right} and {claim}. Errors name the file and the style.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read judge templates: {error}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: judge templates must be a mapping of style name -> templates")
    styles: dict[str, dict[str, tuple[str, ...]]] = {}
    for style, parts in data.items():
        if not isinstance(parts, dict) or set(parts) != {"opener", "wrong", "missing"}:
            raise ValueError(f"{path}: style {style!r}: needs exactly the keys opener, wrong, missing")
        styles[str(style)] = {}
        for key, texts in parts.items():
            texts = [texts] if isinstance(texts, str) else texts
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"{path}: style {style!r}: field {key!r}: a non-empty list of strings")
            if key == "opener" and not all("{}" in t for t in texts):
                raise ValueError(f"{path}: style {style!r}: field 'opener': every opener needs '{{}}'")
            styles[str(style)][key] = tuple(texts)
    return styles


def findings(prompt: str, completion: str, world: FactWorld) -> list[Finding]:
    """Every checked field of ``completion``: the world's facts asked by ``prompt``, or a chain's steps."""
    chain = parse_chain(prompt)
    if chain is not None:
        return [Finding(*f) for f in chain_findings(chain, completion)]
    found = []
    for fact in world.facts_asked(prompt):
        attribute = ATTRIBUTES[fact.attribute]
        wrong = [v for v in world.pools[fact.attribute] if v != fact.value]
        hit = mention_span(completion, [fact.value, *wrong])
        said, span = (None, None) if hit is None else hit
        claim = attribute.claim.format(s=fact.subject, v=attribute.render(fact.value))
        field_name = f"the {fact.attribute.replace('_', ' ')} of {fact.subject}"
        found.append(Finding(field_name, claim, fact.value, said, span))
    return found


def judge_response(
    prompt: Prompt,
    completion: str,
    *,
    world: FactWorld | None = None,
    settings: JudgeSettings | None = None,
    rng: random.Random | None = None,
) -> Judgment:
    """Judge one response to a lab question (a fact question of ``world`` or an arithmetic chain).

    ``world`` defaults to the demo world; ``settings`` to the demo's style without noise; ``rng``
    (phrasing and noise) to a fixed function of the texts. A prompt that is not a lab question
    gives ``error="unparseable"``, never a guess. ``score`` is 10 x the fraction of right fields.
    """
    settings = settings or JudgeSettings()
    world = world or _demo_world()
    text = _last_user_text(prompt)
    rng = rng or random.Random(f"{text}\n{completion}")
    try:
        found = findings(text, completion, world)
    except ValueError as error:
        return Judgment(text=None, satisfactory=None, raw=str(error), error="unparseable")
    spans = [f.span for f in found if not f.ok and f.span is not None]
    bad = [f for f in found if not f.ok]
    score = SCORE_SCALE * (len(found) - len(bad)) / max(1, len(found))
    if bad and rng.random() < settings.false_accept:
        bad = []
    elif not bad and found and rng.random() < settings.false_reject:
        bad = [_misnamed(rng.choice(found), found, world, rng, reject=True)]
    elif bad and rng.random() < settings.wrong_location:
        bad = [_misnamed(f, found + _unasked(text, world), world, rng) for f in bad]
    if not bad:
        return Judgment(text=None, satisfactory=True, score=score, raw="", error_spans=spans)
    if settings.style == "full" and parse_chain(text) is None:
        written = _full_style(world, text, completion, bad, found, rng)
    else:
        written = _render(settings.templates.get(settings.style) or BUILTIN_STYLES.get(settings.style)
                          or BUILTIN_STYLES["explicit"], bad, rng)
    return Judgment(text=written, satisfactory=False, score=score, raw=written, error_spans=spans)


def _full_style(world: FactWorld, question: str, completion: str, bad: list[Finding], found: list[Finding],
                rng: random.Random) -> str:
    """The demo's phrasing (:meth:`FactWorld.judge`) when the verdict is the true one, else its pattern."""
    if [f.field for f in bad] == [f.field for f in found if not f.ok]:
        text = world.judge(question, completion, rng)
        if text is not None:
            return text
    return _render(BUILTIN_STYLES["explicit"], bad, rng)


def _render(style: Mapping[str, Sequence[str]], bad: list[Finding], rng: random.Random) -> str:
    details = []
    for f in bad:
        kind = "wrong" if f.said is not None else "missing"
        template = rng.choice(list(style[kind]))
        details.append(template.format(field=f.field, wrong=f.said, right=f.right, claim=f.claim))
    text = rng.choice(list(style["opener"])).format("; ".join(dict.fromkeys(details)))
    return text[0].upper() + text[1:]


def _misnamed(finding: Finding, found: list[Finding], world: FactWorld, rng: random.Random,
              reject: bool = False) -> Finding:
    """A finding the noisy judge reports instead of the true one: another field, or a right one called wrong."""
    others = [f for f in found if f.field != finding.field]
    target = finding if reject or not others else rng.choice(others)
    said = target.said if target.said is not None else target.right
    claim_value = target.right
    if reject or target.ok:  # call a right value wrong: the "correct" value it gives is another one
        pool = next((p for p in world.pools.values() if said in p), (said,))
        claim_value = rng.choice([v for v in pool if v != said] or [said])
    return Finding(target.field, target.claim.replace(target.right, claim_value), claim_value, said, None)


def _unasked(question: str, world: FactWorld) -> list[Finding]:
    """The subject's facts the question did not ask (somewhere else a noisy judge may point)."""
    if parse_chain(question) is not None:
        return []
    kind, subject = world.parse(question)
    out = []
    for (s, a), value in world.values.items():
        if s == subject and a not in kind.attributes:
            attribute = ATTRIBUTES[a]
            claim = attribute.claim.format(s=s, v=attribute.render(value))
            out.append(Finding(f"the {a.replace('_', ' ')} of {s}", claim, value, None, None))
    return out


def _last_user_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


_DEMO_WORLD: list[FactWorld] = []


def _demo_world() -> FactWorld:
    """The demo's world (12 countries, 12 people, seed 0), built once."""
    if not _DEMO_WORLD:
        _DEMO_WORLD.append(make_world(12, 0))
    return _DEMO_WORLD[0]


class LabJudge:
    """The :class:`~cutalign.judges.base.Judge` protocol over :func:`judge_response` (``--judge demo``).

    Noise draws come from one seeded stream, so a run's judge errors are reproducible.
    """

    name = "lab"

    def __init__(self, world: FactWorld | None = None, settings: JudgeSettings | None = None, seed: int = 0) -> None:
        self.world = world or _demo_world()
        self.settings = settings or JudgeSettings()
        self._rng = random.Random(seed)

    def judge(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Judgment]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [
            judge_response(p, c, world=self.world, settings=self.settings,
                           rng=random.Random(self._rng.random()))
            for p, c in zip(prompts, completions, strict=True)
        ]


def judgment_record(prompt: str, completion: str, judgment: Judgment, example_id: str) -> dict[str, Any]:
    """A canonical judged example (the `cutalign train` data format) from a lab judgment."""
    return {
        "id": example_id, "prompt": prompt, "completion": completion, "judgment": judgment.text,
        "label": bool(judgment.satisfactory), "score": judgment.score, "refinement": None,
    }
