"""The steps every lab run shares: sample from a base, judge, train a method, evaluate with ground truth.

`cutalign demo`, `cutalign online`'s built-in world and every `cutalign lab` experiment are made of
these steps, so a figure of one is comparable with a figure of another:

- :func:`prepare`: the condition's base (pretrained, cached), its beliefs, the alignment subjects
  (the rest held out), and ``samples_per_fact`` T=1 samples per alignment fact, judged by the lab's
  programmatic judge (with the condition's judgment style and noise), gold error spans kept aside;
- :func:`train_method`: any method of `cutalign train` from the base through the library `train()`;
- :func:`evaluate`: greedy and T=1 accuracy on the targeted (misconceived) alignment facts, the
  other alignment facts, the held-out subjects' facts, and all facts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cutalign.data.templates import ALPACA_PLAIN
from cutalign.lab.base import DEMO_BASE, BaseSpec, Beliefs, beliefs, build_base, load_base
from cutalign.lab.judge import JudgeSettings, judge_response, judgment_record
from cutalign.lab.world import (
    SINGLE_FACT_KINDS,
    EvalQuestion,
    answer_questions,
    evaluation_set,
    score_responses,
)

GROUPS = ("targeted", "other", "heldout", "all")


def render_prompt(question: str) -> str:
    """The lab's prompt text: the plain Alpaca template the base was pretrained with."""
    return ALPACA_PLAIN.format(instruction=question)


@dataclass(frozen=True)
class Condition:
    """One lab condition: the base's error regime, the judge, and how much alignment data there is."""

    base: BaseSpec = DEMO_BASE
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    samples_per_fact: int = 4
    heldout_fraction: float = 0.0  # of each subject type: never sampled, only evaluated
    same_prompt: bool = False  # all samples of a fact answer one wording (so score pairs form, for DPO)

    def with_seed(self, seed: int) -> Condition:
        """The same condition on another base seed (another init, other misconceived facts)."""
        return replace(self, base=replace(self.base, seed=seed))


@dataclass
class Prepared:
    """A condition made concrete: its base, what it believes, its judged samples and its questions."""

    condition: Condition
    base_dir: Path
    belief: Beliefs
    records: list[dict[str, Any]]  # canonical judged examples (the `cutalign train` format)
    gold_spans: list[list[tuple[int, int]]]  # per record: character spans of its wrong values
    questions: list[EvalQuestion]  # one per fact of the world
    groups: dict[str, list[int]]  # group name -> indices into `questions`
    base_built: bool = False

    @property
    def negatives(self) -> int:
        return sum(not r["label"] for r in self.records)


def prepare(condition: Condition, seed: int, cache_dir: Path | None = None, progress: bool = False) -> Prepared:
    """Build (or reuse) the base and sample + judge its answers to the alignment facts."""
    base_dir, built = build_base(condition.base, cache_dir, progress=progress)
    belief = beliefs(condition.base)
    heldout = heldout_subjects(belief, condition.heldout_fraction, seed)
    model, tokenizer = load_base(base_dir)
    facts = [(s, a) for s, a, _ in belief.world.facts if s not in heldout]
    records, spans = sample_and_judge(model, tokenizer, belief, facts, condition, seed)
    questions = evaluation_set(belief.world)
    return Prepared(condition, base_dir, belief, records, spans, questions,
                    question_groups(belief, questions, heldout), built)


def heldout_subjects(belief: Beliefs, fraction: float, seed: int) -> set[str]:
    """``fraction`` of each subject type (countries, people), seeded: facts the alignment never samples."""
    rng = random.Random(f"heldout-{seed}")
    chosen: set[str] = set()
    for kind in sorted(set(belief.world.subjects.values())):
        names = sorted(belief.world.subjects_of(kind))
        chosen.update(rng.sample(names, round(fraction * len(names))))
    return chosen


def question_groups(belief: Beliefs, questions: Sequence[EvalQuestion], heldout: set[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {name: [] for name in GROUPS}
    for i, question in enumerate(questions):
        fact = belief.world.facts_asked(question.question)[0]
        if fact.subject in heldout:
            groups["heldout"].append(i)
        elif (fact.subject, fact.attribute) in belief.misconceptions:
            groups["targeted"].append(i)
        else:
            groups["other"].append(i)
        groups["all"].append(i)
    return groups


def sample_and_judge(model: Any, tokenizer: Any, belief: Beliefs, facts: Sequence[tuple[str, str]],
                     condition: Condition, seed: int) -> tuple[list[dict[str, Any]], list[list[tuple[int, int]]]]:
    """``samples_per_fact`` T=1 samples per fact, each to a randomly worded question, judged."""
    rng = random.Random(seed)
    kinds = {kind.attributes[0]: kind for kind in SINGLE_FACT_KINDS}
    prompts = []
    for subject, attribute in facts:
        wording = rng.choice(kinds[attribute].questions)
        for _ in range(condition.samples_per_fact):
            prompts.append((wording if condition.same_prompt else rng.choice(kinds[attribute].questions))
                           .format(s=subject))
    responses = answer_questions(model, tokenizer, [(p, "") for p in prompts], render_prompt,
                                 do_sample=True, seed=seed)
    records, spans = [], []
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        judgment = judge_response(prompt, response, world=belief.world, settings=condition.judge, rng=rng)
        if judgment.ok:  # an unparseable prompt cannot happen here: every prompt is the world's
            records.append(judgment_record(prompt, response, judgment, f"lab-{i:05d}"))
            spans.append(list(judgment.error_spans or []))
    return records, spans


def evaluate(model: Any, tokenizer: Any, prepared: Prepared, *, samples: int = 0, seed: int = 0) -> dict[str, float]:
    """Greedy accuracy per group (``targeted``, ``other``, ``heldout``, ``all``); with ``samples`` > 0 also
    T=1 accuracy (``sampled_<group>``, the mean over that many samples per question)."""
    questions = prepared.questions
    correct = score_responses(answer_questions(model, tokenizer, questions, render_prompt), questions)
    out = _group_means(correct, prepared.groups, "")
    if samples:
        repeated = [q for q in questions for _ in range(samples)]
        sampled = score_responses(answer_questions(model, tokenizer, repeated, render_prompt, do_sample=True,
                                                   seed=seed), repeated)
        per_question = [sum(sampled[i * samples:(i + 1) * samples]) / samples for i in range(len(questions))]
        out |= _group_means(per_question, prepared.groups, "sampled_")
    return out


def _group_means(values: Sequence[float], groups: dict[str, list[int]], prefix: str) -> dict[str, float]:
    return {f"{prefix}{name}": sum(values[i] for i in idx) / len(idx) for name, idx in groups.items() if idx}


@dataclass
class TrainSettings:
    """The budget every method gets in a comparison: same epochs, batch, length and schedule."""

    epochs: float = 8.0
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 128
    seed: int = 42


# Method-specific settings the lab needs to give every method a fair run on its data.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    # DPO-style methods compare pairs; their step is 2 sequences + a reference model.
    "dpo": {"beta": 0.1},
    "ilf_dpo": {"beta": 0.1},
}


def train_method(method: str, base_dir: Path, records: list[dict[str, Any]], output_dir: Path,
                 settings: TrainSettings, overrides: dict[str, Any] | None = None,
                 progress: bool = False) -> Any:
    """Train ``method`` from the base on ``records`` with the shared budget; returns the library's TrainResult.

    Every positive is kept (``positive_ratio=None``): the lab's samples are few, and the model learns
    the right values from its own right answers.
    """
    from cutalign.api import method_classes, train

    config_cls, _ = method_classes(method)
    config: dict[str, Any] = dict(
        output_dir=str(output_dir), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, max_length=settings.max_length, seed=settings.seed,
        warmup_steps=0.1, logging_steps=5, save_strategy="no", report_to=[], use_cpu=True,
        overwrite_output_dir=True, disable_tqdm=not progress)
    if "positive_ratio" in {f.name for f in _fields(config_cls)}:
        config["positive_ratio"] = None
    config |= METHOD_DEFAULTS.get(method, {}) | (overrides or {})
    model, tokenizer = load_base(base_dir)
    return train(method, records, model=model, tokenizer=tokenizer, config=config, progress=progress)


def _fields(cls: type) -> tuple[Any, ...]:
    import dataclasses

    return dataclasses.fields(cls)


def oracle_refinements(records: list[dict[str, Any]], belief: Beliefs,
                        positives_as_is: bool = True) -> list[dict[str, Any]]:
    """Each negative with ``refinement``: its response with every wrong value replaced by the right one --
    what a perfect refiner makes of a corrective judgment (ILF's y-hat, without a refinement model).
    With ``positives_as_is`` a positive's refinement is its own response (it needs none), so ILF-MLE
    trains on the positives too; without, positives have none (ILF-DPO pairs only refined negatives)."""
    from cutalign.lab.judge import findings

    out = []
    for record in records:
        refined = record["completion"] if positives_as_is and record["label"] else None
        if not record["label"]:
            text = record["completion"]
            for finding in sorted(findings(record["prompt"], text, belief.world),
                                  key=lambda f: -(f.span or (0, 0))[0]):
                if not finding.ok and finding.span is not None:
                    text = text[:finding.span[0]] + finding.right + text[finding.span[1]:]
            refined = text if text != record["completion"] else None
        out.append({**record, "refinement": refined})
    return out
